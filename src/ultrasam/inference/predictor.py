"""Predictor: embed an image once, then decode any number of prompts (SamPredictor-compatible).

Same argument names, shapes, dtypes and return tuple as Meta's ``SamPredictor``, plus:
grayscale and file inputs (PNG/JPEG/TIFF/BMP, DICOM frames, NIfTI slices), any number of
positive and negative points with a box, validation of every prompt against the image, and
UltraSam's two-pass refinement (``refine=True``).

Thread safety: everything one image needs (features, sizes, decoder cache, pixels, calibration)
is one immutable :class:`ImageState`, built completely by ``set_image`` and then swapped in
with a single assignment. Each ``predict`` reads the current state once and uses only it, so
threads may share a predictor: every answer belongs wholly to one image (the one current when
that call started). The model itself is only read (eval mode, ``no_grad``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserInputError
from ..modeling.base import PromptableModel
from ..modeling.fast_decoder import DecoderImageCache, fast_decode, prepare_image
from ..modeling.sam import Sam
from .prompt_batch import PromptTensors, batch_key, batch_sizes, stack_prompts
from .prompt_checks import PromptError, check_box, check_mask_input, check_points
from .refine import refine_two_pass
from .transforms import ResizeLongestSide

log = logging.getLogger(__name__)

PostProcessing = Literal["sam", "ultrasam", "medsam"]
MEDSAM_THRESHOLD = 0.5  # on probabilities, as MedSAM_Inference.py does


class _LazyDecoderCache:
    """The fast decoder's per-image cache, built at most once, on first use, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: DecoderImageCache | None = None

    def get(self, build: Callable[[], DecoderImageCache]) -> DecoderImageCache:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = build()
                value = self._value
        return value


@dataclass(frozen=True)
class ImageState:
    """One image's prediction state; never modified once built (a new image: a new state).

    features: 1 x C x h x w (``model.encode``); original_size / input_size: (h, w) of the image
    and of its resized model input; image_rgb: H x W x 3 uint8 (read-only) when set from
    pixels; spacing_mm: (row, col) mm per pixel when a file recorded it; warnings / meta: what
    the reader reported.
    """

    features: torch.Tensor | None = None
    original_size: tuple[int, int] | None = None
    input_size: tuple[int, int] | None = None
    image_rgb: np.ndarray | None = None
    spacing_mm: tuple[float, float] | None = None
    warnings: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    decoder_cache: _LazyDecoderCache = field(default_factory=_LazyDecoderCache, repr=False,
                                             compare=False)

    @property
    def is_set(self) -> bool:
        return self.features is not None


_EMPTY = ImageState()


@dataclass(frozen=True)
class PreparedPrompt:
    """A validated prompt and the image state it belongs to (:meth:`Predictor.prepare_prompt`):
    what :meth:`Predictor.predict_prepared` decodes, several at once."""

    state: ImageState
    prompt: PromptTensors


class Predictor:
    """Segment one image from prompts (threads may share one: see the module docstring).

    ``postprocessing``: "sam" upsamples logits then thresholds at 0 (Meta's); "ultrasam"
    thresholds the low-res logits first and then upsamples the binary mask (the UltraSam
    release's order; masks come out slightly larger); "medsam" follows MedSAM's inference
    (sigmoid, one bilinear resize to the original size, threshold 0.5). The default (None) is
    "medsam" for models with MedSAM preprocessing, else "sam". Logits returned with
    ``return_logits=True`` are the upsampled logits (for "medsam": resized once, directly).
    """

    def __init__(self, model: PromptableModel, postprocessing: PostProcessing | None = None,
                 fast: bool = True) -> None:
        if not isinstance(model, PromptableModel):
            raise TypeError(f"Predictor needs an ultrasam model (load_model / build_model), "
                            f"got {type(model).__name__}")
        if postprocessing is None:
            postprocessing = "medsam" if model.config.preprocessing == "medsam" else "sam"
        if postprocessing not in ("sam", "ultrasam", "medsam"):
            raise UserInputError(f"unknown postprocessing {postprocessing!r}")
        self.model = model
        self.postprocessing = postprocessing
        # The exact re-associated decoder with per-image caching (see modeling.fast_decoder);
        # False runs the plain decoder (same outputs up to float rounding).
        self.fast = fast
        self.transform = ResizeLongestSide(model.img_size, model.config.preprocessing)
        self._state = _EMPTY

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------ current state (read-only)
    @property
    def image_state(self) -> ImageState:
        """The current image's state: read it once to use several fields consistently."""
        return self._state

    @property
    def is_image_set(self) -> bool:
        return self._state.is_set

    @property
    def features(self) -> torch.Tensor | None:
        return self._state.features

    @property
    def original_size(self) -> tuple[int, int] | None:
        return self._state.original_size

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._state.input_size

    @property
    def image_rgb(self) -> np.ndarray | None:
        return self._state.image_rgb

    @property
    def spacing_mm(self) -> tuple[float, float] | None:
        return self._state.spacing_mm

    @property
    def image_warnings(self) -> list[str]:
        return list(self._state.warnings)

    @property
    def image_meta(self) -> dict[str, Any]:
        return dict(self._state.meta)

    # ------------------------------------------------------------------------- images
    def set_image(self, image: np.ndarray | str | Path, image_format: str = "RGB",
                  frame: int | None = None, slice: int | None = None, axis: int = 0) -> None:
        """Compute and cache the embedding of an image.

        image: H x W or H x W x 3 uint8 (other forms are converted by
        :func:`ultrasam.io.to_rgb_uint8`'s documented rules), or a path to a PNG/JPEG/TIFF/BMP
        file, a DICOM file (``frame`` picks a cine frame) or a NIfTI volume (``slice`` along
        ``axis``). ``image_format``: "RGB" or "BGR" channel order of an array.
        """
        from ..io import load_image, to_rgb_uint8

        if image_format not in ("RGB", "BGR"):
            raise UserInputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if isinstance(image, (str, Path)):
            loaded = load_image(image, frame=frame, slice=slice, axis=axis)
            rgb = loaded.rgb
            spacing, warnings, meta = loaded.spacing_mm, tuple(loaded.warnings), \
                dict(loaded.meta)
        else:
            if frame is not None or slice is not None:
                raise UserInputError("frame/slice apply to file paths, not arrays")
            rgb = to_rgb_uint8(image)
            if image_format == "BGR":
                rgb = np.ascontiguousarray(rgb[..., ::-1])
            spacing, warnings, meta = None, (), {}
        input_image = self.transform.apply_image(rgb)
        tensor = torch.as_tensor(input_image, device=self.device)
        features, original, input_size = self._encode(
            tensor.permute(2, 0, 1).contiguous()[None], rgb.shape[:2])
        view = rgb.view()
        view.flags.writeable = False  # shared by every reader of this state
        self._state = ImageState(features, original, input_size, view, spacing, warnings,
                                 MappingProxyType(meta))

    def set_torch_image(self, transformed_image: torch.Tensor,
                        original_image_size: tuple[int, ...]) -> None:
        """1 x 3 x h x w image already resized by ``self.transform`` (0-255 values)."""
        features, original, input_size = self._encode(transformed_image, original_image_size)
        self._state = ImageState(features, original, input_size)

    @torch.no_grad()
    def _encode(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
                ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """Features 1 x C x h x w, original and input sizes of a transformed image."""
        size = self.model.img_size
        if (transformed_image.ndim != 4 or transformed_image.shape[:2] != (1, 3)
                or max(transformed_image.shape[2:]) != size):
            raise UserInputError(f"set_torch_image expects 1 x 3 x h x w with longest side "
                                 f"{size}, got {tuple(transformed_image.shape)}")
        if self.model.config.preprocessing == "medsam" and \
                tuple(transformed_image.shape[2:]) != (size, size):
            # MedSAM resizes every image to the full square; a letterboxed input would be
            # padded and decoded with the wrong geometry.
            raise UserInputError(f"MedSAM checkpoints take the whole {size} x {size} square "
                                 f"(plain resize), got {tuple(transformed_image.shape[2:])}; "
                                 "use predictor.transform.apply_image")
        h, w = (int(v) for v in original_image_size[:2])
        if h < 1 or w < 1:
            raise UserInputError(f"invalid original size {tuple(original_image_size)}")
        input_size = (int(transformed_image.shape[-2]), int(transformed_image.shape[-1]))
        x = self.model.preprocess(transformed_image.float())
        x = x.to(self.model.dtype)  # a bf16/fp16 model
        return self.model.encode(x), (h, w), input_size

    def get_image_embedding(self) -> torch.Tensor:
        """The cached embedding, 1 x C x h x w (1 x 256 x 64 x 64 for SAM)."""
        features = self._require_image().features
        assert features is not None
        return features

    def set_image_embedding(self, embedding: torch.Tensor | np.ndarray,
                            original_size: tuple[int, int]) -> None:
        """Reuse an embedding computed earlier for an image of ``original_size`` (h, w).

        The embedding is cast to the model's dtype (a bf16 model takes a float32 embedding)."""
        emb = torch.as_tensor(embedding, device=self.device).to(self.model.dtype)
        expected = (1, *self.model.embedding_shape)
        if tuple(emb.shape) != expected:
            raise UserInputError(f"embedding must be {expected}, got {tuple(emb.shape)}")
        h, w = (int(v) for v in original_size)
        if h < 1 or w < 1:
            raise UserInputError(f"invalid original_size {original_size}")
        self._state = ImageState(emb, (h, w), self.transform.get_preprocess_shape(h, w))

    def reset_image(self) -> None:
        self._state = _EMPTY

    def _require_image(self) -> ImageState:
        state = self._state
        if not state.is_set:
            raise RuntimeError("no image set: call set_image(...) before predicting")
        return state

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
        p = self.prepare_prompt(point_coords, point_labels, box, mask_input, multimask_output,
                                refine)
        q = p.prompt
        masks, iou, low_res = self._predict_torch(p.state, q.point_coords, q.point_labels,
                                                  q.box, q.mask_input, multimask_output,
                                                  return_logits, refine)
        return _to_numpy(masks[0]), _to_numpy(iou[0]), _to_numpy(low_res[0])

    def prepare_prompt(self, point_coords: np.ndarray | None = None,
                       point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                       mask_input: np.ndarray | None = None, multimask_output: bool = True,
                       refine: bool = False, state: ImageState | None = None
                       ) -> PreparedPrompt:
        """Validate one prompt (arguments as :meth:`predict`) against ``state`` (default: the
        current image) and move it to the model's input frame; raises :class:`PromptError`."""
        state = self._require_image() if state is None else state
        if not state.is_set:
            raise RuntimeError("the image state has no embedding: set_image(...) first")
        size = state.original_size
        assert size is not None
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None or point_labels is not None:
            coords, labels = check_points(point_coords, point_labels, size)
            coords = self.transform.apply_coords(coords, size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            b = self.transform.apply_boxes(check_box(box, size), size)
            box_t = torch.as_tensor(b, dtype=torch.float, device=self.device)
        if mask_input is not None:
            mask_t = torch.as_tensor(check_mask_input(mask_input, self.model.config.mask_size),
                                     dtype=torch.float, device=self.device)[None]
        if coords_t is None and box_t is None and mask_t is None:
            raise PromptError("no prompt given: pass point_coords/point_labels, box or "
                              "mask_input")
        return PreparedPrompt(state, PromptTensors(coords_t, labels_t, box_t, mask_t,
                                                   bool(multimask_output), bool(refine)))

    def predict_prepared(self, prompts: Sequence[PreparedPrompt], return_logits: bool = False,
                         max_batch: int = 32, pow2_batches: bool = False
                         ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Decode prepared prompts, of one image or several, in as few decoder calls as their
        layouts allow (at most ``max_batch`` prompts per call, bounding memory).

        ``pow2_batches``: split each group into calls of power-of-two sizes (11 -> 8 + 2 + 1),
        so a long-running server meets a handful of batch shapes instead of every size up to
        ``max_batch``: the allocator's and oneDNN's per-shape buffers then stop accumulating.

        Returns, in order, what :meth:`predict` returns for each prompt alone (masks, iou,
        low-res logits), equal up to float rounding: prompts are grouped by
        :func:`~ultrasam.inference.prompt_batch.batch_key`. A SAM model on the fast decoder
        (whose cache is per image) batches the prompts of each image; other models batch
        across images, each prompt decoded against its own image's features.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        per_image = self.fast and isinstance(self.model, Sam)
        groups: dict[Any, list[int]] = {}
        for i, p in enumerate(prompts):
            if not isinstance(p, PreparedPrompt):
                raise TypeError(f"predict_prepared takes PreparedPrompt items "
                                f"(Predictor.prepare_prompt), got {type(p).__name__}")
            key = batch_key(p.prompt, self.model.exact_prompt_padding)
            groups.setdefault((key, id(p.state)) if per_image else key, []).append(i)
        results: list[Any] = [None] * len(prompts)
        for rows in groups.values():
            start = 0
            for size in batch_sizes(len(rows), max_batch, pow2_batches):
                chunk = rows[start:start + size]
                start += size
                outs = self._predict_group([prompts[i] for i in chunk], return_logits)
                for i, out in zip(chunk, outs):
                    results[i] = out
        return results

    @torch.no_grad()
    def _predict_group(self, items: Sequence[PreparedPrompt], return_logits: bool
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Prompts of one :func:`batch_key` decoded in one call; one result per prompt."""
        q = stack_prompts([p.prompt for p in items])
        states: list[ImageState] = []
        index: list[int] = []
        for p in items:
            j = next((k for k, s in enumerate(states) if s is p.state), None)
            if j is None:
                states.append(p.state)
                j = len(states) - 1
            index.append(j)
        if len(states) == 1:
            masks, iou, low_res = self._predict_torch(
                states[0], q.point_coords, q.point_labels, q.box, q.mask_input,
                q.multimask_output, return_logits, q.refine)
            return [(_to_numpy(masks[i]), _to_numpy(iou[i]), _to_numpy(low_res[i]))
                    for i in range(len(items))]
        # Several images: each prompt decodes against its own image's features.
        features = torch.cat([s.features for s in states])  # type: ignore[misc]
        image_index = torch.as_tensor(index, dtype=torch.long, device=self.device)
        if q.refine:
            sizes = torch.tensor([states[j].input_size for j in index], device=self.device)
            out = refine_two_pass(self.model, features, q.point_coords,  # type: ignore[arg-type]
                                  q.point_labels, q.box, image_index=image_index,
                                  input_sizes=sizes, mask_inputs=q.mask_input)
            low_res, iou = out.logits, out.iou
        else:
            low_res, iou = self.model.decode(features, q.point_coords, q.point_labels, q.box,
                                             q.mask_input, q.multimask_output,
                                             image_index=image_index)
        results = []
        for i, j in enumerate(index):
            masks = self._postprocess(states[j], low_res[i:i + 1], return_logits)
            results.append((_to_numpy(masks[0]), _to_numpy(iou[i]), _to_numpy(low_res[i])))
        return results

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
        return self._predict_torch(self._require_image(), point_coords, point_labels, boxes,
                                   mask_input, multimask_output, return_logits, refine)

    @torch.no_grad()
    def _predict_torch(self, state: ImageState, point_coords: torch.Tensor | None,
                       point_labels: torch.Tensor | None, boxes: torch.Tensor | None,
                       mask_input: torch.Tensor | None, multimask_output: bool,
                       return_logits: bool, refine: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`predict_torch` on one image state (only ``state`` is read)."""
        assert state.features is not None and state.original_size and state.input_size
        if point_coords is not None and (point_labels is None
                                         or point_coords.shape[:2] != point_labels.shape):
            raise PromptError("point_coords (B x N x 2) and point_labels (B x N) must agree")

        def decode(coords: torch.Tensor | None, labels: torch.Tensor | None,
                   boxes: torch.Tensor | None, masks: torch.Tensor | None, multimask: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            return self._decode(state, coords, labels, boxes, masks, multimask)

        if refine:
            sizes = torch.tensor([state.input_size], device=self.device)
            out = refine_two_pass(self.model, state.features, point_coords,  # type: ignore[arg-type]
                                  point_labels, boxes, input_sizes=sizes,
                                  mask_inputs=mask_input, decode=decode)
            low_res, iou = out.logits, out.iou
        else:
            low_res, iou = decode(point_coords, point_labels, boxes, mask_input,
                                  multimask_output)
        masks = self._postprocess(state, low_res, return_logits)
        return masks, iou, low_res

    def _decode(self, state: ImageState, coords: torch.Tensor | None,
                labels: torch.Tensor | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None, multimask: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits and IoU for B prompts on the image of ``state``."""
        features = state.features
        assert features is not None
        model = self.model
        if not self.fast or not isinstance(model, Sam):
            # FusionNet (early fusion) has no separable decoder cache: its decode is the path.
            return model.decode(features, coords, labels, boxes, masks, multimask)
        cache = state.decoder_cache.get(
            lambda: prepare_image(model.mask_decoder, model.prompt_encoder, features))
        points = (coords, labels) if coords is not None and labels is not None else None
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return fast_decode(model.mask_decoder, cache, sparse,
                           dense if masks is not None else None, multimask)

    def _postprocess(self, state: ImageState, low_res: torch.Tensor, return_logits: bool
                     ) -> torch.Tensor:
        input_size, original_size = state.input_size, state.original_size
        assert input_size and original_size
        if self.postprocessing == "medsam":
            # MedSAM_Inference.py: sigmoid, one bilinear resize to the original size, > 0.5.
            if return_logits:
                return F.interpolate(low_res.float(), original_size, mode="bilinear",
                                     align_corners=False)
            prob = F.interpolate(torch.sigmoid(low_res.float()), original_size,
                                 mode="bilinear", align_corners=False)
            return prob > MEDSAM_THRESHOLD
        if return_logits or self.postprocessing == "sam":
            up = self.model.postprocess_masks(low_res, input_size, original_size)
            return up if return_logits else up > self.model.mask_threshold
        binary = (low_res > self.model.mask_threshold).float()
        up = self.model.postprocess_masks(binary, input_size, original_size)
        return up > 0


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # Under autocast the decoder returns bf16/fp16; numpy has no bf16: give float32.
    if t.is_floating_point():
        t = t.float()
    return t.detach().cpu().numpy()
