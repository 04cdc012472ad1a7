"""Hand freed heap memory back to the operating system (glibc's ``malloc_trim``).

A server decoding batches of varying size from several threads frees and reallocates
activation buffers all the time; glibc keeps freed pages in its per-thread arenas, so the
process's resident memory creeps up with fragmentation although nothing is live. Trimming now
and then returns those pages. Elsewhere than glibc (musl, macOS, Windows) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import time
from typing import Any


@functools.cache
def _glibc() -> Any:
    """The C library if it has ``malloc_trim`` (glibc), else None; looked up once."""
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def release_free_heap() -> bool:
    """``malloc_trim(0)``: True when glibc released something (False: nothing, or no glibc)."""
    lib = _glibc()
    return bool(lib.malloc_trim(0)) if lib is not None else False


class Trimmer:
    """Calls :func:`release_free_heap` at most once per ``interval`` seconds (thread-safe):
    model threads call :meth:`maybe` after each task; the one that finds the interval passed
    trims (a few ms), the others return at once."""

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self._next = time.monotonic() + interval
        self._lock = threading.Lock()

    def maybe(self) -> None:
        now = time.monotonic()
        if now < self._next or not self._lock.acquire(blocking=False):
            return
        try:
            self._next = now + self.interval
            release_free_heap()
        finally:
            self._lock.release()
