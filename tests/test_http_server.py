"""The connection handler leans on a few aiohttp internals (``signer/http/server.py``); an aiohttp
upgrade that renames them must fail here, not silently drop the head deadline or the bytes-free errors.
The behaviour itself is tested through a running server in ``tests/system/test_edge.py``."""

from __future__ import annotations

import asyncio

from aiohttp import web

from signer.http import server


def test_the_aiohttp_internals_the_handler_uses_are_there() -> None:
    for name in ("_messages", "_request_in_progress", "_request_count"):
        assert name in web.RequestHandler.__slots__, name
    assert callable(getattr(web.Response, "_prepare_headers", None))
    assert issubclass(server._Handler, web.RequestHandler)


def test_the_server_makes_our_handler_with_its_deadline() -> None:
    async def build() -> web.RequestHandler:
        runner = server._Runner(web.Application(), header_timeout=3.0, keepalive_timeout=7.0)
        await runner.setup()
        try:
            assert runner.server is not None
            return runner.server()
        finally:
            await runner.cleanup()

    handler = asyncio.run(build())
    assert isinstance(handler, server._Handler)
    assert handler.header_timeout == 3.0 and handler.keepalive_timeout == 7.0
