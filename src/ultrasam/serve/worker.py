"""The one thread that runs the model, so the event loop never waits on PyTorch.

Every model call (embedding a frame, decoding prompts) is queued to a single-thread executor:
calls are serialised (safe whether or not the predictor itself is thread-safe, and the CPU's
cores go to one call at a time instead of being split between competing ones) and answered in
arrival order. The per-frame check "is it embedded yet?" runs inside that thread, so two
requests on a new frame embed it once.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .store import Frame


@dataclass(frozen=True)
class PromptSpec:
    """Prompts in image pixels of one frame: points N x 2 (x, y), labels N (1/0), box XYXY."""

    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    refine: bool


@dataclass(frozen=True)
class Segmentation:
    """mask: H x W bool; ``embedded`` tells whether this call computed the embedding;
    ``seconds``: time inside the model thread (embedding included)."""

    mask: np.ndarray
    score: float
    embedded: bool
    seconds: float


class ModelWorker:
    """Owns the model; ``await worker.segment(frame, prompt)`` from the event loop."""

    def __init__(self, model: Any, predictor_factory: Any | None = None) -> None:
        from ultrasam.inference.predictor import Predictor

        self.model = model
        self._factory = predictor_factory or Predictor
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ultrasam-model")

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(model, *args)`` on the model thread (long jobs such as tracking)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self.model, *args)

    async def segment(self, frame: Frame, prompt: PromptSpec) -> Segmentation:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._segment, frame, prompt)

    def _segment(self, frame: Frame, prompt: PromptSpec) -> Segmentation:
        start = time.perf_counter()
        embedded = False
        if frame.predictor is None:
            predictor = self._factory(self.model)
            predictor.set_image(frame.rgb)
            # The predictor keeps its own copy of the pixels: share it instead of holding two.
            rgb = getattr(predictor, "image_rgb", None)
            if rgb is not None:
                frame.rgb = rgb
            frame.predictor = predictor
            embedded = True
        n_points = 0 if prompt.points is None else len(prompt.points)
        # One click is ambiguous (part or whole?): ask for SAM's three candidates and keep the
        # best scored; with more prompts the single-mask output is the better one (SAM's advice).
        multimask = n_points == 1 and prompt.box is None and not prompt.refine
        masks, scores, _ = frame.predictor.predict(
            point_coords=prompt.points, point_labels=prompt.labels, box=prompt.box,
            multimask_output=multimask, refine=prompt.refine)
        best = int(np.argmax(scores))
        return Segmentation(np.asarray(masks[best], dtype=bool), float(scores[best]), embedded,
                            time.perf_counter() - start)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
