"""A thread-safe LRU bounded by the bytes of its values, not their number."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class CacheStats:
    entries: int
    bytes: int
    cap_bytes: int
    hits: int
    misses: int
    evictions: int


class ByteLRU(Generic[K, V]):
    """Keeps the most recently used values while their total ``size(value)`` fits ``cap``.

    A value larger than the cap alone is still kept (the newest entry always stays), so a
    caller never loses what it just stored; everything older is evicted first. Values may grow
    after insertion (an embedding added to a frame): call :meth:`resize` to re-count one.
    """

    def __init__(self, cap_bytes: int, size: Callable[[V], int]) -> None:
        if cap_bytes < 1:
            raise ValueError(f"cap_bytes must be >= 1, got {cap_bytes}")
        self._cap = int(cap_bytes)
        self._size = size
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item[0]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            n = int(self._size(value))
            self._items[key] = (value, n)
            self._bytes += n
            self._evict()

    def resize(self, key: K) -> None:
        """Re-count the size of ``key``'s value (no-op when it was evicted meanwhile)."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return
            n = int(self._size(item[0]))
            self._bytes += n - item[1]
            self._items[key] = (item[0], n)
            self._evict()

    def discard(self, predicate: Callable[[K], bool]) -> int:
        """Drop every entry whose key satisfies ``predicate``; returns how many."""
        with self._lock:
            doomed = [k for k in self._items if predicate(k)]
            for k in doomed:
                self._bytes -= self._items.pop(k)[1]
            return len(doomed)

    def _evict(self) -> None:
        while self._bytes > self._cap and len(self._items) > 1:
            _, (_, n) = self._items.popitem(last=False)
            self._bytes -= n
            self._evictions += 1

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._items), self._bytes, self._cap, self._hits,
                              self._misses, self._evictions)
