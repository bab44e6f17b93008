"""Secret versions and rotation through a running server and its real token, on SQLite and PostgreSQL
(issue 13): version states (staged, promoted, disabled, re-enabled, destroyed for good and audited as
such), reading a disabled or destroyed version (409 with a stable code), pins, check-and-set with
``If-Match`` (many concurrent writers, exactly one wins per version), the overlap ended by the server's
own sweep, ``signer exec --watch`` restarting only on a real change, and a canary scan.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.dbfixtures import asyncpg_dsn, private_pg_database, run_sync
from tests.service_harness import SIGNER, TREE, Server, init_installation, start_server
from tests.system.support import wait_until
from tests.system.test_secret_reads import approvers, detach, require_approval
from tests.system.test_secrets import World, canary

# Each worker sweeps this often: the overlap test waits on the server's own clock, never on a sleep.
SWEEP = "0.2"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def versions_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_versions"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("versions")) / "data", database_url)
        server = start_server(
            installation,
            env={"SIGNER_SECRET_MAX_VALUE_BYTES": "1024", "SIGNER_SECRET_SWEEP_INTERVAL_SECONDS": SWEEP},
        )
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def world(versions_server: Server) -> World:
    return World(versions_server, secrets.token_hex(4))


def _call(world: World, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any, dict]:
    status, hdrs, payload = world.server.call(
        method, path, body, world.admin, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )
    return status, payload, hdrs


def _audit(world: World) -> list[dict[str, Any]]:
    status, _, exported = world.server.call("GET", "/v1/audit/events?limit=10000", token=world.admin)
    assert status == 200
    events = []
    for line in exported.splitlines():
        record = json.loads(line)
        event = record["event"]
        events.append(json.loads(event) if isinstance(event, str) else event)
    return events


def _sql(server: Server, statement: str, *params: Any) -> list[Any]:
    """One statement on the server's own database, behind its back (to look at what is stored)."""
    pg_url = server.installation.env.get("SIGNER_DATABASE_URL")
    if pg_url is None:
        with sqlite3.connect(server.installation.data_dir / "signer.db") as db:
            return db.execute(statement.format(*["?"] * len(params)), params).fetchall()

    async def on_pg() -> list[Any]:
        connection = await asyncpg.connect(asyncpg_dsn(pg_url), timeout=10)
        try:
            marks = [f"${i}" for i in range(1, len(params) + 1)]
            return [tuple(row) for row in await connection.fetch(statement.format(*marks), *params)]
        finally:
            await connection.close()

    return run_sync(on_pg)


def test_states_staging_promotion_and_destroy(world: World) -> None:
    values = [canary() for _ in range(3)]
    made = world.create("api", fields={"K": values[0]})
    sid = made["id"]
    world.grant(world.service_id, secret_id=sid, operations=["read_value"])
    status, shown, hdrs = _call(world, "GET", f"/v1/secrets/{sid}")
    assert status == 200 and hdrs["ETag"] == f'"r{shown["revision"]}"'
    # Staged: the current version stays; the staged one is read by number only (to test it).
    status, staged, _ = _call(
        world, "POST", f"/v1/secrets/{sid}/versions", {"fields": {"K": values[1]}, "stage": True}
    )
    assert status == 201 and staged["current_version"] == 1, staged
    assert world.fetch(sid)[1]["values"] == {"K": values[0]}
    assert world.fetch(sid, version=2)[1]["values"] == {"K": values[1]}
    status, promoted, _ = _call(world, "POST", f"/v1/secrets/{sid}/versions/2/promote")
    assert status == 200 and promoted["current_version"] == 2
    assert world.fetch(sid)[1]["values"] == {"K": values[1]}
    status, again, _ = _call(world, "POST", f"/v1/secrets/{sid}/versions/2/promote")
    assert (status, again["code"]) == (409, "secret_version_not_staged")
    # The current version cannot be disabled or destroyed.
    status, body, _ = _call(world, "POST", f"/v1/secrets/{sid}/versions/2/disable", {})
    assert (status, body["code"]) == (409, "secret_version_current")
    # Disable, read (refused, stable code), re-enable, read.
    status, body, _ = _call(world, "POST", f"/v1/secrets/{sid}/versions/1/disable", {"reason": "rotated out"})
    assert status == 200, body
    status, body = world.fetch(sid, version=1)
    assert (status, body["code"]) == (409, "secret_version_disabled") and values[0] not in json.dumps(body)
    assert _call(world, "POST", f"/v1/secrets/{sid}/versions/1/enable", {})[0] == 200
    assert world.fetch(sid, version=1)[1]["values"] == {"K": values[0]}
    # Destroy: the wrapped key and sealed fields are erased in the row; it never opens again.
    status, body, _ = _call(world, "POST", f"/v1/secrets/{sid}/versions/1/destroy", {"reason": "leaked"})
    assert status == 200, body
    status, body = world.fetch(sid, version=1)
    assert (status, body["code"]) == (409, "secret_version_destroyed")
    status, body, _ = _call(world, "POST", f"/v1/secrets/{sid}/versions/1/enable", {})
    assert (status, body["code"]) == (409, "secret_version_state")
    rows = _sql(
        world.server, "SELECT wrapped_key, sealed_fields, state FROM secret_versions WHERE secret_id = {}"
        " AND version = {}", sid, 1,
    )  # fmt: skip
    assert len(rows) == 1 and bytes(rows[0][0]) == b"" and json.loads(rows[0][1]) == {}
    assert rows[0][2] == "destroyed"
    status, listed, _ = _call(world, "GET", f"/v1/secrets/{sid}/versions")
    assert [(v["version"], v["state"], v["reason"]) for v in listed["items"]] == [
        (1, "destroyed", "leaked"),
        (2, "current", "promoted"),
    ]
    assert listed["items"][0]["fields"] == [] and listed["items"][0]["state_changed_by"]
    destroyed = [e for e in _audit(world) if e["kind"] == "secret.version_destroyed"]
    assert any(e["resource"]["id"] == sid and e["wrapped_key_erased"] is True for e in destroyed)
    # A version that does not exist, and a bad path version.
    assert _call(world, "POST", f"/v1/secrets/{sid}/versions/9/disable", {})[1]["code"] == (
        "secret_version_not_found"
    )
    assert _call(world, "POST", f"/v1/secrets/{sid}/versions/0x1/disable", {})[0] in (400, 404)


def test_pins(world: World) -> None:
    first, second = canary(), canary()
    sid = world.create("pinned", fields={"K": first})["id"]
    world.grant(world.service_id, secret_id=sid, operations=["read_value"])
    _call(world, "POST", f"/v1/secrets/{sid}/versions", {"fields": {"K": second}})
    status, body, _ = _call(world, "PATCH", f"/v1/secrets/{sid}", {"pins": {"legacy-batch": 1}})
    assert status == 200 and body["pins"] == {"legacy-batch": 1}
    status, read = world.fetch(sid, workload="legacy-batch")
    assert status == 200 and read["version"] == 1 and read["values"] == {"K": first} and read["pinned"]
    assert world.fetch(sid, workload="billing-api")[1]["values"] == {"K": second}
    # A pinned version disabled since: its consumer is refused, never silently moved.
    assert _call(world, "POST", f"/v1/secrets/{sid}/versions/1/disable", {})[0] == 200
    status, body = world.fetch(sid, workload="legacy-batch")
    assert (status, body["code"]) == (409, "secret_version_disabled")
    status, body, _ = _call(world, "PATCH", f"/v1/secrets/{sid}", {"pins": {"x": 1}})
    assert (status, body["code"]) == (409, "secret_version_not_pinnable")


def test_an_approved_read_of_a_version_disabled_since_is_refused(world: World) -> None:
    first, second = canary(), canary()
    sid = world.create("approved-old", fields={"K": first})["id"]
    _call(world, "POST", f"/v1/secrets/{sid}/versions", {"fields": {"K": second}})
    world.grant(world.service_id, secret_id=sid, operations=["read_value"])
    group = f"vault-{world.org}"
    (approver,) = approvers(world, group)
    attachment = require_approval(world, group)
    status, pending = world.fetch(sid, version=1)
    assert status == 202, pending
    approval_id, digest = pending["approval"]["id"], pending["payload_digest"]
    status, voted = world.call("POST", f"/v1/approvals/{approval_id}/approve", {"digest": digest}, approver)
    assert status == 200 and voted["state"] == "approved", voted
    detach(world, attachment)
    assert _call(world, "POST", f"/v1/secrets/{sid}/versions/1/disable", {"reason": "revoked"})[0] == 200
    status, body = world.fetch(sid, approval_id=approval_id)
    assert (status, body["code"]) == (409, "secret_version_disabled") and first not in json.dumps(body)


def test_concurrent_check_and_set_one_winner(world: World) -> None:
    sid = world.create("cas", fields={"K": canary()})["id"]
    status, shown, hdrs = _call(world, "GET", f"/v1/secrets/{sid}")
    etag = hdrs["ETag"]
    writers = 8
    results: list[tuple[int, str | None]] = []
    start = threading.Barrier(writers)

    def write(i: int, path: str, method: str, body: dict[str, Any]) -> None:
        start.wait()
        status, payload, _ = _call(world, method, path, body, If_Match=etag)
        results.append((status, payload.get("code") if status >= 400 else None))

    def race(method: str, path: str, body_of: Any) -> list[tuple[int, str | None]]:
        results.clear()
        threads = [threading.Thread(target=write, args=(i, path, method, body_of(i))) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return sorted(results, key=lambda r: r[0])

    won = race("POST", f"/v1/secrets/{sid}/versions", lambda i: {"fields": {"K": canary()}})
    assert [r[0] for r in won].count(201) == 1, won
    assert all(r == (409, "if_match_failed") or r[0] == 201 for r in won), won
    status, shown, hdrs = _call(world, "GET", f"/v1/secrets/{sid}")
    assert shown["current_version"] == 2 and [v["version"] for v in shown["versions"]] == [1, 2]
    etag = hdrs["ETag"]
    won = race("PATCH", f"/v1/secrets/{sid}", lambda i: {"description": f"writer {i}"})
    assert [r[0] for r in won].count(200) == 1, won
    # By version number: the current version must still be the one named.
    status, body, _ = _call(
        world, "POST", f"/v1/secrets/{sid}/versions", {"fields": {"K": "x"}}, If_Match="1"
    )
    assert (status, body["code"]) == (409, "if_match_failed")
    status, body, _ = _call(world, "PATCH", f"/v1/secrets/{sid}", {"description": "y"}, If_Match="nonsense")
    assert (status, body["code"]) == (400, "invalid_if_match") and "nonsense" not in json.dumps(body)


def test_overlap_ends_by_the_servers_own_sweep(world: World) -> None:
    first, second = canary(), canary()
    sid = world.create("overlap", fields={"K": first})["id"]
    world.grant(world.service_id, secret_id=sid, operations=["read_value"])
    assert _call(world, "PATCH", f"/v1/secrets/{sid}", {"overlap_seconds": 2})[0] == 200
    _call(world, "POST", f"/v1/secrets/{sid}/versions", {"fields": {"K": second}})
    status, read = world.fetch(sid, version=1)
    # Still readable in its overlap, and the consumer is told until when.
    assert status == 200 and read["values"] == {"K": first} and read["readable_until"], read
    wait_until(
        lambda: world.fetch(sid, version=1)[1].get("code") == "secret_version_disabled",
        30,
        "the overlap to end",
    )
    assert world.fetch(sid)[1]["values"] == {"K": second}
    ended = [
        e for e in _audit(world) if e["kind"] == "secret.version_disabled" and e["resource"]["id"] == sid
    ]
    assert len(ended) == 1 and ended[0]["reason"] == "overlap_ended" and ended[0]["actor"] is None


def test_exec_watch_restarts_only_on_a_real_change(world: World, tmp_path: Path) -> None:
    first, second = canary(), canary()
    sid = world.create("watched", fields={"K": first})["id"]
    world.grant(world.service_id, secret_id=sid, operations=["read_value"])
    starts = tmp_path / "starts"
    program = (
        "import hashlib, os, signal, sys\n"
        f"with open({str(starts)!r}, 'a') as f:\n"
        "    f.write(hashlib.sha256(os.environ['V'].encode()).hexdigest() + '\\n')\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    token_file = tmp_path / "token"
    token_file.write_text(world.service + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNER_")}
    env.update(SIGNER_SERVER=world.server.url, SIGNER_TOKEN_FILE=str(token_file), HOME=str(tmp_path))
    watcher = subprocess.Popen(
        [*SIGNER, "exec", "--watch", "--interval", "0.2", "--secret", f"V={sid}#K", "--", sys.executable,
         "-c", program],
        env=env, cwd=TREE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def lines() -> list[str]:
            return starts.read_text().splitlines() if starts.exists() else []

        def fetches() -> int:
            return sum(
                1
                for e in _audit(world)
                if e["kind"] == "secret.fetch" and e.get("resource", {}).get("id") == sid
            )

        digest = [hashlib.sha256(v.encode()).hexdigest() for v in (first, second)]
        wait_until(lambda: lines() == [digest[0]], 30, "the command to start")
        # Polls that find the same value (and a metadata change) restart nothing.
        seen = fetches()
        assert _call(world, "PATCH", f"/v1/secrets/{sid}", {"description": "changed"})[0] == 200
        wait_until(lambda: fetches() >= seen + 5, 30, "five more polls")
        assert lines() == [digest[0]]
        # A new value: restarted once, with it.
        _call(world, "POST", f"/v1/secrets/{sid}/versions", {"fields": {"K": second}})
        wait_until(lambda: lines() == digest, 30, "the restart with the new value")
        seen = fetches()
        wait_until(lambda: fetches() >= seen + 5, 30, "five more polls")
        assert lines() == digest
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 0, err
        for text in (out.decode(), err.decode()):
            assert first not in text and second not in text
        assert err.decode().count("restarting") == 1
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def test_exec_watch_signals_only_on_a_real_change(world: World, tmp_path: Path) -> None:
    """``--signal HUP``: the command is never restarted; it gets one SIGHUP per real change of a value
    (none for a poll that finds the same value or for a metadata change)."""
    sid = world.create("signalled", fields={"K": canary()})["id"]
    world.grant(world.service_id, secret_id=sid, operations=["read_value"])
    marks = tmp_path / "marks"
    program = (
        "import signal, sys\n"
        f"def mark(text):\n    open({str(marks)!r}, 'a').write(text + '\\n')\n"
        "signal.signal(signal.SIGHUP, lambda *a: mark('hup'))\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "mark('start')\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    token_file = tmp_path / "token"
    token_file.write_text(world.service + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNER_")}
    env.update(SIGNER_SERVER=world.server.url, SIGNER_TOKEN_FILE=str(token_file), HOME=str(tmp_path))
    watcher = subprocess.Popen(
        [*SIGNER, "exec", "--watch", "--interval", "0.2", "--signal", "HUP", "--secret", f"V={sid}#K", "--",
         sys.executable, "-c", program],
        env=env, cwd=TREE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def lines() -> list[str]:
            return marks.read_text().splitlines() if marks.exists() else []

        def fetches() -> int:
            return sum(
                1
                for e in _audit(world)
                if e["kind"] == "secret.fetch" and e.get("resource", {}).get("id") == sid
            )

        wait_until(lambda: lines() == ["start"], 30, "the command to start")
        seen = fetches()
        assert _call(world, "PATCH", f"/v1/secrets/{sid}", {"description": "changed"})[0] == 200
        wait_until(lambda: fetches() >= seen + 5, 30, "five more polls")
        assert lines() == ["start"]
        _call(world, "POST", f"/v1/secrets/{sid}/versions", {"fields": {"K": canary()}})
        wait_until(lambda: lines() == ["start", "hup"], 30, "the signal for the new value")
        seen = fetches()
        wait_until(lambda: fetches() >= seen + 5, 30, "five more polls")
        assert lines() == ["start", "hup"]  # signalled once, never restarted
        watcher.send_signal(signal.SIGTERM)
        _, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 0, err
        assert "restarting" not in err.decode()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def test_canary_scan(versions_server: Server, world: World) -> None:
    values = [canary() for _ in range(3)]
    sid = world.create("canary-v", fields={"K": values[0]})["id"]
    world.grant(world.service_id, secret_id=sid, operations=["read_value"])
    _call(world, "POST", f"/v1/secrets/{sid}/versions", {"fields": {"K": values[1]}, "stage": True})
    _call(world, "POST", f"/v1/secrets/{sid}/versions/2/promote")
    _call(world, "POST", f"/v1/secrets/{sid}/versions", {"fields": {"K": values[2]}}, If_Match='"r1"')
    _call(world, "POST", f"/v1/secrets/{sid}/versions/1/destroy", {"reason": "done"})
    errors = [world.fetch(sid, version=1), world.fetch(sid, version=3)]
    status, _, exported = versions_server.call("GET", "/v1/audit/events?limit=10000", token=world.admin)
    assert status == 200 and "secret.version_destroyed" in exported
    haystacks = {"errors": json.dumps(errors), "audit": exported, "log": versions_server.log_text()}
    for where, text in haystacks.items():
        for value in values:
            assert value not in text, f"a value leaked into {where}"
