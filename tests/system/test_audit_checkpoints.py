"""Signed audit checkpoints through a running server, on SQLite and PostgreSQL, with the real token.

The note is parsed by hand here (C2SP tlog-checkpoint + signed-note) and its Ed25519 signature checked
with ``cryptography`` directly, not through the service's own verifier; the root is recomputed from the
exported events with a naive RFC 6962 implementation, and the proofs the API serves are checked with
both. Checkpoints are made every few events and a fraction of a second, so they appear while the test
waits (with a deadline) for the size it needs.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from signer.audit_tree import verify_consistency, verify_inclusion
from tests.service_harness import Installation, Server, init_installation, make_service
from tests.system.support import export_audit, wait_until

FAST = {
    "SIGNER_AUDIT_CHECKPOINT_EVERY_EVENTS": "4",
    "SIGNER_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "0.2",
    "SIGNER_AUDIT_CHECKPOINT_ORIGIN": "test.example/audit",
}


def _mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def hand_verify(note: str, verifier_key: str) -> tuple[str, int, bytes]:
    """Parse and verify a checkpoint note by the C2SP text alone; (origin, size, root)."""
    name, key_hash, key_b64 = verifier_key.split("+", 2)
    raw_key = base64.b64decode(key_b64)
    assert raw_key[0] == 0x01 and len(raw_key) == 33  # Ed25519
    assert hashlib.sha256(name.encode() + b"\n" + raw_key).digest()[:4].hex() == key_hash
    body, sep, signatures = note.partition("\n\n")
    assert sep and signatures.endswith("\n")
    body += "\n"
    lines = body.split("\n")
    origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2])
    assert lines[3:] == [""] and len(root) == 32
    (line,) = signatures[:-1].split("\n")
    assert line.startswith("\u2014 ")
    signer_name, blob = line[2:].split(" ")
    assert signer_name == name == origin
    sig = base64.b64decode(blob)
    assert sig[:4].hex() == key_hash
    Ed25519PublicKey.from_public_bytes(raw_key[1:]).verify(sig[4:], body.encode())  # raises if bad
    return origin, size, root


def _events(server: Server, count: int, tag: str) -> None:
    for n in range(count):
        make_service(server, f"svc-{tag}-{n}")


def _checkpoint_at_least(server: Server, size: int, token: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        status, _, body = server.call("GET", "/v1/audit/checkpoint", token=token)
        return body if status == 200 and body["size"] >= size else None

    return wait_until(ready, 30, f"a checkpoint of at least {size} events")


@pytest.fixture(params=["sqlite", "postgresql"])
def installation(request: pytest.FixtureRequest, tmp_path: Path) -> Installation:
    if request.param == "sqlite":
        return init_installation(tmp_path / "data")
    url = request.getfixturevalue("pg_url")
    return init_installation(tmp_path / "data", url)


def test_checkpoints_are_signed_notes_over_the_rfc6962_root_with_working_proofs(
    installation: Installation, launch: Callable[..., Server]
) -> None:
    server = launch(installation, env=FAST)
    admin = installation.admin_token
    status, _, key = server.call("GET", "/v1/audit/public-key", token=admin)
    assert status == 200, key
    assert key["origin"] == "test.example/audit" and key["algorithm"] == "ed25519"

    _events(server, 6, "a")
    first = _checkpoint_at_least(server, 6, admin)
    origin, size1, root1 = hand_verify(first["note"], key["verifier_key"])
    assert (origin, size1, base64.b64encode(root1).decode()) == (key["origin"], first["size"], first["root"])

    # The root is the RFC 6962 root over the exported events' canonical bytes, seq 1..size.
    lines = export_audit(server)
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records[:size1]] == list(range(1, size1 + 1))
    leaves = [r["event"].encode() for r in records]
    assert _mth(leaves[:size1]) == root1

    # Inclusion of every event of the first checkpoint.
    for seq in range(1, size1 + 1):
        status, _, proof = server.call(
            "GET", f"/v1/audit/proofs/inclusion?seq={seq}&size={size1}", token=admin
        )
        assert status == 200, proof
        leaf = hashlib.sha256(b"\x00" + leaves[seq - 1]).digest()
        assert base64.b64decode(proof["leaf_hash"]) == leaf
        path = [base64.b64decode(p) for p in proof["proof"]]
        assert verify_inclusion(seq - 1, size1, leaf, path, root1)
        assert proof["checkpoint"] == first["note"]

    # The log grows; a later checkpoint is consistent with the one the auditor holds.
    _events(server, 9, "b")
    second = _checkpoint_at_least(server, size1 + 9, admin)
    _, size2, root2 = hand_verify(second["note"], key["verifier_key"])
    status, _, consistency = server.call("GET", f"/v1/audit/proofs/consistency?first={size1}", token=admin)
    assert status == 200, consistency
    assert consistency["second"] >= size2
    status, _, consistency = server.call(
        "GET", f"/v1/audit/proofs/consistency?first={size1}&second={size2}", token=admin
    )
    assert status == 200, consistency
    assert consistency["first_checkpoint"] == first["note"]
    assert consistency["second_checkpoint"] == second["note"]
    path = [base64.b64decode(p) for p in consistency["proof"]]
    assert verify_consistency(size1, size2, root1, root2, path)
    # A rewritten older history does not pass with the same proof.
    rewritten = list(leaves[:size1])
    rewritten[0] = rewritten[0] + b" "
    assert not verify_consistency(size1, size2, _mth(rewritten), root2, path)
    # The older checkpoint is still served by its size.
    status, _, again = server.call("GET", f"/v1/audit/checkpoint?size={size1}", token=admin)
    assert status == 200 and again["note"] == first["note"]


def test_checkpoint_routes_refuse_the_wrong_role_and_sizes_not_yet_signed(
    own_installation: Installation, launch: Callable[..., Server]
) -> None:
    server = launch(own_installation, env=FAST)
    admin = own_installation.admin_token
    service = make_service(server, "relayer")["credentials"]["access_token"]
    status, _, key = server.call("GET", "/v1/audit/public-key", token=service)
    assert status == 200 and key["verifier_key"].startswith("test.example/audit+")
    for path in (
        "/v1/audit/checkpoint",
        "/v1/audit/proofs/inclusion?seq=1",
        "/v1/audit/proofs/consistency?first=1",
    ):
        status, _, body = server.call("GET", path, token=service)
        assert (status, body["code"]) == (403, "role_required"), path
    first = _checkpoint_at_least(server, 1, admin)
    beyond = first["size"] + 1000
    status, _, body = server.call("GET", f"/v1/audit/proofs/inclusion?seq=1&size={beyond}", token=admin)
    assert (status, body["code"]) == (404, "checkpoint_not_found")
    status, _, body = server.call("GET", "/v1/audit/proofs/inclusion", token=admin)
    assert (status, body["code"], body["field"]) == (400, "invalid_field", "seq")
    status, _, body = server.call("GET", f"/v1/audit/checkpoint?size={beyond}", token=admin)
    assert (status, body["code"]) == (404, "checkpoint_not_found")


def test_two_workers_sign_with_one_key_and_never_fork_the_tree(
    own_installation: Installation, launch: Callable[..., Server]
) -> None:
    server = launch(own_installation, env=FAST, workers=2)
    admin = own_installation.admin_token
    keys = set()
    for _ in range(6):  # the supervisor's socket hands connections to either worker
        status, _, key = server.call("GET", "/v1/audit/public-key", token=admin)
        assert status == 200
        keys.add(key["verifier_key"])
    assert len(keys) == 1, keys
    (verifier_key,) = keys
    notes = []
    for round_ in range(3):
        _events(server, 5, f"w{round_}")
        cp = _checkpoint_at_least(server, 5 * (round_ + 1), admin)
        notes.append(hand_verify(cp["note"], verifier_key))
    # Every later checkpoint extends every earlier one.
    for (_, m, root_m), (_, n, root_n) in itertools.pairwise(notes):
        if m == n:
            assert root_m == root_n
            continue
        status, _, proof = server.call(
            "GET", f"/v1/audit/proofs/consistency?first={m}&second={n}", token=admin
        )
        assert status == 200, proof
        assert verify_consistency(m, n, root_m, root_n, [base64.b64decode(p) for p in proof["proof"]])
