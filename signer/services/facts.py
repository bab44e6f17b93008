"""Decision facts (tokens, resources, grants, groups, policies), cached per process and checked by epoch.

Reading the database for every token, key and grant on every signature would cost more than the HSM
signature itself. Instead each process keeps what it read, tagged with the store's *facts epoch*: a number
that every transaction changing such a fact (revoking a token, disabling a key, changing a grant) bumps.
The cache is only a fast path for *allowing*: the commit unit that records a signature compares the epoch
under the write lock, and when it has moved it re-reads the facts inside that transaction and decides
again before anything is released. A cached denial is never trusted: a miss or a "no" is re-read.

The epoch is read *before* the facts it covers, so a fact cached under epoch E is at least as new as E.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class _Bounded(Generic[V]):
    """A small LRU map: a flood of distinct ids cannot grow memory without bound."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: OrderedDict[Any, V] = OrderedDict()

    def get(self, key: Any) -> V | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Any, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


@dataclass
class FactsCache:
    """Per-process cache of decision facts, all valid as of ``epoch``."""

    limit: int = 10_000
    epoch: int = -1

    def __post_init__(self) -> None:
        self.tokens: _Bounded[Any] = _Bounded(self.limit)
        # (resource type, id) -> the resource's record (see ``resources``): keys today
        self.resources: _Bounded[Any] = _Bounded(self.limit)
        # principal id -> its authorisation facts (groups, grants, policy set)
        self.grants: _Bounded[Any] = _Bounded(self.limit)
        # the attached policy documents, shared by every principal
        self.policies: Any = None

    def observe(self, epoch: int) -> bool:
        """Note an epoch seen in the database; returns whether facts read at it may be cached."""
        if epoch > self.epoch:
            self.tokens.clear()
            self.resources.clear()
            self.grants.clear()
            self.policies = None
            self.epoch = epoch
        return epoch == self.epoch
