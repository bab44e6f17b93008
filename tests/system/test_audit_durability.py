"""The audit log under crashes and concurrency, through a running server with the real token, on SQLite
and PostgreSQL.

U-02 (and the audit half of F-10/F-11: the event is written before the answer, never after): a
signature answered 200 is followed at once by ``kill -9`` of the serving process; after a restart its
audit event (the answer's request id, ``allowed``) is in the log, and the chain verifies.

Many writers: two worker processes and twelve client threads signing at once; afterwards the export
verifies offline (chain, tree, every checkpoint's signature), every answered request has exactly one
event, and the seqs are gapless.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.service_harness import Installation, Server, grant, http, make_key, make_service
from tests.system.support import events, export_audit
from tests.system.test_audit_tamper import FAST, checkpoint_at_least, cli, installation, offline_verify
from tests.system.test_fault_recovery import SecretReader

__all__ = ["installation"]  # the SQLite/PostgreSQL fixture, shared with the tamper tests


def _signer(server: Server, name: str) -> tuple[str, str]:
    relayer = make_service(server, name)
    key = make_key(server, "ed25519", name)
    grant(server, relayer["principal"]["id"], key["id"], ["sign_message"])
    return relayer["credentials"]["access_token"], key["id"]


def test_an_answered_signature_is_audited_although_the_server_dies_right_after(
    installation: Installation, launch: Callable[..., Server]
) -> None:
    server = launch(installation)
    token, key_id = _signer(server, "killed")
    answered: list[str] = []
    for round_ in range(3):
        status, headers, body = server.call(
            "POST",
            f"/v1/keys/{key_id}/sign/message",
            {"message": f"last words {round_}", "encoding": "utf8"},
            token=token,
        )
        assert status == 200, body
        os.kill(server.process.pid, signal.SIGKILL)  # right after the answer: no clean shutdown
        server.process.wait(timeout=30)
        answered.append(headers["X-Request-Id"])
        server = launch(installation)
    found = {e["request_id"]: e for e in events(export_audit(server)) if e["request_id"] in answered}
    assert sorted(found) == sorted(answered)
    assert all(e["outcome"] == "allowed" and e["kind"].startswith("sign.") for e in found.values())


def test_an_answered_secret_read_is_audited_although_the_server_dies_right_after(
    installation: Installation, launch: Callable[..., Server]
) -> None:
    """U-02's other half: the value of a secret left in a 200, then ``kill -9``: its ``secret.fetch``
    event is in the log after the restart."""
    server = launch(installation)
    reader = SecretReader(server, "killed-reader")
    answered: list[str] = []
    for _ in range(3):
        status, headers, body = server.call(
            "POST", f"/v1/secrets/{reader.secret_id}/fetch", {"workload": "billing"}, reader.token
        )
        assert status == 200 and reader.value in json.dumps(body), body
        os.kill(server.process.pid, signal.SIGKILL)  # right after the answer: no clean shutdown
        server.process.wait(timeout=30)
        answered.append(headers["X-Request-Id"])
        server = launch(installation)
        reader.server = server
    found = {e["request_id"]: e for e in events(export_audit(server)) if e["request_id"] in answered}
    assert sorted(found) == sorted(answered)
    assert all(e["outcome"] == "allowed" and e["kind"] == "secret.fetch" for e in found.values())


def test_many_writers_in_two_processes_leave_one_verifying_chain_and_checkpoints(
    installation: Installation, launch: Callable[..., Server], tmp_path: Path
) -> None:
    server = launch(installation, env=FAST, workers=2)
    signers = [_signer(server, f"w{n}") for n in range(4)]

    def sign(n: int) -> tuple[int, str]:
        token, key_id = signers[n % len(signers)]
        status, headers, _ = http(
            "POST",
            f"{server.url}/v1/keys/{key_id}/sign/message",
            {"message": f"m{n}", "encoding": "utf8"},
            token,
        )
        return status, headers.get("X-Request-Id", "")

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(sign, range(240)))
    assert [s for s, _ in results] == [200] * 240
    lines = export_audit(server)
    seqs = [json.loads(line)["seq"] for line in lines]
    assert seqs == list(range(1, len(seqs) + 1))
    per_request: dict[str, int] = {}
    for event in events(lines):
        if event["kind"] == "sign.message":
            per_request[event["request_id"]] = per_request.get(event["request_id"], 0) + 1
    assert all(per_request.get(rid) == 1 for _, rid in results)
    checkpoint_at_least(server, len(seqs))
    key = json.loads(cli(installation, server, "audit", "public-key", "--json").stdout)["verifier_key"]
    held = tmp_path / "held.note"
    held.write_text(cli(installation, server, "audit", "checkpoint", "--note").stdout)
    export = tmp_path / "all.jsonl"
    done = cli(installation, server, "audit", "export", str(export))
    assert done.returncode == 0, done.stderr
    code, report, stderr = offline_verify(installation, export, key, held)
    assert code == 0 and report["ok"] and report["checkpoints_verified"] >= 1, report
    assert "invalid" not in stderr
