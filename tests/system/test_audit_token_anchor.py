"""F-17 with the anchor file gone: the anchor is kept in the token too (a CKO_DATA object), so restoring
an earlier database and deleting ``audit-anchor.json`` with it is still caught at start, through a
running server with the real token, on SQLite and PostgreSQL. An acknowledgement moves the token's
anchor to the database as it is, and the next start is clean.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from tests.service_harness import Installation, Server, grant, make_key, make_service
from tests.system.test_audit_tamper import FAST, anchored, checkpoint_at_least, grow, installation, sql

__all__ = ["installation"]  # the SQLite/PostgreSQL fixture, shared with the tamper tests


def test_restoring_the_database_and_deleting_the_anchor_file_is_still_caught(
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
    grow(server, 10, "b")
    second = checkpoint_at_least(server, first["size"] + 10)
    anchored(installation, second["size"])
    server.stop()

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
    (installation.data_dir / "audit-anchor.json").unlink()

    server = launch(installation, env=FAST)
    status, _, body = server.call("GET", "/v1/audit/rollback", token=admin)
    assert (status, body["detected"], body["code"]) == (200, True, "truncated"), body
    assert body["anchor_size"] >= second["size"]
    assert "behind the token" in server.log_text()
    token = relayer["credentials"]["access_token"]
    message = {"message": "hello", "encoding": "utf8"}
    status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/message", message, token=token)
    assert (status, body["code"]) == (503, "rollback_detected"), body
    status, _, body = server.call("POST", "/v1/audit/rollback/acknowledge", token=admin)
    assert (status, body["was"]) == (200, "truncated"), body
    grow(server, 6, "c")
    third = checkpoint_at_least(server, first["size"] + 6)
    anchored(installation, third["size"])
    server.stop()

    # Acknowledged: the token's anchor follows the database again, and a plain restart is clean.
    server = launch(installation, env=FAST)
    status, _, body = server.call("GET", "/v1/audit/rollback", token=admin)
    assert (status, body["detected"]) == (200, False), body
    status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/message", message, token=token)
    assert status == 200, body
