"""The request deadline (signer.http.deadline) ends the way ``asyncio.timeout`` does in every case: work
that finishes in time, work past its deadline, a cancellation from elsewhere, an error, nested
deadlines; and it is met no later than one tick after it passes. Run on the service's loop (uvloop)
and on asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from signer.app import new_event_loop
from signer.http.deadline import TICK, Deadline, _sweepers

Make = Callable[[float], Any]


def run(coro: Callable[[], Awaitable[Any]], uvloop: bool) -> Any:
    loop = new_event_loop(prefer_uvloop=uvloop)
    try:
        return loop.run_until_complete(coro())
    finally:
        loop.close()


@pytest.fixture(params=[True, False], ids=["uvloop", "asyncio"])
def uvloop(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.mark.parametrize("make", [Deadline, asyncio.timeout], ids=["Deadline", "asyncio.timeout"])
def test_outcomes_are_asyncio_timeouts(make: Make, uvloop: bool) -> None:
    async def main() -> list[str]:
        outcomes = []

        async def finishes() -> str:
            async with make(5):
                await asyncio.sleep(0)
            return "done"

        async def overruns() -> str:
            try:
                async with make(0.01):
                    await asyncio.Event().wait()
            except TimeoutError:
                return "timeout"
            return "not reached"

        async def fails() -> str:
            try:
                async with make(5):
                    raise ValueError("boom")
            except ValueError:
                return "error"
            return "not reached"

        async def cancelled_from_outside() -> str:
            started = asyncio.Event()

            async def body() -> None:
                async with make(5):
                    started.set()
                    await asyncio.Event().wait()

            task = asyncio.get_running_loop().create_task(body())
            await started.wait()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return "cancelled"
            return "not reached"

        async def nested_inner_expires() -> str:
            async with make(5):
                try:
                    async with make(0.01):
                        await asyncio.Event().wait()
                except TimeoutError:
                    return "inner timeout"
            return "not reached"

        async def nested_outer_expires() -> str:
            try:
                async with make(0.01):
                    async with make(5):
                        await asyncio.Event().wait()
            except TimeoutError:
                return "outer timeout"
            return "not reached"

        for case in (
            finishes,
            overruns,
            fails,
            cancelled_from_outside,
            nested_inner_expires,
            nested_outer_expires,
        ):
            outcomes.append(await case())
        return outcomes

    assert run(main, uvloop) == [
        "done",
        "timeout",
        "error",
        "cancelled",
        "inner timeout",
        "outer timeout",
    ]


def test_a_deadline_is_met_within_a_tick_and_leaves_nothing_armed(uvloop: bool) -> None:
    async def main() -> tuple[float, int, bool]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            async with Deadline(0.02):
                await asyncio.Event().wait()
        late = loop.time() - start - 0.02
        for _ in range(100):
            async with Deadline(30):
                await asyncio.sleep(0)
        sweeper = _sweepers[loop]
        return late, len(sweeper._due), sweeper._timer is None or sweeper._timer.cancelled()

    late, in_flight, _ = run(main, uvloop)
    # The loop's own timer granularity adds a little to the tick.
    assert 0 <= late <= TICK + 0.05
    assert in_flight == 0


def test_many_in_flight_expire_only_when_due(uvloop: bool) -> None:
    async def main() -> tuple[int, int]:
        done = 0
        timed_out = 0

        async def one(seconds: float, work: float) -> None:
            nonlocal done, timed_out
            try:
                async with Deadline(seconds):
                    await asyncio.sleep(work)
                done += 1
            except TimeoutError:
                timed_out += 1

        await asyncio.gather(*(one(5, 0.01) for _ in range(50)), *(one(0.01, 5) for _ in range(20)))
        return done, timed_out

    assert run(main, uvloop) == (50, 20)
