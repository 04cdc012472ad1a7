"""Where items run: this process, a local process pool, or a Dask distributed cluster.

Every engine yields the records **in item order** (results files are then identical whichever
engine ran them) while later items keep running. Scheduling is the engine's own
(``concurrent.futures`` or Dask's scheduler); nothing here decides which worker runs what.

Threads: each worker process sets torch's (and OpenCV's) intra-op threads to ``threads``
(default 1), so N workers on N cores do not oversubscribe them, as torch's default of one thread
per core per process would.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from ...errors import MissingDependencyError
from .items import Item
from .worker import Job, run_item

log = logging.getLogger(__name__)


def set_threads(threads: int) -> None:
    """Intra-op threads of torch (when installed: the ONNX backend runs without it) and OpenCV
    in this process."""
    import cv2

    torch = _torch_or_none()
    if torch is not None:
        torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _torch_or_none() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


@dataclass(frozen=True)
class EngineSpec:
    """``kind``: "local" (``workers`` processes; 1 = this process) or "dask" (``address`` of a
    running scheduler, or None for a local cluster of ``workers`` processes)."""

    kind: str = "local"
    workers: int = 1
    threads: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("local", "dask"):
            raise ValueError(f"engine must be 'local' or 'dask', got {self.kind!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or self.workers < 1:
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                or self.threads < 1:
            raise ValueError(f"threads must be a positive integer, got {self.threads!r}")
        if self.address is not None and self.kind != "dask":
            raise ValueError("a scheduler address applies to the dask engine only")


def run_items(items: list[Item], job: Job, engine: EngineSpec) -> Iterator[dict[str, Any]]:
    """Records of ``items`` in order, computed by ``engine``."""
    if not items:
        return iter(())
    if engine.kind == "dask":
        return _run_dask(items, job, engine)
    if engine.workers == 1:
        return _run_here(items, job, engine.threads)
    return _run_pool(items, job, engine)


@contextmanager
def _threads(threads: int) -> Iterator[None]:
    import cv2

    torch = _torch_or_none()
    before = torch.get_num_threads() if torch is not None else 0, cv2.getNumThreads()
    set_threads(threads)
    try:
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def _run_here(items: list[Item], job: Job, threads: int) -> Iterator[dict[str, Any]]:
    with _threads(threads):
        for item in items:
            yield run_item(item, job)


def _run_pool(items: list[Item], job: Job, engine: EngineSpec) -> Iterator[dict[str, Any]]:
    # "spawn": a forked child would inherit the parent's torch thread pools and locks.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=engine.workers, mp_context=ctx,
                             initializer=set_threads, initargs=(engine.threads,)) as pool:
        try:
            yield from pool.map(partial(run_item, job=job), items)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def require_distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise MissingDependencyError("the dask engine needs Dask distributed: "
                          "pip install ultrasam[distributed]") from e
    return distributed


def _threads_plugin(threads: int) -> Any:
    distributed = require_distributed()

    class SetThreads(distributed.WorkerPlugin):  # type: ignore[misc, name-defined]
        """Sets intra-op threads in every worker process, including workers that join later."""

        name = "ultrasam-threads"

        def setup(self, worker: Any) -> None:
            set_threads(threads)

    return SetThreads()


def _run_dask(items: list[Item], job: Job, engine: EngineSpec) -> Iterator[dict[str, Any]]:
    distributed = require_distributed()
    cluster = None
    if engine.address is None:
        cluster = distributed.LocalCluster(n_workers=engine.workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None)
    try:
        with distributed.Client(cluster if cluster is not None else engine.address) as client:
            client.register_plugin(_threads_plugin(engine.threads))
            futures = client.map(run_item, items, job=job, pure=False)
            try:
                for future in futures:
                    yield future.result()
                    future.release()
            finally:
                client.cancel(futures)
    finally:
        if cluster is not None:
            cluster.close()
