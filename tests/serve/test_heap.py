"""Heap trimming: glibc's malloc_trim is found and called; the trimmer rate-limits itself."""

from __future__ import annotations

import platform
import time

import pytest

from ultrasam.serve import heap


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_returns_freed_pages_on_glibc() -> None:
    # ~125 MB of 32 KB blocks (malloc'd, below the mmap threshold); every 16th stays alive, so
    # the freed ones are holes inside the heap that free() alone keeps resident.
    blocks = [bytearray(b"\1" * 32768) for _ in range(4000)]
    keep = blocks[::16]
    del blocks
    before = _rss_mb()
    assert heap.release_free_heap()
    assert before - _rss_mb() > 60  # most of the ~117 MB of holes went back to the OS
    assert len(keep) == 250


def test_trimmer_calls_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(heap, "release_free_heap", lambda: calls.append(time.monotonic()))
    t = heap.Trimmer(interval=0.2)
    for _ in range(50):
        t.maybe()
    assert calls == []  # the first interval has not passed yet
    time.sleep(0.25)
    for _ in range(50):
        t.maybe()
    assert len(calls) == 1
