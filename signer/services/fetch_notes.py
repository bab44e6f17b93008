"""When a process last wrote a secret's "last fetched", so a stream of fetches does not write it every time.

"Last fetched at, by" is shown to the second: a fetch by the principal this process last recorded for a
secret, less than ``interval`` seconds after that record, writes nothing (its audit event still records
it exactly). Any other principal's fetch, or a later one, writes. Per process and bounded in entries;
two processes may each write once per interval. It holds ids and times only.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_ENTRIES = 4096


class FetchNotes:
    __slots__ = ("_clock", "_entries", "_interval", "_noted")

    def __init__(
        self,
        interval: float = 1.0,
        entries: int = DEFAULT_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._entries = entries
        self._clock = clock
        self._noted: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def due(self, secret_id: str, principal_id: str) -> bool:
        """Whether this fetch should write "last fetched"."""
        seen = self._noted.get(secret_id)
        return seen is None or seen[0] != principal_id or self._clock() - seen[1] >= self._interval

    def noted(self, secret_id: str, principal_id: str) -> None:
        """A write of "last fetched" committed (call after the commit)."""
        self._noted[secret_id] = (principal_id, self._clock())
        self._noted.move_to_end(secret_id)
        while len(self._noted) > self._entries:
            self._noted.popitem(last=False)
