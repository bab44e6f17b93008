"""Request deadlines with one timer per event loop instead of one per request.

``asyncio.timeout`` arms a timer for every request and cancels it when the request ends, nearly always
long before the deadline: on uvloop that is a libuv timer handle made and closed per request, ~6 us of
CPU out of a fetch's ~500 (bench/fetch_ablation.py's machine). Here a request's deadline is an entry in
a table; one timer per loop, armed only while a request is in flight, wakes every ``TICK`` seconds and
cancels the task of each request whose deadline has passed, as ``asyncio.timeout``'s expiry does, and
the request's ``async with`` turns that cancellation into ``TimeoutError`` the same way (a cancellation
from anyone else stays a cancellation). A deadline is met at most ``TICK`` late.
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType

# How often in-flight deadlines are looked at: the most a deadline can be late.
TICK = 0.05


class _Sweeper:
    """The in-flight deadlines of one event loop and the one timer that expires them."""

    __slots__ = ("__weakref__", "_due", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # Insertion-ordered set of the deadlines in flight.
        self._due: dict[Deadline, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, deadline: Deadline) -> None:
        self._due[deadline] = None
        if self._timer is None:
            self._timer = self._loop.call_later(TICK, self._sweep)

    def remove(self, deadline: Deadline) -> None:
        self._due.pop(deadline, None)

    def _sweep(self) -> None:
        self._timer = None
        now = self._loop.time()
        for deadline in [d for d in self._due if d.when <= now]:
            del self._due[deadline]
            deadline.expire()
        if self._due:
            self._timer = self._loop.call_later(TICK, self._sweep)


_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = weakref.WeakKeyDictionary()


class Deadline:
    """``async with Deadline(seconds):`` as ``async with asyncio.timeout(seconds):`` for a task's own
    work: past the deadline the task is cancelled and the block raises ``TimeoutError``."""

    __slots__ = ("__weakref__", "_cancelling", "_expired", "_seconds", "_sweeper", "_task", "when")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self.when = 0.0

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a task")
        loop = task.get_loop()
        sweeper = _sweepers.get(loop)
        if sweeper is None:
            sweeper = _sweepers[loop] = _Sweeper(loop)
        self._task = task
        self._sweeper = sweeper
        # Cancellations already requested before the block are not ours to turn into a timeout.
        self._cancelling = task.cancelling()
        self.when = loop.time() + self._seconds
        sweeper.add(self)
        return self

    def expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._sweeper.remove(self)
        # asyncio.Timeout.__aexit__: our cancellation, and no other request to cancel since.
        if self._expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
