"""Stable split assignment: a row goes to a split by a hash of its key, the same in every process, run and machine.

Python's `hash()` of a string is salted per process (PYTHONHASHSEED), so a split drawn from it changes between
runs and between the Ray workers that evaluate it, and rows can land in train in one worker and in val in
another. sha1 from the standard library is stable everywhere and needs no dependency; at about a microsecond per
review it costs nothing next to tokenizing (xxhash is faster but would be one more package to declare).
"""

from __future__ import annotations

import hashlib

Shares = tuple[tuple[str, float], ...]


def unit_hash(key: str) -> float:
    """The first 8 hex digits of sha1(key) as a number in [0, 1]."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_of(key: str, shares: Shares) -> str:
    """The split whose cumulative share first exceeds `unit_hash(key)` (the last one for the top edge)."""
    position, edge = unit_hash(key), 0.0
    for split, share in shares:
        edge += share
        if position < edge:
            return split
    return shares[-1][0]
