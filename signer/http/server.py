"""The HTTP connection layer under the application: deadlines for slow clients, bytes-free parse errors.

aiohttp's own connection handler answers a request it cannot parse (a line or header too long, a bad
request line, a bad header byte, bad chunking) with a plain-text 400 that quotes the offending bytes, and
logs the same bytes with a traceback; an oversized ``Authorization`` header put a bearer token in both.
Here those answers are problem documents with a stable ``code`` that quote nothing, and the log line names
the error class only. A connection must deliver each request head (request line and headers) within
``header_timeout`` seconds of its first byte (or of the connection opening), so a client trickling a byte
at a time cannot hold a connection; an idle keep-alive connection closes after ``keepalive_timeout``.

``serve`` is ``aiohttp.web.run_app`` with this handler in place (run_app cannot be given a handler class).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong

from signer.http.errors import PROBLEM_TYPE, problem

log = logging.getLogger("signer.http")


class _ProblemResponse(web.Response):
    """A response written outside the application (no ``on_response_prepare``): no version banner either."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.pop("Server", None)


class _Handler(web.RequestHandler):
    """aiohttp's connection handler with a request-head deadline and errors that echo nothing."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When the pending request head started (None: no head pending), and the one timer that
        # enforces its deadline. A head that arrives does not cancel the timer: on a kept-alive
        # connection the next head would arm a new one at once, a timer made and cancelled per
        # request. The timer checks when it fires and, if a later head is pending, waits for that
        # head's deadline instead; with no head pending it lapses.
        self._head_since: float | None = None
        self._head_handle: asyncio.TimerHandle | None = None
        self._head_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A connection that says nothing at all is a request head that never arrives.
        self._arm_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_since = None
        if self._head_handle is not None:
            self._head_handle.cancel()
            self._head_handle = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes while no request is queued or being handled start the next request head.
        if self._head_since is None and data and not self._messages and not self._request_in_progress:
            self._arm_head_deadline()
        super().data_received(data)
        if self._head_since is not None and self._request_count > self._head_count:
            self._head_since = None  # the head arrived (or was refused): its deadline is over

    def _arm_head_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_count = self._request_count
        self._head_since = loop.time()
        if self._head_handle is None:
            self._head_handle = loop.call_at(
                self._head_since + self.header_timeout, self._head_deadline_passed
            )

    def _head_deadline_passed(self) -> None:
        self._head_handle = None
        if self._head_since is None:
            return  # no head pending: the timer lapses until the next one starts
        loop = asyncio.get_running_loop()
        due = self._head_since + self.header_timeout
        if loop.time() < due:
            # A head that started after the timer was set: wait for its own deadline.
            self._head_handle = loop.call_at(due, self._head_deadline_passed)
            return
        if self._request_count == self._head_count and not self._request_in_progress:
            log.info("connection closed: request head not received in time", extra={"code": "header_timeout"})
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse (or a handler failure outside the middleware): answered with
        a problem document and logged by error class; neither quotes the request's bytes."""
        request_id = secrets.token_hex(8)
        reason = type(exc).__name__ if exc is not None else "none"
        if status >= 500:
            code, detail = "internal_error", "internal error"
        elif isinstance(exc, LineTooLong):
            status, code, detail = 431, "request_head_too_large", "the request line or a header is too long"
        elif isinstance(exc, BadHttpMethod):
            code, detail = "malformed_request", "the request is not HTTP/1.1 this service can read"
        else:
            code, detail = "malformed_request", "the request could not be parsed as HTTP"
        # The class says what went wrong; the message would quote the bytes (and any token in them).
        if status >= 500:
            # Frames for the operator; the formatter withholds the message (signer.logs).
            log.error("request failed outside the app", extra={"request_id": request_id}, exc_info=exc)
        else:
            log.info(
                "malformed request refused", extra={"request_id": request_id, "code": code, "reason": reason}
            )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started; the connection is dropped")
        built = problem(status, code, detail, request_id)
        headers = {name: value for name, value in built.headers.items() if name != "Content-Type"}
        response = _ProblemResponse(
            status=status, body=built.body, content_type=PROBLEM_TYPE, headers=headers
        )
        response.headers["Cache-Control"] = "no-store"
        response.force_close()
        return response


class _Server(web.Server):
    """Makes ``_Handler`` connection handlers (``web.Server`` makes plain ones)."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> web.RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler.header_timeout = self._header_timeout
        return handler


class _Runner(web.AppRunner):
    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the application's start-up, as AppRunner does
        return _Server(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            header_timeout=self._header_timeout,
            **plain._kwargs,
        )


async def _serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    sockets: list[socket.socket] | None,
    on_listening: Callable[[list[str]], None] | None,
    ssl_context: ssl.SSLContext | None = None,
    background: Callable[[], Coroutine[Any, Any, None]] | None = None,
    **kwargs: Any,
) -> None:
    runner = _Runner(app, handle_signals=True, **kwargs)
    await runner.setup()
    task: asyncio.Task[None] | None = None
    try:
        sites: list[web.BaseSite] = (
            [web.SockSite(runner, sock, ssl_context=ssl_context) for sock in sockets]
            if sockets
            else [web.TCPSite(runner, host, port, reuse_port=False, ssl_context=ssl_context)]
        )
        for site in sites:
            await site.start()
        if background is not None:
            task = asyncio.get_running_loop().create_task(background())
        if on_listening is not None:
            on_listening(_addresses(runner))
        await asyncio.Event().wait()  # until a signal (GracefulExit) or cancellation
    finally:
        if task is not None:
            task.cancel()
        await runner.cleanup()


def serve(
    app: web.Application,
    loop: asyncio.AbstractEventLoop,
    *,
    host: str,
    port: int,
    sockets: list[socket.socket] | None,
    header_timeout: float,
    keepalive_timeout: float,
    on_listening: Callable[[list[str]], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    background: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, like ``web.run_app`` (same shutdown order), on ``loop``:
    on ``sockets`` when given (bound by a supervisor), else on ``host:port`` bound here, never with
    SO_REUSEPORT (a second instance on the port must fail, not share it). ``on_listening`` is called with
    the addresses (``host:port``) once every socket accepts connections. With ``ssl_context`` every
    socket serves TLS; ``background`` (the TLS reloader) runs while the sockets are open."""
    asyncio.set_event_loop(loop)
    main = loop.create_task(
        _serve(
            app,
            host=host,
            port=port,
            sockets=sockets,
            header_timeout=header_timeout,
            keepalive_timeout=keepalive_timeout,
            access_log=None,
            on_listening=on_listening,
            ssl_context=ssl_context,
            background=background,
        )
    )
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, web.GracefulExit, KeyboardInterrupt):
                loop.run_until_complete(main)
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _addresses(runner: web.AppRunner) -> list[str]:
    """``host:port`` of every listening socket (IPv6 hosts in brackets)."""
    found = []
    for name in runner.addresses:
        if isinstance(name, tuple):
            host = str(name[0])
            found.append(f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}")
    return found
