"""Tampering with the audit log, each way, caught by the offline verifier (CLI) or the start-up check,
through a running server with the real token, on SQLite and PostgreSQL (U-04, F-17).

The export is taken with ``signer audit export`` and checked with ``signer audit verify --public-key
--checkpoint`` against a checkpoint the auditor fetched earlier; the database is tampered with by SQL
while the server is stopped (or, on SQLite, by copying an older database file back), and the restarted
server must refuse high-risk operations until an admin acknowledges.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from signer.audit import GENESIS_HASH, chain_hash
from signer.config import Settings
from tests.service_harness import (
    SIGNER,
    TREE,
    Installation,
    Server,
    grant,
    init_installation,
    make_key,
    make_service,
)
from tests.system.support import wait_until

FAST = {
    "SIGNER_AUDIT_CHECKPOINT_EVERY_EVENTS": "4",
    "SIGNER_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "0.2",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def installation(request: pytest.FixtureRequest, tmp_path: Path) -> Installation:
    if request.param == "sqlite":
        return init_installation(tmp_path / "data")
    return init_installation(tmp_path / "data", request.getfixturevalue("pg_url"))


def db_url(installation: Installation) -> str:
    return Settings(
        data_dir=installation.data_dir, database_url=installation.env.get("SIGNER_DATABASE_URL", "")
    ).resolved_database_url


def sql(installation: Installation, *statements: tuple[str, dict[str, Any]]) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_async_engine(db_url(installation), poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                results = []
                for statement, params in statements:
                    result = await conn.execute(text(statement), params)
                    results.append(result.fetchall() if result.returns_rows else None)
                return results
        finally:
            await engine.dispose()

    return asyncio.run(run())


def cli(installation: Installation, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**installation.env, "SIGNER_SERVER": server.url, "SIGNER_TOKEN": installation.admin_token}
    return subprocess.run(
        [*SIGNER, *args], env=env, cwd=TREE, capture_output=True, text=True, timeout=120, check=False
    )


def offline_verify(
    installation: Installation, export: Path, key: str, held: Path
) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [*SIGNER, "audit", "verify", str(export), "--public-key", key, "--checkpoint", str(held)],
        env=installation.env,
        cwd=TREE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, json.loads(done.stdout), done.stderr


def grow(server: Server, count: int, tag: str) -> None:
    for n in range(count):
        make_service(server, f"t-{tag}-{n}")


def checkpoint_at_least(server: Server, size: int) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, _, body = server.call("GET", "/v1/audit/checkpoint", token=server.installation.admin_token)
        return body if status == 200 and body["size"] >= size else None

    return wait_until(ready, 30, f"a checkpoint of at least {size} events")


def anchored(installation: Installation, size: int) -> None:
    anchor = installation.data_dir / "audit-anchor.json"

    def ready() -> bool:
        return anchor.exists() and json.loads(anchor.read_text())["size"] >= size

    wait_until(ready, 30, f"the anchor to reach {size}")


def rehash_from(installation: Installation, seq: int, edit: Callable[[str], str]) -> None:
    """Rewrite event ``seq`` and recompute every hash after it, as an attacker with the database would."""
    (rows,) = sql(
        installation,
        ("SELECT seq, event, prev_hash FROM audit_events WHERE seq >= :s ORDER BY seq", {"s": seq}),
    )
    prev = rows[0][2]
    updates = []
    for row_seq, event, _ in rows:
        if row_seq == seq:
            event = edit(event)
        digest = chain_hash(prev, event.encode())
        updates.append(
            (
                "UPDATE audit_events SET event = :e, prev_hash = :p, hash = :h WHERE seq = :s",
                {"e": event, "p": prev, "h": digest, "s": row_seq},
            )
        )
        prev = digest
    updates.append(("UPDATE audit_head SET hash = :h WHERE id = 1", {"h": prev}))
    sql(installation, *updates)


def test_every_kind_of_tampering_with_an_export_is_named_by_the_cli(
    installation: Installation, launch: Callable[..., Server], tmp_path: Path
) -> None:
    server = launch(installation, env=FAST)
    grow(server, 10, "a")
    checkpoint_at_least(server, 10)
    held = tmp_path / "held.note"
    done = cli(installation, server, "audit", "checkpoint", "--note")
    assert done.returncode == 0, done.stderr
    held.write_text(done.stdout)
    held_size = int(done.stdout.split("\n")[1])
    done = cli(installation, server, "audit", "public-key", "--json")
    assert done.returncode == 0, done.stderr
    key = json.loads(done.stdout)["verifier_key"]
    grow(server, 10, "b")
    checkpoint_at_least(server, held_size + 10)

    export = tmp_path / "audit.jsonl"
    done = cli(installation, server, "audit", "export", str(export), "--verify", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["verified"] is True and summary["checkpoints"] >= 2, summary
    code, report, stderr = offline_verify(installation, export, key, held)
    assert code == 0 and report["ok"] and report["checkpoints_verified"] >= 2, report
    assert "valid (checkpoint" in stderr

    # A range export that starts after the held checkpoint carries the proof that it extends it.
    ranged = tmp_path / "range.jsonl"
    after = str(held_size + 2)
    done = cli(
        installation, server, "audit", "export", str(ranged), "--after", after, "--checkpoint", str(held)
    )
    assert done.returncode == 0, done.stderr
    code, report, _ = offline_verify(installation, ranged, key, held)
    assert code == 0 and report["ok"] and report["held_checkpoint"] == held_size, report

    lines = export.read_text().splitlines(keepends=True)
    events = [i for i, line in enumerate(lines) if '"seq"' in line]

    def variant(name: str, new_lines: list[str]) -> dict[str, Any]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(new_lines))
        code, report, stderr = offline_verify(installation, path, key, held)
        assert code == 1 and not report["ok"], (name, report)
        assert "invalid" in stderr, (name, stderr)
        return report

    edited = list(lines)
    record = json.loads(edited[events[4]])
    record["event"] = record["event"].replace('"outcome":"allowed"', '"outcome":"denied"')
    edited[events[4]] = json.dumps(record) + "\n"
    assert (variant("edit", edited)["what"], variant("edit", edited)["first_bad_seq"]) == ("edited", 5)

    removed = [line for i, line in enumerate(lines) if i != events[6]]
    assert (variant("delete", removed)["what"], variant("delete", removed)["first_bad_seq"]) == ("removed", 7)

    inserted = [*lines[: events[3] + 1], lines[events[3]], *lines[events[3] + 1 :]]
    report = variant("insert", inserted)
    assert report["what"] in ("reordered", "inserted") and report["first_bad_seq"] == 5

    swapped = list(lines)
    swapped[events[7]], swapped[events[8]] = swapped[events[8]], swapped[events[7]]
    report = variant("reorder", swapped)
    assert report["first_bad_seq"] == 8 and report["what"] in ("removed", "reordered")

    truncated = lines[: events[held_size - 3]]
    report = variant("truncate", truncated)
    assert (report["what"], report["first_bad_seq"]) == ("truncated", held_size - 2)

    # Rewrite-and-rehash: a consistent chain, but not the history the checkpoints signed.
    records, rewritten, prev = [], [], GENESIS_HASH
    for line in lines:
        item = json.loads(line)
        if "seq" in item:
            if item["seq"] == 3:
                item["event"] = item["event"].replace('"outcome":"allowed"', '"outcome":"denied"')
            item["prev_hash"] = prev
            item["hash"] = prev = chain_hash(prev, item["event"].encode())
            records.append(item)
        rewritten.append(json.dumps(item) + "\n")
    report = variant("rehash", rewritten)
    assert report["what"] == "rewritten", report


def test_a_database_rewritten_or_restored_to_an_earlier_state_is_caught_at_start(
    installation: Installation, launch: Callable[..., Server], tmp_path: Path
) -> None:
    admin = installation.admin_token
    server = launch(installation, env=FAST)
    relayer = make_service(server, "relayer")
    key = make_key(server, "ed25519", "k1")
    grant(server, relayer["principal"]["id"], key["id"], ["sign_message"])
    grow(server, 6, "a")
    first = checkpoint_at_least(server, 8)
    anchored(installation, first["size"])
    server.stop()

    snapshot = tmp_path / "snapshot"
    sqlite = "SIGNER_DATABASE_URL" not in installation.env
    if sqlite:
        snapshot.mkdir()
        for path in installation.data_dir.glob("signer.db*"):
            shutil.copy2(path, snapshot / path.name)
    server = launch(installation, env=FAST)
    status, _, body = server.call("GET", "/v1/audit/rollback", token=admin)
    assert (status, body["detected"]) == (200, False), body
    grow(server, 10, "b")
    second = checkpoint_at_least(server, first["size"] + 10)
    anchored(installation, second["size"])
    server.stop()

    # The database goes back to its earlier state: a copy of its files on SQLite, its tail and newer
    # checkpoints cut on PostgreSQL (what restoring yesterday's dump leaves).
    if sqlite:
        for path in installation.data_dir.glob("signer.db*"):
            path.unlink()
        for path in snapshot.iterdir():
            shutil.copy2(path, installation.data_dir / path.name)
    else:
        (rows,) = sql(installation, ("SELECT hash FROM audit_events WHERE seq = :s", {"s": first["size"]}))
        sql(
            installation,
            ("DELETE FROM audit_events WHERE seq > :s", {"s": first["size"]}),
            ("DELETE FROM audit_checkpoints WHERE size > :s", {"s": first["size"]}),
            ("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1", {"s": first["size"], "h": rows[0][0]}),
        )
    server = launch(installation, env=FAST)
    status, _, body = server.call("GET", "/v1/audit/rollback", token=admin)
    assert (status, body["detected"], body["code"]) == (200, True, "truncated"), body
    assert body["anchor_size"] == second["size"]
    assert '"audit rollback detected' in server.log_text()
    token = relayer["credentials"]["access_token"]
    message = {"message": "hello", "encoding": "utf8"}
    status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/message", message, token=token)
    assert (status, body["code"]) == (503, "rollback_detected"), body
    status, _, body = server.call(
        "POST",
        "/v1/grants",
        {"principal_id": relayer["principal"]["id"], "key_id": key["id"], "operations": ["sign_raw"]},
        token=admin,
    )
    assert (status, body["code"]) == (503, "rollback_detected"), body
    # The other ways to a signature or a value are latched too: EIP-7702, JSON-RPC, resolving references.
    authorization = {"chain_id": 1, "delegate": "0x" + "42" * 20, "nonce": 0}
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "personal_sign", "params": ["0x6869", key.get("address")]}
    for path, body in (
        (f"/v1/keys/{key['id']}/sign/authorization", authorization),
        ("/v1/rpc", rpc),
        ("/v1/secrets/resolve", {"references": ["secret://acme/db"]}),
    ):
        status, _, answer = server.call("POST", path, body, token=token)
        assert (status, answer["code"]) == (503, "rollback_detected"), (path, answer)
    # Reads go on; only an admin acknowledges, and that is audited.
    status, _, body = server.call("POST", "/v1/audit/rollback/acknowledge", token=token)
    assert status == 403, body
    status, _, body = server.call("POST", "/v1/audit/rollback/acknowledge", token=admin)
    assert (status, body) == (200, {"acknowledged": True, "was": "truncated"})
    status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/message", message, token=token)
    assert status == 200, body
    status, _, events = server.call("GET", "/v1/audit/events?after=0&limit=10000", token=admin)
    assert '"kind":"audit.rollback_acknowledged"' in events
    # The checkpoints go on from the database's state, and the anchor follows them again.
    grow(server, 6, "c")
    third = checkpoint_at_least(server, first["size"] + 8)
    anchored(installation, third["size"])
    server.stop()

    # Rewrite-and-rehash inside the database: the chain is consistent again, but event 2 is not what
    # was signed. Caught at the next start.
    rehash_from(installation, 2, lambda event: event.replace('"outcome":"allowed"', '"outcome":"failed"'))
    server = launch(installation, env=FAST)
    status, _, body = server.call("GET", "/v1/audit/rollback", token=admin)
    assert (status, body["detected"], body["code"]) == (200, True, "rewritten"), body
    status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/message", message, token=token)
    assert (status, body["code"]) == (503, "rollback_detected"), body


def test_an_acknowledgement_through_one_worker_releases_every_worker(
    own_installation: Installation, launch: Callable[..., Server]
) -> None:
    installation, admin = own_installation, own_installation.admin_token
    server = launch(installation, env=FAST)
    relayer = make_service(server, "relayer")
    key = make_key(server, "ed25519", "k1")
    grant(server, relayer["principal"]["id"], key["id"], ["sign_message"])
    grow(server, 8, "a")
    cp = checkpoint_at_least(server, 12)
    anchored(installation, cp["size"])
    server.stop()
    # The tail is cut (as a restore would): every worker finds it at start.
    (rows,) = sql(installation, ("SELECT hash FROM audit_events WHERE seq = :s", {"s": 5}))
    sql(
        installation,
        ("DELETE FROM audit_events WHERE seq > 5", {}),
        ("DELETE FROM audit_checkpoints", {}),
        ("UPDATE audit_head SET seq = 5, hash = :h WHERE id = 1", {"h": rows[0][0]}),
    )
    server = launch(installation, env=FAST, workers=2)
    token = relayer["credentials"]["access_token"]
    message = {"message": "hello", "encoding": "utf8"}
    for _ in range(4):
        status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/message", message, token=token)
        assert (status, body["code"]) == (503, "rollback_detected"), body
    status, _, body = server.call("POST", "/v1/audit/rollback/acknowledge", token=admin)
    assert status == 200 and body["was"] == "truncated", body
    for _ in range(8):  # new connections, handed to either worker
        status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/message", message, token=token)
        assert status == 200, body
