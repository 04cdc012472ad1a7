"""OnnxPredictor: the ``Predictor`` API over an exported folder, with ONNX Runtime alone.

Same ``set_image`` / ``predict`` arguments, shapes and return tuple as
:class:`ultrasam.inference.predictor.Predictor` with its default postprocessing, including
UltraSam's two-pass refinement, which runs here in numpy on top of the decoder graph (the
schedule of ``ultrasam.inference.refine``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import MissingDependencyError
from .geometry import Preprocess, box_from_logits
from .prompts import check_box, check_mask_input, check_points, decoder_tokens

log = logging.getLogger(__name__)

DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input",
                  "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError("the ONNX backend needs onnxruntime: pip install "
                                     "onnxruntime (or 'ultrasam[onnx]')") from e
    return onnxruntime


@dataclass(frozen=True)
class OnnxModelConfig:
    """The few model facts callers of a predictor read from ``predictor.model.config``."""

    variant: str
    img_size: int
    mask_size: int
    preprocessing: str


class OnnxModel:
    """An exported folder: ``encoder.onnx`` + ``decoder.onnx`` sessions and ``preprocess.json``.

    ``threads``: ONNX Runtime intra-op threads per session (None: its default, all cores);
    ``providers``: execution providers (default CPU).
    """

    def __init__(self, folder: str | Path, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        ort = _require_onnxruntime()
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"ONNX model folder not found: {self.folder} (make one "
                                    "with `ultrasam export onnx CKPT --out DIR`)")
        paths = {n: self.folder / n for n in ("encoder.onnx", "decoder.onnx",
                                                "preprocess.json")}
        missing = [n for n, p in paths.items() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{self.folder} lacks {missing}: not an `ultrasam export "
                                    "onnx` folder")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.preprocess = Preprocess.read(paths["preprocess.json"])
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = providers or ["CPUExecutionProvider"]
        try:
            self.encoder = ort.InferenceSession(str(paths["encoder.onnx"]), opts,
                                                providers=providers)
            self.decoder = ort.InferenceSession(str(paths["decoder.onnx"]), opts,
                                                providers=providers)
        except Exception as e:  # onnxruntime raises its own types for unreadable graphs
            raise ValueError(f"cannot load the ONNX graphs in {self.folder}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        self._check_graphs()

    def _check_graphs(self) -> None:
        enc_in = [i.name for i in self.encoder.get_inputs()]
        enc_out = [o.name for o in self.encoder.get_outputs()]
        dec_in = {i.name: i.shape for i in self.decoder.get_inputs()}
        dec_out = [o.name for o in self.decoder.get_outputs()]
        if enc_in != ["image"] or enc_out != ["image_embeddings"]:
            raise ValueError(f"encoder.onnx must map 'image' to 'image_embeddings', has "
                             f"{enc_in} -> {enc_out}")
        if sorted(dec_in) != sorted(DECODER_INPUTS) or dec_out != list(DECODER_OUTPUTS):
            raise ValueError(f"decoder.onnx does not follow SAM's decoder contract: inputs "
                             f"{sorted(dec_in)}, outputs {dec_out}")
        s = self.preprocess.input_size
        image_shape = self.encoder.get_inputs()[0].shape
        if list(image_shape[1:]) != [3, s, s]:
            raise ValueError(f"encoder.onnx takes {image_shape}, but preprocess.json says "
                             f"input_size {s}")
        emb, mask = dec_in["image_embeddings"], dec_in["mask_input"]
        if not all(isinstance(v, int) for v in (*emb[1:], *mask[2:])):
            raise ValueError("decoder.onnx must have a fixed embedding and mask_input size")
        self.embedding_shape: tuple[int, int, int] = (emb[1], emb[2], emb[3])
        self.mask_size: int = int(mask[2])
        meta = {k: json.loads(v) for k, v in
                self.decoder.get_modelmeta().custom_metadata_map.items()
                if k.startswith("ultrasam.")}
        if meta.get("ultrasam.single_mask") or meta.get("ultrasam.return_logits") is False:
            raise ValueError(f"{self.folder}: the decoder was exported with single_mask or "
                             "without logits; OnnxPredictor needs the default export")
        self.metadata = {k.removeprefix("ultrasam."): v for k, v in meta.items()}
        self.config = OnnxModelConfig(
            variant=str(self.metadata.get("variant", "unknown")), img_size=s,
            mask_size=self.mask_size,
            preprocessing="medsam" if self.preprocess.resize == "square" else "sam")

    @property
    def img_size(self) -> int:
        return self.preprocess.input_size

    @property
    def mask_threshold(self) -> float:
        return self.preprocess.mask_threshold

    def encode(self, image: np.ndarray) -> np.ndarray:
        """``image`` 1 x 3 x S x S float32 -> embedding 1 x C x h x w."""
        return self.encoder.run(None, {"image": image})[0]

    def decode(self, embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray,
               mask_input: np.ndarray | None, orig_size: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder call; returns (masks 4 x H x W, iou 4, low-res 4 x L x L)."""
        m = self.mask_size
        feed = {"image_embeddings": embedding, "point_coords": coords, "point_labels": labels,
                "mask_input": np.zeros((1, 1, m, m), np.float32) if mask_input is None
                else mask_input.reshape(1, 1, m, m).astype(np.float32),
                "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
                "orig_im_size": np.array(orig_size, np.float32)}
        masks, iou, low = self.decoder.run(None, feed)
        return masks[0], iou[0], low[0]


class OnnxPredictor:
    """Segment one image from prompts with an exported folder (see the module docstring).

    ``model``: the export folder (or an :class:`OnnxModel`); ``threads`` and ``providers`` are
    passed to ONNX Runtime. Masks are the decoder graph's upsampled logits thresholded at
    ``mask_threshold``: the Predictor's default postprocessing ("sam"; "medsam" for MedSAM
    checkpoints, whose graph resizes the logits once, as MedSAM does).
    """

    def __init__(self, model: str | Path | OnnxModel, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        self.model = model if isinstance(model, OnnxModel) else \
            OnnxModel(model, threads=threads, providers=providers)
        self.transform = self.model.preprocess
        self.reset_image()

    # ------------------------------------------------------------------------- images
    def set_image(self, image: np.ndarray | str | Path, image_format: str = "RGB",
                  frame: int | None = None, slice: int | None = None, axis: int = 0) -> None:
        """Compute and cache the embedding of an image (arguments as ``Predictor.set_image``)."""
        from ...io import load_image, to_rgb_uint8

        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if isinstance(image, (str, Path)):
            loaded = load_image(image, frame=frame, slice=slice, axis=axis)
            rgb = loaded.rgb
            spacing, warnings, meta = loaded.spacing_mm, list(loaded.warnings), dict(loaded.meta)
        else:
            if frame is not None or slice is not None:
                raise ValueError("frame/slice apply to file paths, not arrays")
            rgb = to_rgb_uint8(image)
            if image_format == "BGR":
                rgb = np.ascontiguousarray(rgb[..., ::-1])
            spacing, warnings, meta = None, [], {}
        embedding = self.model.encode(self.transform.image_input(rgb))
        self.reset_image()
        self._set(embedding, (int(rgb.shape[0]), int(rgb.shape[1])))
        self.image_rgb = rgb
        self.spacing_mm = spacing
        self.image_warnings = warnings
        self.image_meta = meta

    def set_image_embedding(self, embedding: np.ndarray, original_size: tuple[int, int]
                            ) -> None:
        """Reuse an embedding computed earlier for an image of ``original_size`` (h, w)."""
        emb = np.asarray(embedding, dtype=np.float32)
        expected = (1, *self.model.embedding_shape)
        if emb.shape != expected:
            raise ValueError(f"embedding must be {expected}, got {emb.shape}")
        h, w = (int(v) for v in original_size)
        if h < 1 or w < 1:
            raise ValueError(f"invalid original_size {original_size}")
        self.reset_image()
        self._set(emb, (h, w))

    def _set(self, embedding: np.ndarray, original_size: tuple[int, int]) -> None:
        self.features = embedding
        self.original_size = original_size
        self.input_size = self.transform.resized_shape(*original_size)
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        """The cached embedding, 1 x C x h x w."""
        self._require_image()
        assert self.features is not None
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.image_rgb: np.ndarray | None = None
        self.spacing_mm: tuple[float, float] | None = None
        self.image_warnings: list[str] = []
        self.image_meta: dict[str, Any] = {}
        self.features: np.ndarray | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("no image set: call set_image(...) before predicting")

    # ------------------------------------------------------------------------ prompts
    def predict(self, point_coords: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, refine: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment from prompts in original-image pixels (as ``Predictor.predict``).

        Returns masks C x H x W (bool, or float32 logits with ``return_logits``), iou (C,)
        and low-res logits C x L x L; C = 3 with ``multimask_output`` else 1; ``refine``
        returns the two-pass schedule's best mask (C = 1).
        """
        self._require_image()
        assert self.original_size is not None
        coords = labels = b = mask = None
        if point_coords is not None or point_labels is not None:
            c, labels = check_points(point_coords, point_labels, self.original_size)
            coords = self.transform.apply_coords(c, self.original_size)
        if box is not None:
            b = self.transform.apply_boxes(check_box(box, self.original_size),
                                           self.original_size)[0]
        if mask_input is not None:
            mask = check_mask_input(mask_input, self.model.mask_size).astype(np.float32)
        if coords is None and b is None and mask is None:
            raise ValueError("no prompt given: pass point_coords/point_labels, box or mask_input")
        if refine:
            masks, iou, low = self._refine(coords, labels, b, mask)
        else:
            masks, iou, low = self._decode(coords, labels, b, mask, self.original_size)
            sel = slice(1, None) if multimask_output else slice(0, 1)
            masks, iou, low = masks[sel], iou[sel], low[sel]
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low

    def _decode(self, coords: np.ndarray | None, labels: np.ndarray | None,
                box: np.ndarray | None, mask: np.ndarray | None, size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.features is not None
        xy, lab = decoder_tokens(coords, labels, box)
        return self.model.decode(self.features, xy, lab, mask, size)

    def _refine(self, coords: np.ndarray | None, labels: np.ndarray | None,
                box: np.ndarray | None, mask: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """UltraSam's two passes (``ultrasam.inference.refine``): pass 1 single-mask; pass 2 with
        its logits as the mask prompt and, for a prompt without a box whose pass-1 mask is not
        empty, the box of that mask instead of the points; the best multimask output."""
        assert self.original_size is not None and self.input_size is not None
        s = self.model.img_size
        # Pass 1 at the model frame's size: its "masks" are the logits upsampled to S x S,
        # exactly what the box is derived from.
        frame_logits, _, low1 = self._decode(coords, labels, box, mask, (s, s))
        derived = None if box is not None else box_from_logits(frame_logits[0], self.input_size)
        if derived is not None:
            # Minus 0.5: the prompt encoder adds the pixel-centre shift (see
            # ultrasam.inference.refine).
            masks, iou, low = self._decode(None, None, derived - 0.5, low1[0:1],
                                           self.original_size)
        else:
            masks, iou, low = self._decode(coords, labels, box, low1[0:1], self.original_size)
        best = 1 + int(np.argmax(iou[1:]))
        return masks[best:best + 1], iou[best:best + 1], low[best:best + 1]
