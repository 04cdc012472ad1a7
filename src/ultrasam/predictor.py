"""Predictor: embed an image once, then decode any number of prompts (SamPredictor-compatible).

Same argument names, shapes, dtypes and return tuple as Meta's ``SamPredictor``, plus:
grayscale and file inputs (PNG/JPEG/TIFF/BMP, DICOM frames, NIfTI slices), any number of
positive and negative points with a box, validation of every prompt against the image, and
UltraSam's two-pass refinement (``refine=True``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .modeling.fast_decoder import DecoderImageCache, fast_decode, prepare_image
from .modeling.base import PromptableModel
from .modeling.sam import Sam
from .refine import refine_two_pass
from .transforms import ResizeLongestSide

log = logging.getLogger(__name__)

PostProcessing = Literal["sam", "ultrasam"]


class Predictor:
    """Segment one image from prompts.

    ``postprocessing``: "sam" upsamples logits then thresholds at 0 (Meta's); "ultrasam"
    thresholds the low-res logits first and then upsamples the binary mask (the UltraSam
    release's order; masks come out slightly larger). Logits returned with
    ``return_logits=True`` are always the upsampled logits.
    """

    def __init__(self, model: PromptableModel, postprocessing: PostProcessing = "sam",
                 fast: bool = True) -> None:
        if not isinstance(model, PromptableModel):
            raise TypeError(f"Predictor needs an ultrasam model (load_model / build_model), "
                            f"got {type(model).__name__}")
        if postprocessing not in ("sam", "ultrasam"):
            raise ValueError(f"unknown postprocessing {postprocessing!r}")
        self.model = model
        self.postprocessing = postprocessing
        # The exact re-associated decoder with per-image caching (see modeling.fast_decoder);
        # False runs the plain decoder (same outputs up to float rounding).
        self.fast = fast
        self.transform = ResizeLongestSide(model.img_size, model.config.preprocessing)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------------- images
    def set_image(self, image: np.ndarray | str | Path, image_format: str = "RGB",
                  frame: int | None = None, slice: int | None = None, axis: int = 0) -> None:
        """Compute and cache the embedding of an image.

        image: H x W or H x W x 3 uint8 (other forms are converted by
        :func:`ultrasam.io.to_rgb_uint8`'s documented rules), or a path to a PNG/JPEG/TIFF/BMP
        file, a DICOM file (``frame`` picks a cine frame) or a NIfTI volume (``slice`` along
        ``axis``). ``image_format``: "RGB" or "BGR" channel order of an array.
        """
        from .io import load_image, to_rgb_uint8

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
        input_image = self.transform.apply_image(rgb)
        tensor = torch.as_tensor(input_image, device=self.device)
        self.set_torch_image(tensor.permute(2, 0, 1).contiguous()[None], rgb.shape[:2])
        # Set after set_torch_image, which resets the per-image state.
        self.image_rgb: np.ndarray | None = rgb
        self.spacing_mm: tuple[float, float] | None = spacing
        self.image_warnings: list[str] = warnings
        self.image_meta: dict[str, Any] = meta

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor,
                        original_image_size: tuple[int, ...]) -> None:
        """1 x 3 x h x w image already resized by ``self.transform`` (0-255 values)."""
        if (transformed_image.ndim != 4 or transformed_image.shape[:2] != (1, 3)
                or max(transformed_image.shape[2:]) != self.model.img_size):
            raise ValueError(f"set_torch_image expects 1 x 3 x h x w with longest side "
                             f"{self.model.img_size}, got {tuple(transformed_image.shape)}")
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (int(transformed_image.shape[-2]), int(transformed_image.shape[-1]))
        x = self.model.preprocess(transformed_image.float())
        x = x.to(self.model.dtype)  # a bf16/fp16 model
        self.features = self.model.encode(x)
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The cached embedding, 1 x C x h x w (1 x 256 x 64 x 64 for SAM)."""
        self._require_image()
        assert self.features is not None
        return self.features

    def set_image_embedding(self, embedding: torch.Tensor | np.ndarray,
                            original_size: tuple[int, int]) -> None:
        """Reuse an embedding computed earlier for an image of ``original_size`` (h, w)."""
        emb = torch.as_tensor(embedding, device=self.device, dtype=self.model.dtype)
        expected = (1, *self.model.embedding_shape)
        if tuple(emb.shape) != expected:
            raise ValueError(f"embedding must be {expected}, got {tuple(emb.shape)}")
        h, w = (int(v) for v in original_size)
        if h < 1 or w < 1:
            raise ValueError(f"invalid original_size {original_size}")
        self.reset_image()
        self.original_size = (h, w)
        self.input_size = self.transform.get_preprocess_shape(h, w)
        self.features = emb
        self.is_image_set = True

    def reset_image(self) -> None:
        self.is_image_set = False
        self.image_rgb = None
        self.spacing_mm = None
        self.image_warnings = []
        self.image_meta = {}
        self.features: torch.Tensor | None = None
        self._cache: DecoderImageCache | None = None
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
        """Segment from prompts in original-image pixels.

        point_coords: N x 2 xy; point_labels: N (1 foreground, 0 background); box: 4 XYXY;
        mask_input: 1 x L x L low-res logits from a previous call.
        Returns masks C x H x W (bool, or float logits with ``return_logits``), iou (C,) and
        low-res logits C x L x L, with C = 3 when ``multimask_output`` else 1. ``refine=True``
        runs UltraSam's two-pass schedule and returns its single best mask (C = 1).
        """
        self._require_image()
        assert self.original_size is not None
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None or point_labels is not None:
            coords, labels = _check_points(point_coords, point_labels, self.original_size)
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            b = _check_box(box, self.original_size)
            b = self.transform.apply_boxes(b, self.original_size)
            box_t = torch.as_tensor(b, dtype=torch.float, device=self.device)
        if mask_input is not None:
            mask_t = torch.as_tensor(_check_mask_input(mask_input, self.model.config.mask_size),
                                     dtype=torch.float, device=self.device)[None]
        if coords_t is None and box_t is None and mask_t is None:
            raise ValueError("no prompt given: pass point_coords/point_labels, box or mask_input")
        masks, iou, low_res = self.predict_torch(coords_t, labels_t, box_t, mask_t,
                                                 multimask_output, return_logits, refine)
        return _to_numpy(masks[0]), _to_numpy(iou[0]), _to_numpy(low_res[0])

    @torch.no_grad()
    def predict_torch(self, point_coords: torch.Tensor | None,
                      point_labels: torch.Tensor | None, boxes: torch.Tensor | None = None,
                      mask_input: torch.Tensor | None = None, multimask_output: bool = True,
                      return_logits: bool = False, refine: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode a batch of B prompts on the current image, coordinates in the model frame.

        point_coords: B x N x 2 (already ``transform.apply_coords``-ed); point_labels: B x N;
        boxes: B x 4; mask_input: B x 1 x L x L. Returns masks B x C x H x W, iou B x C and
        low-res logits B x C x L x L.
        """
        self._require_image()
        assert self.features is not None and self.original_size and self.input_size
        if point_coords is not None and (point_labels is None
                                         or point_coords.shape[:2] != point_labels.shape):
            raise ValueError("point_coords (B x N x 2) and point_labels (B x N) must agree")
        if refine:
            sizes = torch.tensor([self.input_size], device=self.device)
            out = refine_two_pass(self.model, self.features, point_coords, point_labels, boxes,
                                  input_sizes=sizes, mask_inputs=mask_input,
                                  decode=self._decode)
            low_res, iou = out.logits, out.iou
        else:
            low_res, iou = self._decode(point_coords, point_labels, boxes, mask_input,
                                        multimask_output)
        masks = self._postprocess(low_res, return_logits)
        return masks, iou, low_res

    def _decode(self, coords: torch.Tensor | None, labels: torch.Tensor | None,
                boxes: torch.Tensor | None, masks: torch.Tensor | None, multimask: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits and IoU for B prompts on the current image."""
        assert self.features is not None
        if not self.fast or not isinstance(self.model, Sam):
            # FusionNet (early fusion) has no separable decoder cache: its decode is the path.
            return self.model.decode(self.features, coords, labels, boxes, masks, multimask)
        if self._cache is None:
            self._cache = prepare_image(self.model.mask_decoder, self.model.prompt_encoder,
                                        self.features)
        points = (coords, labels) if coords is not None and labels is not None else None
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return fast_decode(self.model.mask_decoder, self._cache, sparse,
                           dense if masks is not None else None, multimask)

    def _postprocess(self, low_res: torch.Tensor, return_logits: bool) -> torch.Tensor:
        assert self.original_size and self.input_size
        if return_logits or self.postprocessing == "sam":
            up = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
            return up if return_logits else up > self.model.mask_threshold
        binary = (low_res > self.model.mask_threshold).float()
        up = self.model.postprocess_masks(binary, self.input_size, self.original_size)
        return up > 0


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # Under autocast the decoder returns bf16/fp16; numpy has no bf16: give float32.
    if t.is_floating_point():
        t = t.float()
    return t.detach().cpu().numpy()


# ------------------------------------------------------------------------- validation
def _as_float_array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numeric, got {type(value).__name__}") from e
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values: {arr.tolist()}")
    return arr


def _check_points(coords: Any, labels: Any, size: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    if coords is None or labels is None:
        raise ValueError("point_coords and point_labels must be given together")
    c = _as_float_array(coords, "point_coords")
    lab = np.asarray(labels)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"point_coords must be N x 2 (x, y), got shape {c.shape}")
    if lab.ndim != 1 or lab.shape[0] != c.shape[0]:
        raise ValueError(f"point_labels must have shape ({c.shape[0]},), got {lab.shape}")
    if c.shape[0] == 0:
        raise ValueError("point_coords is empty")
    bad = sorted(set(np.unique(lab).tolist()) - {0, 1})
    if bad:
        raise ValueError(f"point_labels must be 1 (foreground) or 0 (background), got {bad}")
    h, w = size
    outside = [tuple(p) for p in c.tolist() if not (0 <= p[0] <= w and 0 <= p[1] <= h)]
    if outside:
        raise ValueError(f"points outside the {w}x{h} image (x in [0, {w}], y in [0, {h}]): "
                         f"{outside}")
    return c, lab.astype(np.int64)


def _check_box(box: Any, size: tuple[int, int]) -> np.ndarray:
    b = _as_float_array(box, "box").reshape(-1)
    if b.shape != (4,):
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got {b.size}")
    x0, y0, x1, y1 = b.tolist()
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box must have x1 > x0 and y1 > y0 (XYXY), got {b.tolist()}")
    h, w = size
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ValueError(f"box {b.tolist()} extends outside the {w}x{h} image")
    return b


def _check_mask_input(mask: Any, size: int) -> np.ndarray:
    m = _as_float_array(mask, "mask_input")
    if m.shape != (1, size, size):
        raise ValueError(f"mask_input must be 1 x {size} x {size} low-res logits, got {m.shape}")
    return m
