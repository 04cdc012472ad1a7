"""What is evaluated: a model behind a Predictor (:class:`ModelRunner`) or a baseline.

Both answer the same prompts with :class:`Decoded` masks and scores, so the protocol code
treats them alike (:class:`Method`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ultrasam.evaluate.tasks import BASELINE_PROTOCOLS, PROTOCOLS


@dataclass
class Decoded:
    """One decoded batch: ``masks`` B x H x W bool, ``scores`` (B,), ``low_res`` B x 1 x L x L."""

    masks: np.ndarray
    scores: np.ndarray
    low_res: Any = None  # torch tensor (model) or None (baselines)


class ModelRunner:
    """Decodes all instances of an image in one ``Predictor.predict_torch`` call."""

    def __init__(self, model: Any) -> None:
        from ultrasam.inference.predictor import Predictor

        self.predictor = Predictor(model)
        self.size: tuple[int, int] = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)
        self.size = (int(image.shape[0]), int(image.shape[1]))

    def decode(self, *, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
               labels: np.ndarray | None = None, mask_input: Any = None,
               multimask: bool = False, refine: bool = False) -> Decoded:
        """Boxes B x 4 XYXY and/or points B x N x 2 xy (+ labels B x N), original frame."""
        import torch

        pred = self.predictor
        device = getattr(pred, "device", None) or torch.device("cpu")
        kw: dict[str, Any] = {"point_coords": None, "point_labels": None, "boxes": None,
                              "mask_input": mask_input}
        if points is not None:
            coords = pred.transform.apply_coords(np.asarray(points, np.float64), self.size)
            kw["point_coords"] = torch.as_tensor(coords, dtype=torch.float32, device=device)
            kw["point_labels"] = torch.as_tensor(labels, dtype=torch.int64, device=device)
        if boxes is not None:
            tb = pred.transform.apply_boxes(np.asarray(boxes, np.float64), self.size)
            kw["boxes"] = torch.as_tensor(tb, dtype=torch.float32, device=device)
        with torch.inference_mode():
            masks, iou, low_res = pred.predict_torch(multimask_output=multimask, refine=refine,
                                                     **kw)
        # Several outputs: keep the one with the highest predicted IoU (the paper's rule).
        best = iou.argmax(dim=1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return Decoded(masks[rows, best].bool().cpu().numpy(),
                       iou[rows, best].float().cpu().numpy(),
                       low_res[rows, best][:, None])


@dataclass
class Method:
    """A model checkpoint (``runner`` set) or a baseline (``baseline`` set) under evaluation."""

    name: str
    runner: ModelRunner | None = None
    baseline: str | None = None

    @property
    def protocols(self) -> tuple[str, ...]:
        return PROTOCOLS if self.runner is not None else BASELINE_PROTOCOLS

