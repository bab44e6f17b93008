"""Unusual access (issue 13), in process: the real pipeline, SoftHSM token and database (SQLite and
PostgreSQL), a detector clock the test sets and fixed source addresses. Each signal is produced by a scenario
made to produce it and is absent for its look-alike; an ``anomaly`` rule denies or sends to approvers,
and without one a signal changes no decision; each flag is one ``anomaly.detected`` audit event (and
one alerts webhook call, HMAC signed); known addresses survive a new detector (a restart).

Baselines are shared and durable: two detectors on one database (two workers, each with its own
``Store``) judge from one combined count once both refreshed, and a new detector (a restart) knows the
usual hours learnt before it. Alerts go through the webhook outbox: a real local receiver that refuses
the first deliveries gets each alert exactly once per id after the retries, including across a new
deliverer (a restart) while pending; an alert is given up after its expiry (and shows in the operator
checklist), and a receiver that never answers holds up no request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from policy import parse_policy_document
from signer.crypto.webhook_hmac import webhook_signature
from signer.errors import SignerError
from signer.hsm import Hsm
from signer.http.webhook_transport import AiohttpTransport
from signer.services.anomalies import AnomalyDetector, Thresholds
from signer.services.checklist import ChecklistService
from signer.services.destinations import DestinationPolicy
from signer.services.usage import UsageRecorder
from signer.services.webhooks import ALERTS, WebhookService
from signer.store import Store
from tests.approvals.support import Person, World, make_world
from tests.dbfixtures import (  # noqa: F401
    fresh_store,
    pg_database_url,
    pg_server_url,
    pg_store_url,
    sqlite_store_url,
    sqlite_template,
    store,
    store_url,
)

# A Tuesday, 10:00 UTC.
T0 = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
HOME, ELSEWHERE = "192.0.2.10", "198.51.100.7"


class FixedClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at


@dataclasses.dataclass
class Rig:
    world: World
    clock: FixedClock
    detector: AnomalyDetector
    key_id: str
    service: Person

    async def sign(self, source: str | None = HOME, *, key_id: str | None = None) -> dict[str, Any]:
        ctx = dataclasses.replace(self.service.ctx, source=source)
        return await self.world.signing.sign_message(ctx, key_id or self.key_id, b"hello")

    async def refused(self, source: str | None = HOME, *, key_id: str | None = None) -> SignerError:
        with pytest.raises(SignerError) as caught:
            await self.sign(source, key_id=key_id)
        return caught.value

    async def flags(self) -> list[dict[str, Any]]:
        await self.detector.flush()
        async with self.world.store.read() as reader:
            events = [json.loads(e.event) for e in await reader.audit.events(limit=10_000)]
        return [e for e in events if e["kind"] == "anomaly.detected"]

    async def policy(self, *rules: dict[str, Any]) -> None:
        admin = self.world.admin_person.ctx
        document = parse_policy_document({"id": f"p-{self.key_id}", "version": 1, "rules": list(rules)})
        await self.world.policies.create_version(admin, document)
        await self.world.policies.attach(
            admin, f"p-{self.key_id}", 1, scope=None, key_id=self.key_id, mode="live"
        )


def thresholds(**changes: Any) -> Thresholds:
    return dataclasses.replace(
        Thresholds(
            burst_window=60,
            burst_factor=3.0,
            burst_min_requests=7,
            baseline=600,
            usual_hours_days=7,
            usual_hours_min_requests=3,
            denials_threshold=3,
            denials_window=300,
        ),
        **changes,
    )


async def make_rig(store: Store, hsm: Hsm, **changes: Any) -> Rig:  # noqa: F811
    world = await make_world(store, hsm)
    clock = FixedClock()
    detector = AnomalyDetector(store, thresholds(**changes), clock=clock)
    world.pipeline.anomalies = detector
    key = await world.key()
    service = await world.requester(key)
    return Rig(world, clock, detector, key.id, service)


@pytest.fixture
async def rig(store: Store, hsm: Hsm) -> AsyncIterator[Rig]:  # noqa: F811
    yield await make_rig(store, hsm)


async def test_a_new_source_is_flagged_once_and_changes_nothing_without_a_rule(rig: Rig) -> None:
    # The first address is learnt quietly, and so is a second request from it.
    await rig.sign(HOME)
    rig.clock.set(T0 + timedelta(seconds=1))
    await rig.sign(HOME)
    assert await rig.flags() == []
    rig.clock.set(T0 + timedelta(seconds=2))
    allowed = await rig.sign(ELSEWHERE)
    assert allowed["signature"]
    flags = await rig.flags()
    assert [(f["signal"], f["source"], f["outcome"]) for f in flags] == [("new_source", ELSEWHERE, "allowed")]
    assert flags[0]["actor"]["principal_id"] == rig.service.id
    assert flags[0]["resource"] == {"type": "key", "id": rig.key_id}
    assert flags[0]["trigger_request_id"] == rig.service.ctx.request_id and flags[0]["request_id"] is None
    # Allowed once, the address is known; a request without an address shows none.
    rig.clock.set(T0 + timedelta(seconds=3))
    await rig.sign(ELSEWHERE)
    await rig.sign(None)
    assert len(await rig.flags()) == 1


async def test_known_addresses_survive_a_restart(rig: Rig) -> None:
    await rig.sign(HOME)
    await rig.detector.flush()
    again = AnomalyDetector(rig.world.store, thresholds(), clock=rig.clock)
    rig.world.pipeline.anomalies = again
    rig.detector = again
    await rig.sign(HOME)
    assert await rig.flags() == []
    await rig.sign(ELSEWHERE)
    assert [f["signal"] for f in await rig.flags()] == ["new_source"]


async def test_a_rule_denies_a_new_source_until_it_is_allowed_from_elsewhere(rig: Rig) -> None:
    await rig.sign(HOME)
    await rig.policy({"id": "odd", "kind": "anomaly", "effect": "deny", "signals": ["new_source"]})
    refused = await rig.refused(ELSEWHERE)
    assert refused.code == "policy_denied"
    assert [r["code"] for r in refused.extra["reasons"]] == ["unusual_access"]
    # Denied, the address stays new: a second try is denied too, but flagged only once.
    assert (await rig.refused(ELSEWHERE)).code == "policy_denied"
    assert await rig.sign(HOME)
    flags = await rig.flags()
    assert [(f["signal"], f["outcome"]) for f in flags] == [("new_source", "denied")]


async def test_a_burst_above_the_recent_rate(rig: Rig) -> None:
    # A steady 3 requests a minute for 10 minutes: an average of 3 a minute.
    for minute in range(10):
        for second in (0, 20, 40):
            rig.clock.set(T0 + timedelta(minutes=minute, seconds=second))
            await rig.sign()
    # The look-alike: 7 in the next minute is at least the minimum but not 3 times the average (9).
    for i in range(7):
        rig.clock.set(T0 + timedelta(minutes=10, seconds=i))
        await rig.sign()
    assert await rig.flags() == []
    # Then the average over the 10 minutes before is 3.4: the 11th request in a minute is a burst.
    await rig.policy({"id": "burst", "kind": "anomaly", "effect": "deny", "signals": ["burst"]})
    for i in range(10):
        rig.clock.set(T0 + timedelta(minutes=11, seconds=i))
        await rig.sign()
    rig.clock.set(T0 + timedelta(minutes=11, seconds=10))
    refused = await rig.refused()
    assert [r["code"] for r in refused.extra["reasons"]] == ["unusual_access"]
    flags = await rig.flags()
    assert [(f["signal"], f["at"], f["outcome"]) for f in flags] == [
        ("burst", "2026-12-08T10:11:10.000000Z", "denied")
    ]


async def test_off_hours_can_require_approval(rig: Rig) -> None:
    for day in range(3):
        rig.clock.set(T0 + timedelta(days=day))
        await rig.sign()
    await rig.policy(
        {
            "id": "night",
            "kind": "anomaly",
            "effect": "require_approval",
            "signals": ["off_hours"],
            "approval": {"quorum": 1, "group": "treasury", "expires_in_seconds": 600},
        }
    )
    # 10:xx is usual: allowed. 03:00 was never used: sent to approvers, and flagged.
    rig.clock.set(T0 + timedelta(days=3, minutes=30))
    assert (await rig.sign())["signature"]
    rig.clock.set(T0 + timedelta(days=3, hours=17))
    pending = await rig.sign()
    assert pending["state"] == "pending_approval"
    assert [(f["signal"], f["outcome"]) for f in await rig.flags()] == [("off_hours", "pending_approval")]


async def test_off_hours_needs_history(store: Store, hsm: Hsm) -> None:  # noqa: F811
    rig = await make_rig(store, hsm, usual_hours_min_requests=50)
    for day in range(3):
        rig.clock.set(T0 + timedelta(days=day))
        await rig.sign()
    rig.clock.set(T0 + timedelta(days=3, hours=17))
    await rig.sign()
    assert await rig.flags() == []


async def test_repeated_denials(rig: Rig) -> None:
    other = await rig.world.key()  # no grant on it: each try is refused (not found)
    for i in range(3):
        rig.clock.set(T0 + timedelta(seconds=i))
        assert (await rig.refused(key_id=other.id)).status == 404
    rig.clock.set(T0 + timedelta(seconds=10))
    await rig.sign()
    flags = await rig.flags()
    assert [(f["signal"], f["outcome"]) for f in flags] == [("repeated_denials", "allowed")]
    # Out of the window, the denials no longer count.
    rig.clock.set(T0 + timedelta(seconds=400))
    await rig.sign()
    assert len(await rig.flags()) == 1


async def test_two_workers_judge_from_one_combined_baseline(store: Store, hsm: Hsm, store_url: str) -> None:  # noqa: F811
    rig = await make_rig(store, hsm)
    async with fresh_store(store_url) as other_store:
        one = rig.detector
        two = AnomalyDetector(other_store, thresholds(), clock=rig.clock)
        workers = [one, two]

        async def sign_on(i: int) -> dict[str, Any]:
            rig.world.pipeline.anomalies = workers[i % 2]
            return await rig.sign()

        # 3 requests a minute for 10 minutes, spread over both workers: an average of 3.4 a minute
        # with the next minute's 7 (each worker alone saw about half).
        n = 0
        for minute in range(10):
            for second in (0, 20, 40):
                rig.clock.set(T0 + timedelta(minutes=minute, seconds=second))
                await sign_on(n)
                n += 1
        for i in range(7):
            rig.clock.set(T0 + timedelta(minutes=10, seconds=i))
            await sign_on(i)
        await rig.policy({"id": "burst", "kind": "anomaly", "effect": "deny", "signals": ["burst"]})
        # 10 requests in minute 11, 5 on each worker: neither alone is at the minimum of 7.
        for i in range(10):
            rig.clock.set(T0 + timedelta(minutes=11, seconds=i))
            await sign_on(i)
        # Each worker writes its counts, then reads everyone's (their background tasks do both).
        await one.flush()
        await two.flush()
        await one.refresh()
        await two.refresh()
        # Once both refreshed, each sees the 10 (and the combined average): the 11th is a burst on
        # either worker.
        rig.clock.set(T0 + timedelta(minutes=11, seconds=10))
        for i in (0, 1):
            rig.world.pipeline.anomalies = workers[i]
            with pytest.raises(SignerError) as caught:
                await rig.sign()
            assert [r["code"] for r in caught.value.extra["reasons"]] == ["unusual_access"]
        # Repeated denials split across the workers add up too.
        other = await rig.world.key()
        for i in range(3):
            rig.clock.set(T0 + timedelta(minutes=20, seconds=i))
            rig.world.pipeline.anomalies = workers[i % 2]
            assert (await rig.refused(key_id=other.id)).status == 404
        await one.flush()
        await two.flush()
        await one.refresh()
        await two.refresh()
        rig.world.pipeline.anomalies = two
        rig.clock.set(T0 + timedelta(minutes=20, seconds=5))
        await rig.sign()
        await two.flush()
        await one.flush()
        async with store.read() as reader:
            found = [json.loads(e.event) for e in await reader.audit.events(limit=10_000)]
        assert ("repeated_denials", "allowed") in [
            (e["signal"], e["outcome"]) for e in found if e["kind"] == "anomaly.detected"
        ]
        await two.close()


async def test_usual_hours_survive_a_restart(store: Store, hsm: Hsm, store_url: str) -> None:  # noqa: F811
    rig = await make_rig(store, hsm)
    for day in range(3):
        rig.clock.set(T0 + timedelta(days=day))
        await rig.sign()
    await rig.detector.close()
    # A new process (its own Store): it has seen nothing itself, the database has the history.
    async with fresh_store(store_url) as again_store:
        again = AnomalyDetector(again_store, thresholds(), clock=rig.clock)
        rig.world.pipeline.anomalies = rig.detector = again
        rig.clock.set(T0 + timedelta(days=3, minutes=30))
        await rig.sign()  # 10:xx stays usual
        assert await rig.flags() == []
        rig.clock.set(T0 + timedelta(days=3, hours=17))
        await rig.sign()  # 03:00 was never used, and the history is known: off hours
        assert [f["signal"] for f in await rig.flags()] == ["off_hours"]
        await again.close()


class Receiver:
    """A local alerts webhook: answers 503 to the first ``fail`` calls, then 204 (or never answers when
    ``hang``); keeps every call, and counts the accepted ones per event id."""

    def __init__(self, fail: int = 0, *, hang: bool = False) -> None:
        self.fail = fail
        self.hang = hang
        self.calls: list[tuple[bytes, dict[str, str]]] = []
        self.accepted: dict[str, int] = {}
        self.release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((body, dict(request.headers)))
        if self.hang:
            await self.release.wait()
            return web.Response(status=503)
        if len(self.calls) <= self.fail:
            return web.Response(status=503)
        event_id = request.headers["X-Signer-Event-Id"]
        self.accepted[event_id] = self.accepted.get(event_id, 0) + 1
        return web.Response(status=204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/alerts", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/alerts"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()


SECRET = b"s" * 32


def deliverer(
    rig: Rig, transport: AiohttpTransport, expiry: timedelta = timedelta(hours=1)
) -> WebhookService:
    webhooks = WebhookService(
        rig.world.store,
        rig.world.auth,
        transport,
        clock=rig.clock,
        base_delay=1.0,
        max_delay=60.0,
        timeout=5.0,
    )
    webhooks.add_channel(ALERTS, secret=SECRET, expiry=expiry)
    return webhooks


async def alerting_rig(store: Store, hsm: Hsm, receiver: Receiver, webhooks_for: Any) -> tuple[Rig, Any]:  # noqa: F811
    rig = await make_rig(store, hsm)
    webhooks = webhooks_for(rig)
    rig.detector = AnomalyDetector(
        store, thresholds(), clock=rig.clock, alerts_url=receiver.url, webhooks=webhooks
    )
    rig.world.pipeline.anomalies = rig.detector
    return rig, webhooks


async def test_alerts_are_retried_until_delivered_once_per_id_across_a_restart(
    store: Store,  # noqa: F811
    hsm: Hsm,
) -> None:
    transport = AiohttpTransport(DestinationPolicy.parse(["127.0.0.1/32"]))
    try:
        async with Receiver(fail=3) as receiver:
            rig, webhooks = await alerting_rig(store, hsm, receiver, lambda r: deliverer(r, transport))
            await rig.sign(HOME)
            await rig.sign(ELSEWHERE)
            await rig.sign("203.0.113.5")
            flags = await rig.flags()
            assert [f["signal"] for f in flags] == ["new_source", "new_source"]
            # Two alerts waiting; the first round fails both (503, 503), then the process "restarts".
            assert await webhooks.deliver_due() == 0
            assert len(receiver.calls) == 2
            async with store.read() as reader:
                assert (await reader.outbox.channel_backlog(ALERTS, rig.clock.now))[0] == 2
            again = deliverer(rig, transport)
            rounds = 0
            while len(receiver.accepted) < 2:
                rounds += 1
                assert rounds < 10, "the alerts were never delivered"
                rig.clock.set(rig.clock.now + timedelta(seconds=61))
                await again.deliver_due()
            # The 3 refusals then 2 acceptances: each alert exactly once per id, signed as before.
            assert len(receiver.calls) == 5
            assert sorted(receiver.accepted.values()) == [1, 1]
            for body, headers in receiver.calls:
                alert = json.loads(body)
                assert alert["id"] == headers["X-Signer-Event-Id"]
                assert headers["X-Signer-Signature"] == webhook_signature(
                    SECRET, headers["X-Signer-Timestamp"], body
                )
                assert alert["signal"] == "new_source" and alert["principal_id"] == rig.service.id
            assert {json.loads(b)["source"] for b, _ in receiver.calls} == {ELSEWHERE, "203.0.113.5"}
            async with store.read() as reader:
                assert await reader.outbox.channel_backlog(ALERTS, rig.clock.now) == (0, None)
                assert await reader.outbox.undelivered(ALERTS, 10) == []
            # Nothing left: another round sends nothing.
            await again.deliver_due()
            assert len(receiver.calls) == 5
    finally:
        await transport.close()


async def test_an_alert_expires_and_shows_in_the_checklist(store: Store, hsm: Hsm) -> None:  # noqa: F811
    transport = AiohttpTransport(DestinationPolicy.parse(["127.0.0.1/32"]))
    try:
        async with Receiver(fail=1000) as receiver:
            rig, webhooks = await alerting_rig(
                store, hsm, receiver, lambda r: deliverer(r, transport, expiry=timedelta(minutes=30))
            )
            await rig.sign(HOME)
            await rig.sign(ELSEWHERE)
            await rig.flags()
            checklist = ChecklistService(store, UsageRecorder(store, clock=rig.clock), clock=rig.clock)

            async def stuck() -> list[dict[str, Any]]:
                report = await checklist.build(type(checklist._thresholds)(), 100)
                return next(i for i in report["items"] if i["id"] == "undelivered_alerts")["entries"]

            assert await stuck() == []  # just flagged: not stuck yet
            for _ in range(11):  # past STUCK_ALERT_SECONDS
                await webhooks.deliver_due()
                rig.clock.set(rig.clock.now + timedelta(seconds=61))
            [entry] = await stuck()
            assert (entry["state"], entry["signal"], entry["last_error"]) == (
                "retrying",
                "new_source",
                "status 503",
            )
            listed = await webhooks.undelivered_alerts(rig.world.admin_person.ctx)
            assert (listed["pending"], [a["state"] for a in listed["alerts"]]) == (1, ["retrying"])
            assert listed["oldest_pending_at"] == "2026-12-08T10:00:00Z"
            # Past the expiry the alert is given up: no further call, no longer pending, still listed.
            rig.clock.set(rig.clock.now + timedelta(minutes=31))
            calls = len(receiver.calls)
            await webhooks.deliver_due()
            assert len(receiver.calls) == calls
            async with store.read() as reader:
                assert (await reader.outbox.channel_backlog(ALERTS, rig.clock.now))[0] == 0
                [record] = await reader.outbox.undelivered(ALERTS, 10)
            assert record.last_error == "expired"
            [entry] = await stuck()
            assert entry["state"] == "given_up"
            # The operators' list (GET /v1/alerts): nothing retrying, the one given up.
            listed = await webhooks.undelivered_alerts(rig.world.admin_person.ctx, 10)
            assert (listed["pending"], listed["oldest_pending_at"], listed["truncated"]) == (0, None, False)
            [alert] = listed["alerts"]
            assert (alert["id"], alert["state"], alert["last_error"]) == (record.id, "given_up", "expired")
            assert (alert["signal"], alert["source"], alert["next_attempt_at"]) == (
                "new_source",
                ELSEWHERE,
                None,
            )
            with pytest.raises(SignerError) as refused:
                await webhooks.undelivered_alerts(rig.service.ctx)
            assert refused.value.status == 403
    finally:
        await transport.close()


async def test_a_receiver_that_never_answers_blocks_no_request(store: Store, hsm: Hsm) -> None:  # noqa: F811
    transport = AiohttpTransport(DestinationPolicy.parse(["127.0.0.1/32"]))
    try:
        async with Receiver(hang=True) as receiver:
            rig, webhooks = await alerting_rig(store, hsm, receiver, lambda r: deliverer(r, transport))
            await rig.sign(HOME)
            await rig.sign(ELSEWHERE)
            await rig.flags()
            # The deliverer is stuck in a call the receiver never answers...
            stuck = asyncio.get_running_loop().create_task(webhooks.deliver_due())
            while not receiver.calls:
                await asyncio.sleep(0)
            # ...while requests are signed (and flagged, and their flags written) as usual.
            for i in range(5):
                assert (await rig.sign(f"198.51.100.{20 + i}"))["signature"]
            assert [f["signal"] for f in await rig.flags()].count("new_source") == 6
            assert not stuck.done()
            receiver.release.set()
            await stuck
    finally:
        await transport.close()


class CountingStore:
    """The detector's database, counting the reads it opens (everything else passes through)."""

    def __init__(self, store: Store) -> None:  # noqa: F811
        self._store = store
        self.reads = 0

    def read(self) -> Any:
        self.reads += 1
        return self._store.read()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_only_a_principals_first_request_reads_the_database(store: Store, hsm: Hsm) -> None:  # noqa: F811
    rig = await make_rig(store, hsm)
    counting = CountingStore(store)
    rig.detector = AnomalyDetector(counting, thresholds(), clock=rig.clock)  # type: ignore[arg-type]
    rig.world.pipeline.anomalies = rig.detector
    await rig.sign(HOME)
    assert counting.reads == 1  # its baseline and addresses, in one read
    for i in range(20):
        rig.clock.set(T0 + timedelta(seconds=i))
        await rig.sign(HOME)
    await rig.sign(None)
    assert counting.reads == 1
    await rig.detector.refresh()  # off the request path: one read of everyone's recent counts
    assert counting.reads == 2


async def test_one_first_address_across_two_workers(store: Store, hsm: Hsm, store_url: str) -> None:  # noqa: F811
    """Worker one sees the principal first from HOME, worker two (before anything was flushed) first
    from ELSEWHERE: only one of the two addresses is the principal's quiet first one, so the other is
    a new source (the first address is claimed in the database at once, not learnt per worker)."""
    rig = await make_rig(store, hsm)
    async with fresh_store(store_url) as other_store:
        one = rig.detector
        two = AnomalyDetector(other_store, thresholds(), clock=rig.clock)
        await rig.sign(HOME)
        rig.world.pipeline.anomalies = two
        await rig.sign(ELSEWHERE)
        await two.flush()
        rig.world.pipeline.anomalies = one
        flags = await rig.flags()
        assert [(f["signal"], f["source"]) for f in flags] == [("new_source", ELSEWHERE)]
