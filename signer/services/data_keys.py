"""A small per-process cache of unwrapped secret data keys, bounded in size and time, wiped on change.

Unwrapping a version's data key in the token is about a third of a fetch's CPU (``bench/README.md``).
This cache keeps an unwrapped key for at most ``ttl`` seconds and ``entries`` versions, tagged with the
facts epoch it was cached under: it is wiped whole as soon as this process sees the epoch move (every
grant, group, policy, token, rotation or deletion change moves it), and a secret's keys are forgotten
at once when this process rotates or deletes it. A key taken from here opens only the version it was
unwrapped for (keyed by secret, version, KEK and the wrapped bytes), and using it decides nothing: every
fetch is still judged and audited before its value leaves, and the commit refuses one whose grant went.

Keys are held in ``bytearray`` objects that are overwritten with zeros when dropped; the token's own
return value is an immutable copy that Python frees on its own schedule (best effort, like any key
material in a garbage-collected process). Nothing here is ever logged or shown.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_ENTRIES = 1024
DEFAULT_TTL_SECONDS = 60.0


@dataclass(slots=True)
class _Entry:
    wrapped: bytes
    key: bytearray
    epoch: int
    until: float


def _wipe(entry: _Entry) -> None:
    entry.key[:] = bytes(len(entry.key))


class DataKeys:
    """(secret id, version, KEK id) -> the data key unwrapped from ``wrapped``, while fresh."""

    __slots__ = ("_clock", "_entries", "_keys", "_ttl")

    def __init__(
        self,
        entries: int = DEFAULT_ENTRIES,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if entries < 0 or ttl < 0:
            raise ValueError("entries and ttl are not negative (0 turns the cache off)")
        self._entries = entries
        self._ttl = ttl
        self._clock = clock
        self._keys: OrderedDict[tuple[str, int, str], _Entry] = OrderedDict()

    def get(self, secret_id: str, version: int, kek_id: str, wrapped: bytes, epoch: int) -> bytes | None:
        name = (secret_id, version, kek_id)
        entry = self._keys.get(name)
        if entry is None:
            return None
        if entry.epoch != epoch:
            # The facts moved since it was cached: forget every key, not only this one.
            self.clear()
            return None
        if entry.until <= self._clock() or entry.wrapped != wrapped:
            _wipe(self._keys.pop(name))
            return None
        self._keys.move_to_end(name)
        return bytes(entry.key)

    def put(self, secret_id: str, version: int, kek_id: str, wrapped: bytes, key: bytes, epoch: int) -> None:
        if not self._entries or not self._ttl:
            return
        name = (secret_id, version, kek_id)
        old = self._keys.pop(name, None)
        if old is not None:
            _wipe(old)
        self._keys[name] = _Entry(wrapped, bytearray(key), epoch, self._clock() + self._ttl)
        while len(self._keys) > self._entries:
            _wipe(self._keys.popitem(last=False)[1])

    def forget(self, secret_id: str) -> None:
        """Drop every key of a secret (this process rotated or deleted it)."""
        for name in [n for n in self._keys if n[0] == secret_id]:
            _wipe(self._keys.pop(name))

    def clear(self) -> None:
        for entry in self._keys.values():
            _wipe(entry)
        self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)
