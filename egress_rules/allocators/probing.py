"""Circular probing for a free slot, shared by both allocators.

The seed's algorithm: start at a (pseudo-)random slot, walk forward circularly
until a free one is found. A plain walk costs O(n) per request once the space
fills up; this keeps a union-find "next free slot" map so that a walk skips
taken runs in near-constant time, which matters for 2^16 node marks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def stable_start(size: int, *parts: str) -> int:
    """A start slot in ``0..size-1`` derived from ``parts``: the same inputs always give the same slot."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % size


class CircularProber:
    """Free slots ``0..size-1``; ``take_from(start)`` returns the first free slot at or after ``start``."""

    def __init__(self, size: int, taken: Iterable[int] = ()) -> None:
        self._size = size
        self._free = size
        # slot -> a slot at or after it (circularly) to try next; only taken slots appear.
        self._next: dict[int, int] = {}
        for slot in taken:
            self.take(slot)

    @property
    def free(self) -> int:
        return self._free

    def is_taken(self, slot: int) -> bool:
        return slot in self._next

    def take(self, slot: int) -> None:
        if slot not in self._next:
            self._next[slot] = (slot + 1) % self._size
            self._free -= 1

    def take_from(self, start: int) -> int | None:
        """Take and return the first free slot at or after ``start`` (circularly); ``None`` if full."""
        if self._free == 0:
            return None
        path = []
        slot = start % self._size
        while slot in self._next:
            path.append(slot)
            slot = self._next[slot]
        for visited in path:  # path compression
            self._next[visited] = slot
        self.take(slot)
        return slot
