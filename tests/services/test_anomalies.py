"""Unusual access (issue 13), in process: the real pipeline, SoftHSM token and database (SQLite and
PostgreSQL), a detector clock the test sets and fixed source addresses. Each signal is produced by a scenario
made to produce it and is absent for its look-alike; an ``anomaly`` rule denies or sends to approvers,
and without one a signal changes no decision; each flag is one ``anomaly.detected`` audit event (and
one alerts webhook call, HMAC signed); known addresses survive a new detector (a restart).
"""

from __future__ import annotations

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
from signer.services.destinations import DestinationPolicy
from signer.store import Store
from tests.approvals.support import Person, World, make_world
from tests.dbfixtures import (  # noqa: F401
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


async def test_alerts_reach_the_webhook_signed(store: Store, hsm: Hsm) -> None:  # noqa: F811
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/alerts", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    transport = AiohttpTransport(DestinationPolicy.parse(["127.0.0.1/32"]))
    try:
        rig = await make_rig(store, hsm)
        secret = b"s" * 32
        rig.detector = AnomalyDetector(
            store,
            thresholds(),
            clock=rig.clock,
            alerts_url=f"http://127.0.0.1:{port}/alerts",
            alerts_secret=secret,
            transport=transport,
        )
        rig.world.pipeline.anomalies = rig.detector
        await rig.sign(HOME)
        await rig.sign(ELSEWHERE)
        await rig.detector.flush()
    finally:
        await transport.close()
        await runner.cleanup()
    assert len(received) == 1
    body, headers = received[0]
    alert = json.loads(body)
    assert alert["signal"] == "new_source" and alert["source"] == ELSEWHERE
    assert alert["principal_id"] == rig.service.id and alert["outcome"] == "allowed"
    expected = webhook_signature(secret, headers["X-Signer-Timestamp"], body)
    assert headers["X-Signer-Signature"] == expected
    assert rig.detector.alerts_failed == 0
