"""The offline verifier across audit-key rotations (``signer.audit_keys``): trust passes from key to key
only through a checkpoint the key in force signs over the rotation event, and the new key co-signs.

Exports are built in memory; checkpoints are signed with ``cryptography`` Ed25519 keys (an independent
signer), the chain recomputed after each edit the way an attacker with the database would.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signer.audit import GENESIS_HASH, canonical_json, chain_hash
from signer.audit_note import VerifierKey, checkpoint_body, signed_note
from signer.audit_tree import TreeBuilder, leaf_hash
from signer.audit_verify import ExportVerifier
from signer.crypto.signatures import check_ed25519
from tests.audit.audit_testkit import build_chain

ORIGIN = "test.example/audit"
FIRST, SECOND, OTHER = (Ed25519PrivateKey.generate() for _ in range(3))


def key(private: Ed25519PrivateKey) -> VerifierKey:
    return VerifierKey(ORIGIN, private.public_key().public_bytes_raw())


def rotation(
    records: list[dict[str, Any]], seq: int, old: VerifierKey, new: VerifierKey
) -> list[dict[str, Any]]:
    event = {
        "kind": "audit.key_rotated",
        "at": records[seq - 1]["at"],
        "request_id": f"rot-{seq}",
        "actor": {"principal_id": "prn_admin", "name": "admin"},
        "outcome": "allowed",
        "old_key": old.text(),
        "new_key": new.text(),
    }
    text = canonical_json(event).decode()
    records = list(records)
    records[seq - 1] = {**records[seq - 1], "kind": event["kind"], "event": text, "request_id": f"rot-{seq}"}
    out, prev = [], GENESIS_HASH
    for record in records:
        digest = chain_hash(prev, record["event"].encode())
        out.append({**record, "prev_hash": prev, "hash": digest})
        prev = digest
    return out


def note(records: list[dict[str, Any]], size: int, *signers: Ed25519PrivateKey) -> str:
    tree = TreeBuilder()
    for record in records[:size]:
        tree.append(leaf_hash(record["event"].encode()))
    body = checkpoint_body(ORIGIN, size, tree.root())
    lines = [(ORIGIN, key(s).id, s.sign(body.encode())) for s in signers]
    return signed_note(body, *lines[0], *lines[1:])


def verify(records: list[dict[str, Any]], notes: dict[int, str], *held: VerifierKey) -> dict[str, Any]:
    verifier = ExportVerifier(keys=held, check=check_ed25519)
    for record in records:
        verifier.feed(canonical_json(record).decode())
        if record["seq"] in notes:
            verifier.feed(json.dumps({"checkpoint": notes[record["seq"]]}))
    return verifier.finish()


def rotated() -> tuple[list[dict[str, Any]], dict[int, str]]:
    """20 events, the key rotated at seq 6: checkpoints at 4 (first key), 8 (first key, co-signed by
    the second), 12 and 16 (second key)."""
    records = rotation(build_chain(20), 6, key(FIRST), key(SECOND))
    notes = {
        4: note(records, 4, FIRST),
        8: note(records, 8, FIRST, SECOND),
        12: note(records, 12, SECOND),
        16: note(records, 16, SECOND),
    }
    return records, notes


def test_holding_only_the_first_key_follows_the_rotation_from_the_log() -> None:
    records, notes = rotated()
    report = verify(records, notes, key(FIRST))
    assert report["ok"], report
    assert report["checkpoints_verified"] == 4
    assert [(k["verifier_key"], k["first_checkpoint"], k["last_checkpoint"]) for k in report["keys"]] == [
        (key(FIRST).text(), 4, 8),
        (key(SECOND).text(), 8, 16),
    ]
    assert report["keys"][1]["endorsed_by"] == f"rotation at seq 6 signed by {key(FIRST).id.hex()}"
    # Holding both keys is the same verdict; holding only a key the log has not reached is not enough.
    assert verify(records, notes, key(FIRST), key(SECOND))["ok"]
    late = verify(records, notes, key(SECOND))
    assert (late["ok"], late["reason"]) == (False, "checkpoint_unendorsed")


def test_a_checkpoint_by_the_retired_key_after_the_rotation_is_unendorsed() -> None:
    records, notes = rotated()
    notes[12] = note(records, 12, FIRST)
    report = verify(records, notes, key(FIRST))
    assert (report["what"], report["reason"]) == ("key_unendorsed", "checkpoint_unendorsed")
    assert report["ranges"][-1].startswith("events 9..")


def test_a_checkpoint_by_a_key_never_rotated_in_is_unendorsed() -> None:
    records, notes = rotated()
    notes[16] = note(records, 16, OTHER)
    report = verify(records, notes, key(FIRST))
    assert (report["what"], report["reason"]) == ("key_unendorsed", "checkpoint_unendorsed")


def test_a_rotation_the_old_key_did_not_sign_is_refused() -> None:
    records, notes = rotated()
    notes[8] = note(records, 8, SECOND)
    report = verify(records, notes, key(FIRST))
    assert (report["what"], report["reason"], report["first_bad_seq"]) == (
        "key_unendorsed",
        "rotation_unendorsed",
        6,
    )


def test_a_rotation_the_new_key_did_not_co_sign_is_refused() -> None:
    records, notes = rotated()
    notes[8] = note(records, 8, FIRST)
    report = verify(records, notes, key(FIRST))
    assert (report["reason"], report["first_bad_seq"]) == ("rotation_not_cosigned", 6)


def test_a_rotation_that_retires_another_key_is_refused() -> None:
    records = rotation(build_chain(20), 6, key(OTHER), key(SECOND))
    notes = {4: note(records, 4, FIRST), 8: note(records, 8, FIRST, SECOND)}
    report = verify(records, notes, key(FIRST))
    assert (report["reason"], report["first_bad_seq"]) == ("rotation_unendorsed", 6)


def test_two_rotations_before_any_checkpoint_and_a_malformed_rotation_are_refused() -> None:
    records = rotation(rotation(build_chain(20), 6, key(FIRST), key(SECOND)), 7, key(SECOND), key(OTHER))
    report = verify(records, {8: note(records, 8, FIRST, SECOND)}, key(FIRST))
    assert (report["reason"], report["first_bad_seq"]) == ("rotation_unendorsed", 7)
    broken = rotation(build_chain(10), 3, key(FIRST), key(SECOND))
    event = json.loads(broken[2]["event"])
    event["new_key"] = "not a key"
    broken[2] = {**broken[2], "event": canonical_json(event).decode()}
    prev = GENESIS_HASH
    for i, record in enumerate(broken):
        broken[i] = {**record, "prev_hash": prev, "hash": chain_hash(prev, record["event"].encode())}
        prev = broken[i]["hash"]
    report = verify(broken, {}, key(FIRST))
    assert (report["reason"], report["first_bad_seq"]) == ("rotation_malformed", 3)


def test_without_keys_a_rotation_is_only_part_of_the_chain() -> None:
    records, notes = rotated()
    report = verify(records, notes)
    assert (report["ok"], report["checkpoints_verified"], report["keys"]) == (True, 0, [])
