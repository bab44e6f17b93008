"""The serving loop: uvloop's when installed, asyncio's when asked for (or when uvloop is missing)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from signer.app import new_event_loop


def test_asyncio_loop_when_uvloop_is_not_wanted() -> None:
    loop = new_event_loop(prefer_uvloop=False)
    try:
        assert type(loop).__module__.startswith("asyncio")
        assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        loop.close()


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
def test_uvloop_when_installed() -> None:
    loop = new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
        assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        loop.close()
