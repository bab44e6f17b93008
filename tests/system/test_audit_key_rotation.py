"""Audit-key rotation through a running server (two workers, SQLite and PostgreSQL, the real token).

Matrix row U-05: an export taken across a restart and across two key rotations verifies with
``signer audit verify`` holding only the FIRST public key, the verifier learning each new key from the
log (a rotation event covered by a checkpoint the old key signs and the new key co-signs). Signatures
on the notes are checked here with ``cryptography`` directly; the tampered exports (a forged rotation,
a checkpoint under an unendorsed key, a removed rotation event, a gap across the restart) each fail with
a named reason and exit 1; a malformed key is a usage error (exit 2). The rollback anchor and the
consistency proofs keep working across the rotations.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signer.audit import canonical_json
from signer.audit_tree import verify_consistency
from tests.service_harness import SIGNER, TREE, Installation, Server, init_installation, make_service
from tests.system.support import wait_until
from tests.system.test_audit_tamper import sql

ORIGIN = "rotation.test/audit"
FAST = {
    "SIGNER_AUDIT_CHECKPOINT_EVERY_EVENTS": "4",
    "SIGNER_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "0.2",
    "SIGNER_AUDIT_CHECKPOINT_ORIGIN": ORIGIN,
}


@pytest.fixture(params=["sqlite", "postgresql"])
def installation(request: pytest.FixtureRequest, tmp_path: Path) -> Installation:
    if request.param == "sqlite":
        return init_installation(tmp_path / "data")
    return init_installation(tmp_path / "data", request.getfixturevalue("pg_url"))


def cli(installation: Installation, server: Server | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(installation.env)
    if server is not None:
        env |= {"SIGNER_SERVER": server.url, "SIGNER_TOKEN": installation.admin_token}
    return subprocess.run(
        [*SIGNER, *args], env=env, cwd=TREE, capture_output=True, text=True, timeout=120, check=False
    )


def cli_json(installation: Installation, server: Server, *args: str) -> Any:
    done = cli(installation, server, *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


# -- an independent reading of the notes (C2SP signed-note, Ed25519 via cryptography) -----------------


def _key_parts(verifier_key: str) -> tuple[str, bytes, bytes]:
    name, key_hash, key_b64 = verifier_key.split("+", 2)
    raw = base64.b64decode(key_b64)
    assert raw[0] == 0x01 and len(raw) == 33
    kid = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert kid.hex() == key_hash
    return name, kid, raw[1:]


def signers(note: str) -> dict[bytes, bytes]:
    """key id -> signature, for every signature line of a note."""
    _, _, lines = note.partition("\n\n")
    out = {}
    for line in lines.splitlines():
        assert line.startswith("\u2014 ")
        blob = base64.b64decode(line[2:].split(" ")[1])
        out[blob[:4]] = blob[4:]
    return out


def signed_by(note: str, verifier_key: str) -> bool:
    _, kid, public = _key_parts(verifier_key)
    body = note.partition("\n\n")[0] + "\n"
    signature = signers(note).get(kid)
    if signature is None:
        return False
    Ed25519PublicKey.from_public_bytes(public).verify(signature, body.encode())  # raises if bad
    return True


def attacker_note(body: str, private: Ed25519PrivateKey) -> str:
    raw = b"\x01" + private.public_key().public_bytes_raw()
    kid = hashlib.sha256(ORIGIN.encode() + b"\n" + raw).digest()[:4]
    return f"{body}\n\u2014 {ORIGIN} {base64.b64encode(kid + private.sign(body.encode())).decode()}\n"


def attacker_key(private: Ed25519PrivateKey) -> str:
    raw = b"\x01" + private.public_key().public_bytes_raw()
    kid = hashlib.sha256(ORIGIN.encode() + b"\n" + raw).digest()[:4]
    return f"{ORIGIN}+{kid.hex()}+{base64.b64encode(raw).decode()}"


def _mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def rechain(lines: list[dict[str, Any]], sign: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """What an attacker with the database does after an edit: renumber, recompute the chain, and (with
    ``sign``) re-sign every checkpoint over the recomputed root with a key of their own."""
    out: list[dict[str, Any]] = []
    prev, events = "00" * 32, []
    for line in lines:
        if "checkpoint" in line:
            if sign is None:
                out.append(line)
            else:
                body = f"{ORIGIN}\n{len(events)}\n{base64.b64encode(_mth(events)).decode()}\n"
                out.append({"checkpoint": sign(body)})
            continue
        digest = hashlib.sha256(bytes.fromhex(prev) + line["event"].encode()).hexdigest()
        events.append(line["event"].encode())
        out.append({**line, "seq": len(events), "prev_hash": prev, "hash": digest})
        prev = digest
    return out


def verify(
    installation: Installation, tmp_path: Path, lines: list[dict[str, Any]], *keys: str
) -> tuple[int, Any]:
    path = tmp_path / f"export-{len(list(tmp_path.glob('export-*')))}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    args = [a for key in keys for a in ("--public-key", key)]
    done = cli(installation, None, "audit", "verify", str(path), *args)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, done.stdout + done.stderr


def grow(server: Server, count: int, tag: str) -> None:
    for n in range(count):
        make_service(server, f"svc-{tag}-{n}")


def head(server: Server) -> int:
    _, headers, _ = server.call("GET", "/v1/audit/events?limit=1", token=server.installation.admin_token)
    return int(headers["X-Audit-Head"])


def covering(server: Server, seq: int) -> dict[str, Any]:
    """The first checkpoint whose size reaches ``seq`` (signed at once by a rotation, or soon after)."""
    admin = server.installation.admin_token

    def found() -> dict[str, Any] | None:
        status, _, page = server.call("GET", f"/v1/audit/checkpoints?after={seq - 1}&limit=1", token=admin)
        return page["items"][0] if status == 200 and page["items"] else None

    return wait_until(found, 30, f"a checkpoint covering seq {seq}")


def rotate(installation: Installation, server: Server, old: str) -> tuple[str, int, dict[str, Any]]:
    rotated = cli_json(installation, server, "audit", "key", "rotate")
    assert rotated["rotated"] is True and rotated["old_key"] == old
    new, seq = rotated["new_key"], rotated["rotation_seq"]
    checkpoint = covering(server, seq)
    # The checkpoint covering the rotation event: signed by the retiring key, co-signed by the new one.
    assert signed_by(checkpoint["note"], old) and signed_by(checkpoint["note"], new)
    assert len(signers(checkpoint["note"])) == 2
    return new, seq, checkpoint


def test_an_export_across_a_restart_and_two_rotations_verifies_with_only_the_first_key(
    installation: Installation, launch: Callable[..., Server], tmp_path: Path
) -> None:
    admin = installation.admin_token
    server = launch(installation, env=FAST, workers=2)
    published = cli_json(installation, server, "audit", "public-key")
    k1 = published["verifier_key"]
    assert [(k["verifier_key"], k["state"]) for k in published["keys"]] == [(k1, "active")]
    grow(server, 5, "a")
    before_rotation = covering(server, head(server))
    k2, r1, c1 = rotate(installation, server, k1)
    published = cli_json(installation, server, "audit", "public-key")
    assert published["verifier_key"] == k2
    old, new = published["keys"]
    assert (old["verifier_key"], old["state"], old["private_key"]) == (k1, "retired", "destroyed")
    assert old["last_checkpoint"] == new["first_checkpoint"] == c1["size"] and old["retired_at"]
    assert (new["verifier_key"], new["state"], new["rotation_seq"]) == (k2, "active", r1)
    # Any token reads the keys; only an admin rotates.
    service = make_service(server, "not-an-admin")["credentials"]["access_token"]
    status, _, body = server.call("GET", "/v1/audit/public-key", token=service)
    assert status == 200 and len(body["keys"]) == 2
    status, _, body = server.call("POST", "/v1/audit/key/rotate", token=service)
    assert (status, body["code"]) == (403, "role_required"), body
    grow(server, 4, "b")
    covering(server, head(server))
    last_before_restart = head(server)
    server.stop()

    server = launch(installation, env=FAST, workers=2)
    # The anchor (signed under the second key) still opens at start: nothing is latched.
    status, _, body = server.call("GET", "/v1/audit/rollback", token=admin)
    assert (status, body["detected"]) == (200, False), body
    grow(server, 4, "c")
    k3, r2, c2 = rotate(installation, server, k2)
    grow(server, 3, "d")
    newest = covering(server, head(server))
    assert signed_by(newest["note"], k3) and not signed_by(newest["note"], k2)

    # Consistency from a checkpoint signed under the first key to one under the third.
    status, _, proof = server.call(
        "GET",
        f"/v1/audit/proofs/consistency?first={before_rotation['size']}&second={newest['size']}",
        token=admin,
    )
    assert status == 200, proof
    assert signed_by(proof["first_checkpoint"], k1) and signed_by(proof["second_checkpoint"], k3)
    assert verify_consistency(
        before_rotation["size"],
        newest["size"],
        base64.b64decode(proof["first_root"]),
        base64.b64decode(proof["second_root"]),
        [base64.b64decode(p) for p in proof["proof"]],
    )

    export = tmp_path / "audit.jsonl"
    done = cli(installation, server, "audit", "export", str(export), "--verify", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["verified"] is True
    lines = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]

    # Only the first key: the verifier follows both rotations from the log.
    code, report = verify(installation, tmp_path, lines, k1)
    assert (code, report["ok"]) == (0, True), report
    assert [(k["verifier_key"], k["rotation_seq"]) for k in report["keys"]] == [
        (k1, None),
        (k2, r1),
        (k3, r2),
    ]
    assert report["keys"][0]["last_checkpoint"] == report["keys"][1]["first_checkpoint"] == c1["size"]
    assert report["keys"][1]["endorsed_by"] == f"rotation at seq {r1} signed by {k1.split('+')[1]}"
    assert report["checkpoints_verified"] >= 4
    # Without a key the chain still verifies (no checkpoint checked); a malformed key is a usage error.
    code, report = verify(installation, tmp_path, lines)
    assert (code, report["ok"], report["checkpoints_verified"]) == (0, True, 0)
    code, _ = verify(installation, tmp_path, lines, "not-a-key")
    assert code == 2

    attacker = Ed25519PrivateKey.generate()
    # A key the auditor was never given signs nothing here.
    code, report = verify(installation, tmp_path, lines, attacker_key(attacker))
    assert (code, report["reason"]) == (1, "checkpoint_unendorsed"), report

    # A forged rotation: the first rotation names the attacker's key; the chain and every checkpoint
    # are recomputed and signed by the attacker (who has no audit key of the token).
    forged = []
    for line in lines:
        if line.get("seq") == r1:
            event = json.loads(line["event"])
            event["new_key"] = attacker_key(attacker)
            line = {**line, "event": canonical_json(event).decode()}
        forged.append(line)
    code, report = verify(
        installation, tmp_path, rechain(forged, lambda body: attacker_note(body, attacker)), k1
    )
    assert (code, report["what"], report["reason"]) == (1, "key_unendorsed", "checkpoint_unendorsed"), report
    # ... and keeping the genuine notes instead: the first key did sign that checkpoint, but the key
    # the forged event names did not co-sign it (and the root it signed is another).
    code, report = verify(installation, tmp_path, rechain(forged), k1)
    assert (code, report["reason"], report["first_bad_seq"]) == (1, "rotation_not_cosigned", r1), report

    # A checkpoint signed by a key no rotation endorsed (the newest one re-signed by the attacker).
    body = newest["note"].partition("\n\n")[0] + "\n"
    swapped = [
        {"checkpoint": attacker_note(body, attacker)} if line.get("checkpoint") == newest["note"] else line
        for line in lines
    ]
    code, report = verify(installation, tmp_path, swapped, k1)
    assert (code, report["what"], report["reason"]) == (1, "key_unendorsed", "checkpoint_unendorsed"), report

    # The rotation co-signed by the old key only in name: the covering note keeps just the new key's line.
    only_new = []
    for line in lines:
        if line.get("checkpoint") == c2["note"]:
            head_text, _, sig_lines = c2["note"].partition("\n\n")
            kept = [
                s
                for s in sig_lines.splitlines()
                if base64.b64decode(s.split(" ")[-1])[:4].hex() == k3.split("+")[1]
            ]
            line = {"checkpoint": head_text + "\n\n" + "".join(s + "\n" for s in kept)}
        only_new.append(line)
    code, report = verify(installation, tmp_path, only_new, k1)
    assert (code, report["reason"], report["first_bad_seq"]) == (1, "rotation_unendorsed", r2), report

    # The second rotation's event removed: a gap at its seq ...
    code, report = verify(installation, tmp_path, [x for x in lines if x.get("seq") != r2], k1)
    assert (code, report["what"], report["first_bad_seq"]) == (1, "removed", r2), report
    # ... and hidden by re-chaining (its checkpoint dropped): the third key's checkpoints are unendorsed.
    hidden = rechain([x for x in lines if x.get("seq") != r2 and x.get("checkpoint") != c2["note"]])
    code, report = verify(installation, tmp_path, hidden, k1)
    assert (code, report["what"], report["reason"]) == (1, "key_unendorsed", "checkpoint_unendorsed"), report

    # A gap across the restart: the first event after it removed.
    code, report = verify(
        installation, tmp_path, [x for x in lines if x.get("seq") != last_before_restart + 1], k1
    )
    assert (code, report["what"], report["first_bad_seq"]) == (1, "removed", last_before_restart + 1), report
    server.stop()

    # The rollback anchor across the rotations: the database cut back to the first rotation's
    # checkpoint (co-signed) is caught against the anchor signed by the third key.
    cut = c1["size"]
    (rows,) = sql(installation, ("SELECT hash FROM audit_events WHERE seq = :s", {"s": cut}))
    sql(
        installation,
        ("DELETE FROM audit_events WHERE seq > :s", {"s": cut}),
        ("DELETE FROM audit_checkpoints WHERE size > :s", {"s": cut}),
        ("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1", {"s": cut, "h": rows[0][0]}),
    )
    server = launch(installation, env=FAST)
    status, _, body = server.call("GET", "/v1/audit/rollback", token=admin)
    assert (status, body["detected"], body["code"]) == (200, True, "truncated"), body
