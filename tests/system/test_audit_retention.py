"""Retention through a running server with the real token, on SQLite and PostgreSQL: the oldest events
are archived with their checkpoints (``signer audit archive``), the archive verifies on its own, a prune
is refused without a recorded archive, and after the prune what remains still verifies offline (from the
boundary's edge, and against the boundary's checkpoint held from the archive), proofs about later
events still work, the checkpoints go on, a restart finds no rollback, and a second archive starts
where the first prune left the log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from tests.service_harness import Installation, Server
from tests.system.test_audit_tamper import FAST, checkpoint_at_least, cli, grow, installation, offline_verify

__all__ = ["installation"]  # the SQLite/PostgreSQL fixture, shared with the tamper tests


def _verify(installation: Installation, server: Server, path: Path, key: str, *extra: str) -> dict:
    done = cli(installation, server, "audit", "verify", str(path), "--public-key", key, *extra)
    assert done.stdout, done.stderr
    return {"code": done.returncode, **json.loads(done.stdout)}


def test_archive_prune_and_what_remains_still_verifies(
    installation: Installation, launch: Callable[..., Server], tmp_path: Path
) -> None:
    admin = installation.admin_token
    server = launch(installation, env=FAST)
    grow(server, 30, "a")
    checkpoint_at_least(server, 30)
    done = cli(installation, server, "audit", "public-key", "--json")
    key = json.loads(done.stdout)["verifier_key"]

    # Nothing can be pruned without an archive made here.
    done = cli(installation, server, "audit", "prune", "--before", "20", "--archive-digest", "ab" * 32)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "archive_not_found" in done.stdout + done.stderr

    archive = tmp_path / "archive-1.jsonl"
    done = cli(installation, server, "audit", "archive", "--before", "25", "--out", str(archive), "--json")
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    through = made["through_seq"]
    assert made["first_seq"] == 1 and 1 <= through <= 24, made
    assert made["archive_digest"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    lines = archive.read_text().splitlines()
    boundary_note = json.loads(lines[-1])["checkpoint"]
    assert int(boundary_note.split("\n")[1]) == through
    report = _verify(installation, server, archive, key, "--require-anchored")
    assert report["code"] == 0 and report["ok"] and report["checked"] == through, report

    # A digest of other bytes names no archive; one that stops short of before_seq... is refused too.
    done = cli(
        installation,
        server,
        "audit",
        "prune",
        "--before",
        str(through + 1),
        "--archive-digest",
        hashlib.sha256(archive.read_bytes() + b"\n").hexdigest(),
    )
    assert done.returncode == 5, done.stdout + done.stderr
    done = cli(
        installation,
        server,
        "audit",
        "prune",
        "--before",
        str(through),
        "--archive-digest",
        made["archive_digest"],
        "--json",
    )
    assert done.returncode == 7 and "archive_mismatch" in done.stdout, done.stdout + done.stderr

    done = cli(
        installation,
        server,
        "audit",
        "prune",
        "--before",
        str(through + 1),
        "--archive-digest",
        made["archive_digest"],
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pruned = json.loads(done.stdout)
    assert pruned["pruned_through"] == through and pruned["events_deleted"] == through, pruned
    status, _, page = server.call("GET", "/v1/audit/events?after=0&limit=5", token=admin)
    assert status == 200 and json.loads(page.splitlines()[0])["seq"] == through + 1

    # The log goes on; what remains verifies from the boundary's edge, also against the held boundary.
    grow(server, 20, "b")
    later = checkpoint_at_least(server, through + 25)
    held = tmp_path / "boundary.note"
    held.write_text(boundary_note)
    rest = tmp_path / "rest.jsonl"
    done = cli(installation, server, "audit", "export", str(rest), "--checkpoint", str(held), "--json")
    assert done.returncode == 0, done.stderr
    assert "archived and pruned" in done.stderr
    assert json.loads(rest.read_text().splitlines()[0])["tree_start"]["size"] == through
    code, report, _ = offline_verify(installation, rest, key, held)
    assert code == 0 and report["ok"] and report["held_checkpoint"] == through, report
    assert report["checkpoints_verified"] >= 1
    # Tampering with what remains is still caught.
    bad = tmp_path / "bad.jsonl"
    bad_lines = rest.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(bad_lines) if '"seq":' in line and "hmac" not in line) + 2
    bad_lines[index] = bad_lines[index].replace('"outcome\\":\\"allowed', '"outcome\\":\\"failed')
    bad.write_text("".join(bad_lines))
    code, report, _ = offline_verify(installation, bad, key, held)
    assert code == 1 and not report["ok"], report
    status, _, proof = server.call(
        "GET", f"/v1/audit/proofs/inclusion?seq={through + 1}&size={later['size']}", token=admin
    )
    assert status == 200, proof
    status, _, proof = server.call(
        "GET", f"/v1/audit/proofs/consistency?first={through}&second={later['size']}", token=admin
    )
    assert status == 200, proof
    server.stop()

    # A restart finds no rollback; a second archive starts at the stored log's start, with its edge.
    server = launch(installation, env=FAST)
    status, _, body = server.call("GET", "/v1/audit/rollback", token=admin)
    assert (status, body["detected"]) == (200, False), body
    second = tmp_path / "archive-2.jsonl"
    done = cli(
        installation,
        server,
        "audit",
        "archive",
        "--before",
        str(later["size"] + 1),
        "--out",
        str(second),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    made2 = json.loads(done.stdout)
    assert made2["first_seq"] == through + 1 and made2["through_seq"] == later["size"], made2
    assert json.loads(second.read_text().splitlines()[0])["tree_start"]["size"] == through
    code, report, _ = offline_verify(installation, second, key, held)
    assert code == 0 and report["ok"], report
    done = cli(
        installation,
        server,
        "audit",
        "prune",
        "--before",
        str(later["size"] + 1),
        "--archive-digest",
        made2["archive_digest"],
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    status, _, events = server.call("GET", "/v1/audit/events?after=0&limit=10000", token=admin)
    kinds = [json.loads(json.loads(line)["event"])["kind"] for line in events.splitlines()]
    assert "audit.pruned" in kinds and "audit.archived" in kinds


def test_ledger_rows_older_than_every_window_are_pruned_and_budgets_kept(
    installation: Installation, launch: Callable[..., Server]
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

    from signer.store.schema import UTCDateTime
    from tests.system.test_audit_tamper import sql

    def at(days: int) -> object:
        moment = datetime.now(UTC) - timedelta(days=days)
        sqlite = "SIGNER_DATABASE_URL" not in installation.env
        return UTCDateTime().process_bind_param(moment, sqlite_dialect()) if sqlite else moment

    rows = [
        ("policy:r1:spend:native", at(400)),  # older than any window: pruned
        ("policy:r1:spend:native", at(300)),  # a 366-day window still sees it
        ("grant:g1:uses", at(900)),  # a grant budget counts for the grant's life
    ]
    sql(
        installation,
        *[
            (
                "INSERT INTO ledger (limit_key, amount, window_start) VALUES (:k, '1', :w)",
                {"k": key, "w": start},
            )
            for key, start in rows
        ],
    )
    server = launch(installation)
    done = cli(installation, server, "audit", "prune-ledger", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["rows_deleted"] == 1
    (left,) = sql(installation, ("SELECT limit_key FROM ledger ORDER BY limit_key", {}))
    assert sorted(r[0] for r in left) == ["grant:g1:uses", "policy:r1:spend:native"]
    status, _, text = server.call(
        "GET", "/v1/audit/events?after=0&limit=10000", token=installation.admin_token
    )
    assert status == 200 and '"kind":"ledger.pruned"' in text
