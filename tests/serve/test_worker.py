"""The model worker: prompts of several users and images decoded in batches, answers equal to
one-by-one decodes, each frame embedded once, prompts first without starving embeddings or long
jobs, a bad prompt failing only its own request."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
import torch

from ultrasam.config import get_config
from ultrasam.inference.predictor import Predictor
from ultrasam.modeling import build_model
from ultrasam.serve.store import Frame
from ultrasam.serve.worker import ModelWorker, PromptSpec, Segmentation, _Schedule, share

SMALL_FUSION: dict[str, Any] = {"img_size": 64, "conv_dims": (8, 16, 16, 16),
                                "conv_depths": (1, 1, 1, 1), "prompt_embed_dim": 16,
                                "iou_head_hidden_dim": 16}


@pytest.fixture(scope="module")
def model() -> Any:
    torch.manual_seed(0)
    return build_model(get_config("fusion", **SMALL_FUSION)).eval()


def _run(coro: Any) -> Any:
    """``asyncio.run`` on a fresh thread: a browser test earlier in the session (Playwright's
    sync API) leaves an event loop running on the main thread, where ``asyncio.run`` refuses."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            out["error"] = exc

    # A daemon thread, joined with a bound: a lost request must fail the test, not hang the
    # suite (an executor's thread would be joined at exit).
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=120)
    if thread.is_alive():
        raise TimeoutError("the worker did not answer every request within 120 s")
    if "error" in out:
        raise out["error"]
    return out["result"]


def _frame(seed: int, h: int = 80, w: int = 100) -> Frame:
    rgb = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Frame(rgb=rgb, spacing_mm=None, calibration=None, warnings=())


def _prompt(k: int) -> PromptSpec:
    """The layouts the page sends: a click, click + negative, a box, click + box, refine."""
    x, y = 30.0 + 4 * (k % 5), 25.0 + 3 * (k % 7)
    box = np.array([x - 15, y - 12, x + 20, y + 18])
    one = np.array([[x, y]])
    kind = k % 5
    if kind == 0:
        return PromptSpec(one, np.array([1]), None, False)
    if kind == 1:
        return PromptSpec(np.array([[x, y], [3.0, 3.0]]), np.array([1, 0]), None, False)
    if kind == 2:
        return PromptSpec(None, None, box, False)
    if kind == 3:
        return PromptSpec(one, np.array([1]), box, False)
    return PromptSpec(one, np.array([1]), None, True)


def _alone(model: Any, frame: Frame, p: PromptSpec) -> tuple[np.ndarray, float]:
    predictor = Predictor(model)
    predictor.set_image(frame.rgb)
    multimask = p.points is not None and len(p.points) == 1 and p.box is None and not p.refine
    masks, scores, _ = predictor.predict(p.points, p.labels, p.box, multimask_output=multimask,
                                         refine=p.refine)
    best = int(np.argmax(scores))
    return masks[best], float(scores[best])


async def _gather(worker: ModelWorker, jobs: list[tuple[Frame, PromptSpec]]) -> list[Any]:
    return await asyncio.gather(*(worker.segment(f, p) for f, p in jobs),
                                return_exceptions=True)


def _block(worker: ModelWorker) -> tuple[threading.Event, Any]:
    """Occupy the (single) model thread until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold(model: Any) -> str:
        started.set()
        release.wait(30)
        return "released"

    return release, (hold, started)


@pytest.mark.parametrize("threads", [1, 2])
def test_batched_answers_equal_one_by_one(model: Any, threads: int) -> None:
    frames = [_frame(s) for s in range(3)]
    jobs = [(frames[k % 3], _prompt(k)) for k in range(30)]
    worker = ModelWorker(model, threads=threads, torch_threads=1, max_batch=8,
                         precision="fp32")
    queues = (worker._prompts, worker._runs)
    try:
        results = _run(_gather(worker, jobs))
    finally:
        worker.close()
    # The queues are mutated in place, never replaced: a request thread that had looked one up
    # before a model thread replaced it would append its job to a dead queue (a lost request,
    # seen once as a hung test).
    assert worker._prompts is queues[0] and worker._runs is queues[1]
    assert all(isinstance(r, Segmentation) for r in results), results
    assert max(r.batch for r in results) > 1 and max(r.batch for r in results) <= 8
    assert sum(r.embedded for r in results) == 3  # each frame embedded once
    assert all(f.state is not None for f in frames)
    for r, (frame, p) in zip(results, jobs):
        mask, score = _alone(model, frame, p)
        assert r.score == pytest.approx(score, rel=1e-4, abs=1e-4)
        assert r.mask.shape == mask.shape and (r.mask != mask).mean() < 1e-3


def test_prompts_first_and_one_batch_per_wait(model: Any) -> None:
    """While the thread is busy, prompts queue; then the embedded frame's prompts go in one
    decoder call, before the new frame is embedded, whose prompts follow in the next."""
    ready, new = _frame(10), _frame(11)
    worker = ModelWorker(model, threads=1, torch_threads=1, max_batch=16)
    try:
        first = _run(_gather(worker, [(ready, _prompt(1))]))[0]
        assert first.embedded and first.batch == 1
        release, (hold, started) = _block(worker)

        async def scenario() -> tuple[Any, list[Any]]:
            held = asyncio.ensure_future(worker.run(hold))
            await asyncio.to_thread(started.wait, 30)
            jobs = [(new if k % 3 == 0 else ready, _prompt(k)) for k in range(12)]
            answers = asyncio.ensure_future(_gather(worker, jobs))
            await asyncio.sleep(0.2)  # every request queued behind the held thread
            release.set()
            return await held, await answers

        held, answers = _run(scenario())
    finally:
        worker.close()
    assert held == "released"
    on_ready = [a for k, a in enumerate(answers) if k % 3 != 0]
    on_new = [a for k, a in enumerate(answers) if k % 3 == 0]
    assert [a.batch for a in on_ready] == [8] * 8  # one task, before the embedding
    assert not any(a.embedded for a in on_ready)
    assert [a.batch for a in on_new] == [4] * 4 and [a.embedded for a in on_new] == [
        True, False, False, False]


def test_a_bad_prompt_fails_alone_and_long_jobs_are_not_starved(model: Any) -> None:
    frame = _frame(20)
    worker = ModelWorker(model, threads=1, torch_threads=1)

    async def scenario() -> list[Any]:
        bad = PromptSpec(np.array([[500.0, 5.0]]), np.array([1]), None, False)
        tasks = [worker.segment(frame, _prompt(k)) for k in range(6)]
        tasks.insert(3, worker.segment(frame, bad))
        tasks.append(worker.run(lambda m: type(m).__name__))
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        out = _run(scenario())
    finally:
        worker.close()
    assert isinstance(out[3], ValueError) and "outside" in str(out[3])
    assert all(isinstance(r, Segmentation) for k, r in enumerate(out[:-1]) if k != 3)
    assert out[-1] == "FusionNet"


def test_schedule_alternates_prompts_with_the_rest() -> None:
    s = _Schedule()
    assert s.order()[0] == "decode"
    s.took("decode")
    assert s.order() == ["embed", "run", "decode"]
    s.took("embed")
    assert s.order() == ["decode", "run", "embed"]
    s.took("decode")
    assert s.order()[0] == "run"  # the kind served longer ago goes first


def test_idle_threads_share_the_queue() -> None:
    """Two idle threads split 16 ready prompts 8 + 8 instead of one taking all while the other
    core idles; a lone idle thread takes all (up to max_batch)."""
    assert share(16, 2, 16) == 8 and share(8, 1, 16) == 8
    assert share(5, 2, 16) == 3 and share(1, 2, 16) == 1
    assert share(40, 1, 16) == 16 and share(0, 2, 16) == 0


def test_closed_worker_refuses_and_fails_queued(model: Any) -> None:
    worker = ModelWorker(model, threads=1, torch_threads=1)
    worker.close()
    with pytest.raises(RuntimeError, match="shut down"):
        _run(worker.segment(_frame(30), _prompt(0)))
    with pytest.raises(ValueError, match=">= 1"):
        ModelWorker(model, threads=0)
