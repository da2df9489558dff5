"""A bounded, thread-safe build-once cache for the explorers.

Requests run in a thread pool. A value that is slow to build (a concept mapping takes
a fraction of a second, a user's plain list a few milliseconds) is built outside the
cache's lock, under a lock of its own key: concurrent requests for the same key wait
for one build instead of repeating it, and requests for other keys (cached reads above
all) never wait behind it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class BuildCache(Generic[V]):
    """Least-recently-used cache of at most ``max_entries`` values, each built once.

    Args:
        max_entries: how many values are kept; the least recently used is dropped
            beyond it (and rebuilt if asked for again).
        pinned: keys that are never dropped and do not count toward ``max_entries``
            (the explorer's default settings, which every latent page reads).
    """

    def __init__(self, max_entries: int, pinned: tuple[Hashable, ...] = ()) -> None:
        if max_entries < 1:
            raise ValueError(f"a cache holds at least one entry, got {max_entries}")
        self.max_entries = max_entries
        self._pinned = set(pinned)
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()  # guards _values and _building; held only briefly

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The value of ``key``, from the cache or from ``build()`` (run once per key
        at a time, outside the cache's lock; an exception leaves nothing cached)."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            key_lock = self._building.setdefault(key, threading.Lock())
        try:
            with key_lock:
                with self._lock:  # built by the thread we waited for?
                    if key in self._values:
                        self._values.move_to_end(key)
                        return self._values[key]
                value = build()
                with self._lock:
                    self._values[key] = value
                    self._evict()
                return value
        finally:
            with self._lock:
                if self._building.get(key) is key_lock and not key_lock.locked():
                    del self._building[key]

    def _evict(self) -> None:
        unpinned = [key for key in self._values if key not in self._pinned]
        for key in unpinned[: max(0, len(unpinned) - self.max_entries)]:
            del self._values[key]  # oldest first: OrderedDict keeps use order
