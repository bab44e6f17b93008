"""Webhooks per approver group against a real aiohttp receiver on 127.0.0.1 (allowed by the destination
allowlist, as an operator would): written in the event's transaction, signed with HMAC-SHA256, retried
with exponential back-off, never blocking a request; secrets rotated with an overlap during which both
signatures are sent (checked here with ``hmac``, independently of the service); loopback refused at
delivery when the transport's policy does not allow it, and redirects not followed."""

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
from signer.services.destinations import DestinationPolicy
from signer.services.webhooks import WebhookService
from signer.store import Store
from tests.approvals.support import World, make_world

LOOPBACK = DestinationPolicy.parse(["127.0.0.1/32"])


class Receiver:
    """Answers ``failures`` 500s first (or hangs when ``hang``, or redirects when ``redirect``), then
    200; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str], bytes]] = []
        self.failures = 0
        self.hang = False
        self.redirect = False
        self.got = asyncio.Event()
        self.elsewhere = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((time.monotonic(), dict(request.headers), body))
        if self.hang:
            await asyncio.sleep(3)  # three times the dispatcher's timeout
        if self.redirect:
            return web.Response(status=307, headers={"Location": "/elsewhere"})
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

    async def elsewhere(request: web.Request) -> web.Response:
        made.elsewhere += 1
        return web.Response(status=204)

    app.router.add_post("/elsewhere", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield made, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


@pytest.fixture
async def hooked(store: Store, hsm: Hsm) -> AsyncIterator[tuple[World, WebhookService]]:
    async for made in _hooked(store, hsm, LOOPBACK):
        yield made


@pytest.fixture
async def hooked_strict(store: Store, hsm: Hsm) -> AsyncIterator[tuple[World, WebhookService]]:
    """URLs are accepted for loopback, but the transport (delivery) refuses it: the delivery-time check."""
    async for made in _hooked(store, hsm, DestinationPolicy()):
        yield made


async def _hooked(
    store: Store, hsm: Hsm, delivery: DestinationPolicy
) -> AsyncIterator[tuple[World, WebhookService]]:
    transport = AiohttpTransport(delivery)
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
        store,
        auth,
        transport,
        base_delay=0.2,
        max_delay=1.0,
        timeout=1.0,
        poll_interval=0.05,
        clock=world.clock,
        destinations=LOOPBACK,
        secret_overlap=timedelta(hours=1),
    )
    holder["service"] = service
    task = asyncio.create_task(service.run())
    yield world, service
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await transport.close()


def _mac(secret: str, headers: dict[str, str], body: bytes) -> str:
    """What a receiver computes: ``sha256=`` + hex HMAC-SHA256(key, "<timestamp>.<body>")."""
    message = headers["X-Signer-Timestamp"].encode() + b"." + body
    return "sha256=" + hmac.new(bytes.fromhex(secret), message, hashlib.sha256).hexdigest()


def _check(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert hmac.compare_digest(headers["X-Signer-Signature"], _mac(secret, headers, body))
    return json.loads(body)


async def _until(condition, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_signed_events_with_retries_and_backoff(hooked, receiver) -> None:
    world, service = hooked
    hook, url = receiver
    registered = await service.set_webhook(world.admin_person.ctx, "treasury", url)
    secret = registered["secret"]
    again = await service.set_webhook(world.admin_person.ctx, "treasury", url)
    assert again["secret"] == secret  # setting the URL again keeps the key
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
    # Exponential back-off (base 0.2 s): each retry waits at least its delay after the refused call.
    # Only lower bounds: a loaded machine may make any gap longer, never shorter.
    assert gaps[0] >= 0.19 and gaps[1] >= 0.38, gaps  # (a little under: two clocks)
    events = [_check(secret, h, b) for _, h, b in hook.calls]
    assert {e["id"] for e in events} == {events[0]["id"]}  # the same event, retried
    assert events[0]["type"] == "approval.requested" and events[0]["approval_id"] == record.id
    # The notification carries the console link that opens the request (through sign-in).
    assert events[0]["console_path"] == f"/console/approvals/{record.id}"
    assert events[0]["payload_digest"] == record.payload_digest

    hook.got.clear()
    await world.approvals.approve(alice.ctx, record.id, record.payload_digest)
    await world.approvals.approve(bob.ctx, record.id, record.payload_digest)
    await _until(lambda: hook.got.is_set())
    last = _check(secret, hook.calls[-1][1], hook.calls[-1][2])
    assert last["type"] == "approval.signed"
    # A forged body does not verify.
    with pytest.raises(AssertionError):
        _check(secret, hook.calls[-1][1], hook.calls[-1][2] + b" ")


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
            due = await reader.outbox.due(world.clock() + timedelta(days=1))
        return any(r.last_error == "TimeoutError" for r in due)

    deadline = time.monotonic() + 15
    while not await timed_out():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def _signatures(headers: dict[str, str]) -> list[str]:
    """How a receiver reads the header: entries split on commas."""
    return [part.strip() for part in headers["X-Signer-Signature"].split(",")]


async def _next_call(world: World, hook: Receiver, requester: Any, key: Any) -> tuple[dict[str, str], bytes]:
    hook.got.clear()
    before = len(hook.calls)
    await world.request(requester, key, quorum={"treasury": 1})
    await _until(lambda: hook.got.is_set() and len(hook.calls) > before)
    _, headers, body = hook.calls[-1]
    return headers, body


async def test_rotation_sends_both_signatures_during_the_overlap_only(hooked, receiver) -> None:
    world, service = hooked
    hook, url = receiver
    old = (await service.set_webhook(world.admin_person.ctx, "treasury", url))["secret"]
    key = await world.key()
    requester = await world.requester(key)
    await world.join("treasury", await world.person())

    headers, body = await _next_call(world, hook, requester, key)
    assert _signatures(headers) == [_mac(old, headers, body)]

    rotated = await service.rotate_secret(world.admin_person.ctx, "treasury", overlap_seconds=600)
    new = rotated["secret"]
    assert new != old and len(bytes.fromhex(new)) == 32
    # Inside the overlap: the new signature first, then the old one; each verifies with its own key.
    world.clock.jump(seconds=599)
    headers, body = await _next_call(world, hook, requester, key)
    assert _signatures(headers) == [_mac(new, headers, body), _mac(old, headers, body)]
    # A receiver still on the old key accepts it; one on the new key too; a wrong key matches nothing.
    assert _mac(old, headers, body) in _signatures(headers)
    assert _mac("00" * 32, headers, body) not in _signatures(headers)

    # After the overlap: the new signature only.
    world.clock.jump(seconds=2)
    headers, body = await _next_call(world, hook, requester, key)
    assert _signatures(headers) == [_mac(new, headers, body)]

    # The default overlap (the setting, one hour here) and a rotation inside an overlap: the oldest
    # key is dropped at once, the one before is kept.
    newer = (await service.rotate_secret(world.admin_person.ctx, "treasury"))["secret"]
    newest = (await service.rotate_secret(world.admin_person.ctx, "treasury"))["secret"]
    world.clock.jump(seconds=3599)
    headers, body = await _next_call(world, hook, requester, key)
    assert _signatures(headers) == [_mac(newest, headers, body), _mac(newer, headers, body)]
    world.clock.jump(seconds=2)
    headers, body = await _next_call(world, hook, requester, key)
    assert _signatures(headers) == [_mac(newest, headers, body)]

    async with world.store.read() as reader:
        events = [json.loads(e.event) for e in await reader.audit.events()]
    rotations = [e for e in events if e["kind"] == "webhook.secret_rotate"]
    assert len(rotations) == 3 and all("secret" not in e for e in rotations)
    # The typed builder writes the keys these events always had, plus outcome and resource (a superset).
    common = {"kind", "at", "request_id", "actor", "group"}
    added = {"outcome", "resource"}
    assert all(set(e) == common | {"previous_secret_until"} | added for e in rotations)
    sets = [e for e in events if e["kind"] == "webhook.set"]
    assert sets and all(set(e) == common | {"destination"} | added for e in sets)
    assert all(
        e["outcome"] == "allowed" and e["resource"] == {"type": "webhook", "id": e["group"]} for e in sets
    )
    text = json.dumps(events)
    assert not any(s in text for s in (old, new, newer, newest))


async def test_rotating_a_group_without_webhook_is_not_found(hooked) -> None:
    world, service = hooked
    from signer.errors import NotFound

    with pytest.raises(NotFound) as caught:
        await service.rotate_secret(world.admin_person.ctx, "nobody")
    assert caught.value.code == "webhook_not_found"


async def test_redirects_are_not_followed(hooked, receiver) -> None:
    world, service = hooked
    hook, url = receiver
    hook.redirect = True
    await service.set_webhook(world.admin_person.ctx, "treasury", url)
    key = await world.key()
    requester = await world.requester(key)
    await world.request(requester, key, quorum={"treasury": 1})

    async def errors() -> list[str | None]:
        async with world.store.read() as reader:
            due = await reader.outbox.due(world.clock() + timedelta(days=1))
        return [r.last_error for r in due]

    deadline = time.monotonic() + 15
    while "status 307" not in await errors():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert hook.elsewhere == 0


async def test_delivery_checks_the_destination_again(hooked_strict, receiver) -> None:
    """Set while loopback was allowed, delivered by a transport whose policy refuses it (what a DNS
    answer that changed after the check meets): the receiver is never called, by address or by name."""
    world, _ = hooked_strict
    hook, url = receiver
    key = await world.key()
    requester = await world.requester(key)
    for group, target in (("by-address", url), ("by-name", url.replace("127.0.0.1", "localhost"))):
        # Written straight to the store: which names the set-time check lets through is tested apart.
        async with world.store.write() as writer:
            await writer.webhooks.set(group, target, world.clock(), None, secret_salt="s")
        await world.request(requester, key, quorum={group: 1})

    async def refused() -> list[str]:
        async with world.store.read() as reader:
            due = await reader.outbox.due(world.clock() + timedelta(days=1))
        return [r.group_name for r in due if r.last_error == "DestinationRefused"]

    deadline = time.monotonic() + 15
    while sorted(set(await refused())) != ["by-address", "by-name"]:
        assert time.monotonic() < deadline, await refused()
        await asyncio.sleep(0.05)
    assert hook.calls == []


async def test_the_dispatcher_prunes_finished_calls_once_an_hour(store: Store, hsm: Hsm) -> None:
    """Delivered calls (and those given up on) leave the outbox once older than the retention, at
    most once per PRUNE_EVERY; calls still being tried stay."""
    from signer.services.webhooks import PRUNE_EVERY
    from signer.store import OutboxRecord

    world = await make_world(store, hsm)
    clock = world.clock
    transport = AiohttpTransport(LOOPBACK)
    service = WebhookService(
        store,
        world.auth,
        transport,
        clock=clock,
        destinations=LOOPBACK,
        outbox_retention=timedelta(days=7),
    )
    try:
        made = clock()
        done, trying = (
            OutboxRecord("obx_done", "@alerts", "https://a.example", {}, made, 0, made),
            OutboxRecord("obx_trying", "@alerts", "https://a.example", {}, made, 0, made),
        )
        async with store.write() as w:
            await w.outbox.enqueue(done)
            await w.outbox.enqueue(trying)
            await w.outbox.finish(done.id, delivered_at=made, attempts=1, next_attempt_at=made, error=None)
            await w.outbox.finish(trying.id, delivered_at=None, attempts=1, next_attempt_at=made, error="x")
        assert await service.prune_if_due() == 0  # nothing old enough yet
        clock.jump(days=8)
        assert await service.prune_if_due() == 1
        async with store.read() as r:
            assert await r.outbox.get(done.id) is None
            assert await r.outbox.get(trying.id) is not None
        again = OutboxRecord("obx_again", "@alerts", "https://a.example", {}, made, 0, made)
        async with store.write() as w:
            await w.outbox.enqueue(again)
            await w.outbox.finish(again.id, delivered_at=made, attempts=1, next_attempt_at=made, error=None)
        assert await service.prune_if_due() == 0  # pruned a moment ago: not again within the hour
        clock.jump(seconds=PRUNE_EVERY.total_seconds())
        assert await service.prune_if_due() == 1
    finally:
        await transport.close()
