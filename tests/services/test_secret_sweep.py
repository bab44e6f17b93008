"""The secret sweep in process with a clock the test moves: overlaps end exactly when due, generated
secrets rotate when their interval elapses, provided ones are reported overdue once, and two sweepers
running at once act once (real SoftHSM token, real SQLite and PostgreSQL, the real secrets service)."""

from __future__ import annotations

import asyncio
import json
import secrets as random
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from signer.errors import Conflict
from signer.hsm import Hsm
from signer.http.webhook_transport import AiohttpTransport
from signer.services.destinations import DestinationPolicy
from signer.services.secret_kind import Sealer
from signer.services.secret_versions import SecretVersionsService
from signer.services.secrets import SecretsService
from signer.services.webhooks import WebhookService
from signer.store import Store
from tests.approvals.support import World, make_world
from tests.dbfixtures import (  # noqa: F401
    pg_database_url,
    pg_server_url,
    pg_store_url,
    sqlite_store_url,
    sqlite_template,
    store,
    store_url,
)


class Setup:
    def __init__(self, world: World) -> None:
        self.world = world
        self.secrets = SecretsService(
            world.store, world.pipeline, Sealer(world.hsm), max_value_bytes=1024, clock=world.clock
        )
        self.sweepers = [
            SecretVersionsService(world.store, self.secrets, clock=world.clock) for _ in range(2)
        ]
        self.ctx = world.admin_person.ctx
        self.folder = f"org-{random.token_hex(4)}/app"

    async def grant(self) -> None:
        await self.world.admin.create_grant(
            self.ctx,
            principal_id=self.ctx.caller.principal_id,
            group=None,
            key_id=None,
            scope=self.folder.split("/")[0],
            operations=["create", "update", "delete", "read_metadata", "read_value", "list"],
            expires_at=None,
        )

    async def sweep_both(self) -> dict[str, int]:
        done = await asyncio.gather(*(s.sweep() for s in self.sweepers))
        return {k: sum(d[k] for d in done) for k in done[0]}

    async def events(self, kind: str, secret_id: str) -> list[dict[str, Any]]:
        async with self.world.store.read() as reader:
            records = await reader.audit.events(0, 100000)
        found = [json.loads(r.event) for r in records if r.kind == kind]
        return [e for e in found if e.get("resource", {}).get("id") == secret_id]


@pytest.fixture
async def setup(store: Store, hsm: Hsm) -> AsyncIterator[Setup]:  # noqa: F811
    made = Setup(await make_world(store, hsm))
    await made.grant()
    yield made
    await made.secrets.close()


async def test_overlap_ends_when_due_and_once(setup: Setup) -> None:
    first, second = "canary-" + random.token_hex(8), "canary-" + random.token_hex(8)
    created = await setup.secrets.create(
        setup.ctx, folder=setup.folder, name="db", owner="group:ops", fields={"password": first}
    )
    sid = created["id"]
    await setup.secrets.update(setup.ctx, sid, {"overlap_seconds": 3600})
    await setup.secrets.set_value(setup.ctx, sid, fields={"password": second})
    read = await setup.secrets.fetch(setup.ctx, sid, version=1)
    assert read["values"] == {"password": first} and read["readable_until"]
    # Not yet: one second before the overlap ends, nothing happens.
    setup.world.clock.jump(seconds=3599)
    assert (await setup.sweep_both())["disabled"] == 0
    setup.world.clock.jump(seconds=2)
    assert (await setup.sweep_both())["disabled"] == 1  # two sweepers, one disable
    assert (await setup.sweep_both())["disabled"] == 0
    with pytest.raises(Conflict) as refused:
        await setup.secrets.fetch(setup.ctx, sid, version=1)
    assert refused.value.code == "secret_version_disabled" and first not in str(refused.value)
    assert (await setup.secrets.fetch(setup.ctx, sid))["values"] == {"password": second}
    events = await setup.events("secret.version_disabled", sid)
    assert len(events) == 1 and events[0]["reason"] == "overlap_ended" and events[0]["actor"] is None
    listed = await setup.sweepers[0].list(setup.ctx, sid)
    assert [(v["version"], v["state"], v["reason"]) for v in listed["items"]] == [
        (1, "disabled", "overlap_ended"),
        (2, "current", None),
    ]


async def test_generated_rotates_on_interval_and_provided_is_overdue_once(setup: Setup) -> None:
    generated = await setup.secrets.create(
        setup.ctx,
        folder=setup.folder,
        name="token",
        owner="group:ops",
        generate={"kind": "hex", "bytes": 16},
    )
    provided = await setup.secrets.create(
        setup.ctx,
        folder=setup.folder,
        name="api",
        owner="group:ops",
        fields={"k": "v-" + random.token_hex(8)},
    )
    for made in (generated, provided):
        await setup.secrets.update(setup.ctx, made["id"], {"rotation_interval_seconds": 86400})
    before = (await setup.secrets.fetch(setup.ctx, generated["id"]))["values"]
    assert (await setup.sweep_both()) == {"disabled": 0, "rotated": 0, "overdue": 0}
    setup.world.clock.jump(seconds=86401)
    done = await setup.sweep_both()
    assert done["rotated"] == 1 and done["overdue"] == 1, done
    assert (await setup.sweep_both()) == {"disabled": 0, "rotated": 0, "overdue": 0}
    after = await setup.secrets.fetch(setup.ctx, generated["id"])
    assert after["version"] == 2 and after["values"] != before and len(after["values"]["value"]) == 32
    rotations = await setup.events("secret.rotate", generated["id"])
    assert [e.get("scheduled") for e in rotations] == [True]
    overdue = await setup.events("secret.rotation_overdue", provided["id"])
    assert len(overdue) == 1 and overdue[0]["owner"] == "group:ops"
    # A manual rotation moves the due date on; when that elapses the owner is told again.
    await setup.secrets.set_value(setup.ctx, provided["id"], fields={"k": "v-" + random.token_hex(8)})
    setup.world.clock.jump(seconds=86401)
    done = await setup.sweep_both()
    assert done["overdue"] == 1 and done["rotated"] == 1
    assert len(await setup.events("secret.rotation_overdue", provided["id"])) == 2


async def test_the_owner_groups_webhook_is_told(setup: Setup) -> None:
    """An overlap's end and an overdue rotation are queued for the owner group's webhook, in the same
    transaction as their audit event; never with a value."""
    world = setup.world
    transport = AiohttpTransport(DestinationPolicy.parse(["127.0.0.0/8"]))
    try:
        hooks = WebhookService(
            world.store,
            world.auth,
            transport,
            clock=world.clock,
            destinations=DestinationPolicy.parse(["127.0.0.0/8"]),
        )
        group = f"owners-{random.token_hex(3)}"
        await hooks.set_webhook(setup.ctx, group, "https://127.0.0.1:9/hook")
        sweeper = SecretVersionsService(world.store, setup.secrets, clock=world.clock, webhooks=hooks)
        value = "canary-" + random.token_hex(8)
        made = await setup.secrets.create(
            setup.ctx, folder=setup.folder, name="hooked", owner=f"group:{group}", fields={"k": value}
        )
        await setup.secrets.update(
            setup.ctx, made["id"], {"overlap_seconds": 60, "rotation_interval_seconds": 3600}
        )
        await setup.secrets.set_value(setup.ctx, made["id"], fields={"k": value + "-2"})
        world.clock.jump(seconds=3601)
        assert await sweeper.sweep() == {"disabled": 1, "rotated": 0, "overdue": 1}
        async with world.store.read() as reader:
            due = await reader.outbox.due(world.clock() + timedelta(days=1))
        sent = [r.event for r in due if r.group_name == group]
        assert sorted(e["type"] for e in sent) == ["secret.rotation_overdue", "secret.version_disabled"]
        assert all(e["secret_id"] == made["id"] for e in sent) and value not in json.dumps(sent)
    finally:
        await transport.close()
