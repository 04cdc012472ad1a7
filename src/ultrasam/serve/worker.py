"""The model threads: every model call runs here, so the event loop never waits on PyTorch.

Requests are queued, and each model thread repeatedly takes one task:

* **decode**: the queued prompts whose frame is already embedded, of any user and image,
  decoded together by :meth:`Predictor.predict_prepared` (one decoder call per prompt layout
  the model cannot mix; FusionNet mixes all but the multimask flag). Batching adds no waiting:
  a batch is what queued while the previous call ran. A thread takes its share of them
  (``ceil(ready / idle threads)``, at most ``max_batch``) and wakes another for the rest, so
  one thread never decodes the whole queue while another core idles.
* **embed**: one frame that a queued prompt needs; its prompts join the next decode.
* **run**: a long job such as tracking (``run``).

Prompts come first, but never starve the rest: after a decode the thread takes an embedding or
a run job if one waits (alternating between the two), so a prompt waits at most one decode plus
one embedding or run. With several model threads, embeddings and runs may occupy all but one,
which stays free for prompts. A frame is embedded once: a frame being embedded is marked under
the lock, and its prompts wait for it.

Precision: ``auto`` (the default) runs the model threads under bf16 autocast on a CPU with
native bf16 (:mod:`ultrasam.inference.precision`: 1.6-2.0x faster per prompt, masks agreeing
with fp32 to a mean Dice of 0.999), fp32 elsewhere; ``fp32`` / ``bf16`` force it.

Threads: ``threads`` model threads, each using ``torch_threads`` intra-op threads (default: the
process's torch threads divided among them). On a 2-core machine, 2 x 1 keeps both cores on
independent work with no intra-op synchronisation and keeps a thread free for prompts while the
other embeds; 1 x 2 gives each batch both cores (``ultrasam serve --model-threads``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ultrasam.inference.precision import precision_context, prepare_model, resolve_precision

from .heap import Trimmer
from .settings import DEFAULT_MAX_BATCH
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
    """mask: H x W bool; ``embedded``: this request's frame was embedded for it; ``seconds``:
    model time spent on it (its decoder call, plus the embedding if ``embedded``); ``batch``:
    prompts decoded by that call."""

    mask: np.ndarray
    score: float
    embedded: bool
    seconds: float
    batch: int


@dataclass(eq=False)
class _PromptJob:
    frame: Frame
    prompt: PromptSpec
    future: Future[Segmentation]
    embedded: bool = False
    embed_seconds: float = 0.0


@dataclass(eq=False)
class _RunJob:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any]


@dataclass
class _Schedule:
    """Which kind of task a thread prefers next (see the module docstring)."""

    last_was_decode: bool = False
    others: list[str] = field(default_factory=lambda: ["embed", "run"])

    def order(self) -> list[str]:
        return [*self.others, "decode"] if self.last_was_decode else ["decode", *self.others]

    def took(self, kind: str) -> None:
        self.last_was_decode = kind == "decode"
        if kind != "decode":
            self.others.remove(kind)
            self.others.append(kind)


class ModelWorker:
    """Owns the model: ``await worker.segment(frame, prompt)`` and ``await worker.run(fn, ...)``
    from the event loop."""

    def __init__(self, model: Any, threads: int = 1, torch_threads: int | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, precision: str = "auto") -> None:
        import torch

        from ultrasam.inference.predictor import Predictor

        if threads < 1 or max_batch < 1 or (torch_threads is not None and torch_threads < 1):
            raise ValueError(f"threads, torch_threads and max_batch must be >= 1, got "
                             f"{threads}, {torch_threads}, {max_batch}")
        # Only prepare_prompt / predict_prepared are used on it: they read the state they are
        # given, never the predictor's current image, so the model threads may share it.
        self._predictor = Predictor(model)
        self.precision = resolve_precision(precision, self._predictor.device)
        self.model = prepare_model(model, self.precision)  # in place: the predictor's model
        self.threads = threads
        self.torch_threads = torch_threads or max(1, torch.get_num_threads() // threads)
        self.max_batch = max_batch
        self._new_predictor = Predictor
        self._cond = threading.Condition()
        self._prompts: deque[_PromptJob] = deque()
        self._runs: deque[_RunJob] = deque()
        self._embedding: set[int] = set()  # id() of frames being embedded
        self._busy = 0  # threads executing a task
        self._slow_busy = 0  # threads embedding or running
        self._schedule = _Schedule()
        self._trimmer = Trimmer()
        self._closed = False
        self._workers = [threading.Thread(target=self._loop, name=f"ultrasam-model-{i}",
                                          daemon=True) for i in range(threads)]
        for t in self._workers:
            t.start()

    # ---------------------------------------------------------------- event-loop side
    async def segment(self, frame: Frame, prompt: PromptSpec) -> Segmentation:
        future: Future[Segmentation] = Future()
        self._submit("prompt", _PromptJob(frame, prompt, future))
        return await asyncio.wrap_future(future)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(model, *args)`` on a model thread (long jobs such as tracking)."""
        future: Future[Any] = Future()
        self._submit("run", _RunJob(fn, args, future))
        return await asyncio.wrap_future(future)

    def _submit(self, kind: Literal["prompt", "run"], job: Any) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the model worker is shut down")
            # The queue is looked up under the lock: a reference taken before it could be a
            # deque the model threads have since replaced, and the job would be lost.
            (self._prompts if kind == "prompt" else self._runs).append(job)
            self._cond.notify()

    def close(self) -> None:
        """Stop the threads after their current task; queued requests fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._workers:
            t.join(timeout=60)
        with self._cond:
            pending = [*self._prompts, *self._runs]
            self._prompts.clear()
            self._runs.clear()
        for job in pending:
            _settle(job.future, error=RuntimeError("the server is shutting down"))

    # ---------------------------------------------------------------- model threads
    def _loop(self) -> None:
        import torch

        torch.set_num_threads(self.torch_threads)
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return  # queued requests are failed by close()
                    task = self._next_task()
                    if task is not None:
                        break
                    self._cond.wait()
                self._busy += 1
                if self._prompts or self._runs:
                    self._cond.notify()  # an idle thread may take what is left
            kind, payload = task
            try:
                if kind == "decode":
                    self._decode(payload)
                elif kind == "embed":
                    self._embed(payload)
                else:
                    self._run(payload)
            finally:
                with self._cond:
                    self._busy -= 1
                    if kind != "decode":
                        self._slow_busy -= 1
                    self._cond.notify_all()
            self._trimmer.maybe()  # freed activations back to the OS: memory stays flat

    def _next_task(self) -> tuple[str, Any] | None:
        """Under the lock: the next task this thread takes, or None when nothing can run."""
        slow_ok = self.threads == 1 or self._slow_busy < self.threads - 1
        for kind in self._schedule.order():
            task = None
            if kind == "decode":
                task = self._take_ready()
            elif slow_ok and kind == "embed":
                task = self._take_unembedded()
            elif slow_ok and kind == "run":
                while self._runs and task is None:
                    job = self._runs.popleft()
                    if job.future.set_running_or_notify_cancel():
                        task = job
            if task is not None:
                self._schedule.took(kind)
                if kind != "decode":
                    self._slow_busy += 1
                return kind, task
        return None

    def _take_ready(self) -> list[_PromptJob] | None:
        """This thread's share of the queued prompts on embedded frames, oldest first."""
        live = deque(j for j in self._prompts if not j.future.cancelled())  # client gone
        n_ready = sum(j.frame.state is not None for j in live)
        take = share(n_ready, self.threads - self._busy, self.max_batch)
        ready: list[_PromptJob] = []
        rest: list[_PromptJob] = []
        for job in live:
            if job.frame.state is not None and len(ready) < take:
                ready.append(job)
            else:
                rest.append(job)
        self._keep_prompts(rest)
        return ready or None

    def _keep_prompts(self, jobs: list[_PromptJob]) -> None:
        """Under the lock: the prompt queue becomes ``jobs``, in place, never rebound (see
        ``_submit``)."""
        self._prompts.clear()
        self._prompts.extend(jobs)

    def _take_unembedded(self) -> _PromptJob | None:
        for job in self._prompts:
            frame = job.frame
            if frame.state is None and id(frame) not in self._embedding:
                self._embedding.add(id(frame))
                job.embedded = True
                return job
        return None

    def _embed(self, job: _PromptJob) -> None:
        frame = job.frame
        start = time.perf_counter()
        error: BaseException | None = None
        state = None
        try:
            # A predictor of its own: set_image swaps the predictor's current image, which
            # another model thread must not see change under it.
            predictor = self._new_predictor(self.model)
            with precision_context(self.precision):
                predictor.set_image(frame.rgb)
            state = predictor.image_state
        except Exception as exc:  # noqa: BLE001 - answered to the requests of that frame
            error = exc
        with self._cond:
            self._embedding.discard(id(frame))
            failed: list[_PromptJob] = []
            if state is not None:
                frame.state = state
                if state.image_rgb is not None:
                    # The state holds its own copy of the pixels: share it, not two copies.
                    frame.rgb = state.image_rgb
                job.embed_seconds = time.perf_counter() - start
            else:
                failed = [j for j in self._prompts if j.frame is frame]
                self._keep_prompts([j for j in self._prompts if j.frame is not frame])
        for j in failed:
            _settle(j.future, error=error)

    def _decode(self, jobs: list[_PromptJob]) -> None:
        start = time.perf_counter()
        prepared, kept = [], []
        for job in jobs:
            p = job.prompt
            n_points = 0 if p.points is None else len(p.points)
            # One click is ambiguous (part or whole?): ask for SAM's three candidates and keep
            # the best scored; with more prompts the single-mask output is the better one.
            multimask = n_points == 1 and p.box is None and not p.refine
            try:
                prepared.append(self._predictor.prepare_prompt(
                    p.points, p.labels, p.box, multimask_output=multimask, refine=p.refine,
                    state=job.frame.state))
                kept.append(job)
            except Exception as exc:  # noqa: BLE001 - a bad prompt fails its request only
                _settle(job.future, error=exc)
        try:
            with precision_context(self.precision):
                # Power-of-two calls: a few batch shapes, so per-shape buffers stop piling up.
                results = self._predictor.predict_prepared(prepared, max_batch=self.max_batch,
                                                           pow2_batches=True)
        except Exception as exc:  # noqa: BLE001 - answered to every request of the batch
            for job in kept:
                _settle(job.future, error=exc)
            return
        seconds = time.perf_counter() - start
        for job, (masks, scores, _) in zip(kept, results):
            best = int(np.argmax(scores))
            _settle(job.future, Segmentation(np.asarray(masks[best], dtype=bool),
                                             float(scores[best]), job.embedded,
                                             seconds + job.embed_seconds, len(kept)))

    def _run(self, job: _RunJob) -> None:
        try:
            with precision_context(self.precision):
                result = job.fn(self.model, *job.args)
            _settle(job.future, result)
        except Exception as exc:  # noqa: BLE001 - answered to the caller
            _settle(job.future, error=exc)


def share(n_ready: int, idle_threads: int, max_batch: int) -> int:
    """How many of ``n_ready`` prompts one of ``idle_threads`` idle model threads takes."""
    return min(max_batch, math.ceil(n_ready / max(1, idle_threads)))


def _settle(future: Future[Any], result: Any = None, error: BaseException | None = None
            ) -> None:
    """Answer a request unless its client already gave up (cancelled future)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
