"""Webhooks per approver group against a real aiohttp receiver on 127.0.0.1: written in the event's
transaction, signed with HMAC-SHA256, retried with exponential back-off, never blocking a request."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from signer.hsm import Hsm
from signer.http.webhook_transport import AiohttpTransport
from signer.services.auth import AuthService
from signer.services.webhooks import WebhookService
from signer.store import Store
from tests.approvals.support import World, make_world


class Receiver:
    """Answers ``failures`` 500s first (or hangs when ``hang``), then 200; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str], bytes]] = []
        self.failures = 0
        self.hang = False
        self.got = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((time.monotonic(), dict(request.headers), body))
        if self.hang:
            await asyncio.sleep(3)  # three times the dispatcher's timeout
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=500)
        self.got.set()
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    made = Receiver()
    app = web.Application()
    app.router.add_post("/hook", made.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield made, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


@pytest.fixture
async def hooked(store: Store, hsm: Hsm) -> AsyncIterator[tuple[World, WebhookService]]:
    transport = AiohttpTransport()
    holder: dict[str, Any] = {}

    class Late:
        """The webhook service needs the world's AuthService: bind it once the world exists."""

        async def enqueue(self, *a: Any) -> int:
            return await holder["service"].enqueue(*a)

        def wake(self) -> None:
            holder["service"].wake()

    world = await make_world(store, hsm, webhooks=Late())
    auth: AuthService = world.auth
    service = WebhookService(
        store, auth, transport, base_delay=0.2, max_delay=1.0, timeout=1.0, poll_interval=0.05
    )
    holder["service"] = service
    task = asyncio.create_task(service.run())
    yield world, service
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await transport.close()


def _check(service: WebhookService, group: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    secret = service.secret_for(group)
    mac = hmac.new(secret, headers["X-Signer-Timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Signer-Signature"], "sha256=" + mac)
    return json.loads(body)


async def _until(condition, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_signed_events_with_retries_and_backoff(hooked, receiver) -> None:
    world, service = hooked
    hook, url = receiver
    registered = await service.set_webhook(world.admin_person.ctx, "treasury", url)
    assert bytes.fromhex(registered["secret"]) == service.secret_for("treasury")
    key = await world.key()
    requester = await world.requester(key)
    alice, bob = await world.person(), await world.person()
    for p in (alice, bob):
        await world.join("treasury", p)

    hook.failures = 2
    record = await world.request(requester, key)
    await _until(lambda: hook.got.is_set())
    assert len(hook.calls) == 3  # two 500s, then delivered
    gaps = [b[0] - a[0] for a, b in zip(hook.calls, hook.calls[1:], strict=False)]
    assert gaps[1] > gaps[0] * 1.5 and gaps[0] >= 0.15, gaps  # exponential back-off
    events = [_check(service, "treasury", h, b) for _, h, b in hook.calls]
    assert {e["id"] for e in events} == {events[0]["id"]}  # the same event, retried
    assert events[0]["type"] == "approval.requested" and events[0]["approval_id"] == record.id
    assert events[0]["payload_digest"] == record.payload_digest

    hook.got.clear()
    await world.approvals.approve(alice.ctx, record.id, record.payload_digest)
    await world.approvals.approve(bob.ctx, record.id, record.payload_digest)
    await _until(lambda: hook.got.is_set())
    last = _check(service, "treasury", hook.calls[-1][1], hook.calls[-1][2])
    assert last["type"] == "approval.signed"
    # A forged body does not verify.
    with pytest.raises(AssertionError):
        _check(service, "treasury", hook.calls[-1][1], hook.calls[-1][2] + b" ")


async def test_a_hanging_receiver_never_blocks_a_request(hooked, receiver) -> None:
    world, service = hooked
    hook, url = receiver
    hook.hang = True
    await service.set_webhook(world.admin_person.ctx, "ops", url)
    key = await world.key()
    requester = await world.requester(key)
    alice = await world.person()
    await world.join("ops", alice)
    started = time.monotonic()
    record = await world.request(requester, key, quorum={"ops": 1})
    await _until(lambda: len(hook.calls) >= 1)
    done = await world.approvals.approve(alice.ctx, record.id, record.payload_digest)
    assert done["state"] == "signed"
    assert time.monotonic() - started < 2.5  # less than one hanging call takes

    async def timed_out() -> bool:
        async with world.store.read() as reader:
            due = await reader.due_outbox(world.clock() + timedelta(days=1))
        return any(r.last_error == "TimeoutError" for r in due)

    deadline = time.monotonic() + 15
    while not await timed_out():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
