"""The offline export verifier: every way of tampering is named (what and where), each range summarised.

Exports are built in memory (``audit_testkit``) with checkpoints signed by a ``cryptography`` Ed25519 key,
so the verifier's signature path is checked against an independent signer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from signer.audit import GENESIS_HASH, canonical_json, chain_hash
from signer.audit_note import Checkpoint, VerifierKey, checkpoint_body, open_checkpoint, signed_note
from signer.audit_tree import TreeBuilder, leaf_hash
from signer.audit_verify import ExportVerifier
from signer.crypto.signatures import check_ed25519
from tests.audit.audit_testkit import build_chain

ORIGIN = "test.example/audit"
PRIVATE = Ed25519PrivateKey.generate()
KEY = VerifierKey(ORIGIN, PRIVATE.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def note_for(records: list[dict[str, Any]], size: int, private: Ed25519PrivateKey = PRIVATE) -> str:
    tree = TreeBuilder()
    for record in records[:size]:
        tree.append(leaf_hash(record["event"].encode()))
    body = checkpoint_body(ORIGIN, size, tree.root())
    return signed_note(body, ORIGIN, KEY.id, private.sign(body.encode()))


def export(records: list[dict[str, Any]], notes: dict[int, str]) -> list[str]:
    lines = []
    for record in records:
        lines.append(canonical_json(record).decode() + "\n")
        if record["seq"] in notes:
            lines.append(json.dumps({"checkpoint": notes[record["seq"]]}) + "\n")
    return lines


def verify(lines: list[str], held: Checkpoint | None = None, key: VerifierKey | None = KEY) -> dict[str, Any]:
    verifier = ExportVerifier(key=key, check=check_ed25519, held=held)
    for line in lines:
        if not verifier.feed(line):
            break
    return verifier.finish()


def rehash(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What an attacker with database access does after an edit: renumber and recompute the chain."""
    out, prev = [], GENESIS_HASH
    for seq, record in enumerate(records, start=1):
        digest = chain_hash(prev, record["event"].encode())
        out.append({**record, "seq": seq, "prev_hash": prev, "hash": digest})
        prev = digest
    return out


@pytest.fixture
def chain() -> tuple[list[dict[str, Any]], dict[int, str]]:
    records = build_chain(20)
    return records, {8: note_for(records, 8), 16: note_for(records, 16)}


def test_an_untouched_export_verifies_with_a_summary_per_range(chain: Any) -> None:
    records, notes = chain
    report = verify(export(records, notes))
    assert report["ok"], report
    assert report["checkpoints_verified"] == 2
    assert report["ranges"] == [
        "events 1..8: valid (checkpoint 8)",
        "events 9..16: valid (checkpoint 16)",
        "events 17..20: unanchored",
    ]
    held = open_checkpoint(notes[8], KEY, check_ed25519)
    assert verify(export(records, notes), held=held)["ok"]


def test_an_edited_event_is_named(chain: Any) -> None:
    records, notes = chain
    records = [dict(r) for r in records]
    records[10]["event"] = records[10]["event"].replace('"n":11', '"n":12')
    report = verify(export(records, notes))
    assert (report["ok"], report["what"], report["first_bad_seq"]) == (False, "edited", 11)
    assert report["ranges"][0] == "events 1..8: valid (checkpoint 8)"
    assert report["ranges"][-1].endswith("invalid")


def test_a_removed_event_is_named(chain: Any) -> None:
    records, notes = chain
    report = verify(export(records[:4] + records[5:], notes))
    assert (report["what"], report["first_bad_seq"]) == ("removed", 5)


def test_an_inserted_event_is_named(chain: Any) -> None:
    records, notes = chain
    forged = {**records[5], "seq": 6, "prev_hash": records[4]["hash"]}
    forged["event"] = forged["event"].replace('"n":6', '"n":66')
    forged["hash"] = chain_hash(forged["prev_hash"], forged["event"].encode())
    report = verify(export([*records[:5], forged, *[{**r} for r in records[5:]]], notes))
    assert report["ok"] is False and report["first_bad_seq"] == 7
    assert report["what"] in ("reordered", "inserted")


def test_reordered_events_are_named(chain: Any) -> None:
    records, notes = chain
    swapped = [*records[:12], records[13], records[12], *records[14:]]
    report = verify(export(swapped, notes))
    assert (report["what"], report["first_bad_seq"]) == ("removed", 13)


def test_a_rewritten_and_rehashed_history_is_reported_as_rewritten(chain: Any) -> None:
    records, notes = chain
    edited = [dict(r) for r in records]
    edited[3]["event"] = edited[3]["event"].replace('"n":4', '"n":44')
    report = verify(export(rehash(edited), notes))
    assert (report["ok"], report["what"], report["reason"]) == (
        False,
        "rewritten",
        "checkpoint_root_mismatch",
    )
    assert report["ranges"] == ["events 1..8: invalid (checkpoint 8)"]
    # Deleting one event and re-numbering everything moves the checkpoints: also caught.
    report = verify(export(rehash(records[:2] + records[3:]), notes))
    assert report["ok"] is False and report["what"] in ("rewritten", "removed", "inserted")


def test_a_truncated_export_is_reported_against_the_checkpoint_the_auditor_holds(chain: Any) -> None:
    records, notes = chain
    held = open_checkpoint(notes[16], KEY, check_ed25519)
    report = verify(export(records[:11], notes), held=held)
    assert (report["what"], report["first_bad_seq"]) == ("truncated", 12)
    # Rewritten and re-signed by someone without the audit key: the held checkpoint still catches it.
    other = Ed25519PrivateKey.generate()
    edited = rehash([{**r, "event": r["event"].replace('"n":2,', '"n":22,')} for r in records])
    forged_notes = {8: note_for(edited, 8, other)}
    report = verify(export(edited, forged_notes), held=held)
    assert (report["what"], report["reason"]) == ("checkpoint_invalid", "signature_invalid")
    report = verify(export(edited, {}), held=held)
    assert (report["what"], report["reason"]) == ("rewritten", "held_checkpoint_mismatch")


def test_a_checkpoint_with_a_bad_signature_fails(chain: Any) -> None:
    records, notes = chain
    body, _, rest = notes[8].partition("\n\n")
    tampered = (
        body.replace("\n8\n", "\n8\n") + "\n\n" + rest[:-6] + ("A" if rest[-6] != "A" else "B") + rest[-5:]
    )
    report = verify(export(records, {8: tampered}))
    assert report["ok"] is False and report["what"] == "checkpoint_invalid"


def test_a_range_export_starts_from_the_tree_edge(chain: Any) -> None:
    records, notes = chain
    tree = TreeBuilder()
    for record in records[:5]:
        tree.append(leaf_hash(record["event"].encode()))
    import base64

    start = json.dumps({"tree_start": {"size": 5, "edge": [base64.b64encode(h).decode() for h in tree.edge]}})
    report = verify([start + "\n", *export(records[5:], notes)])
    assert report["ok"], report
    assert report["ranges"][:2] == [
        "events 6..8: valid (checkpoint 8)",
        "events 9..16: valid (checkpoint 16)",
    ]
    # A wrong edge gives a wrong root at the first checkpoint.
    bad = json.dumps({"tree_start": {"size": 5, "edge": [base64.b64encode(bytes(32)).decode()] * 2}})
    assert verify([bad + "\n", *export(records[5:], notes)])["what"] == "rewritten"


def _chain_of(events: list[dict[str, Any]]) -> list[str]:
    lines, prev = [], GENESIS_HASH
    for seq, body in enumerate(events, start=1):
        event = canonical_json(body).decode()
        digest = chain_hash(prev, event.encode())
        record = {"seq": seq, "at": body["at"], "request_id": None, "kind": body["kind"], "event": event}
        lines.append(canonical_json({**record, "prev_hash": prev, "hash": digest}).decode() + "\n")
        prev = digest
    return lines


def test_signed_approvals_inside_the_log_are_checked_offline() -> None:
    from signer.cli import _approval_check
    from signer.crypto.approver_signatures import approval_message

    approver = Ed25519PrivateKey.generate()
    public = approver.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    digest = "ab" * 32
    signature = approver.sign(approval_message("apr_1", "approve", digest)).hex()
    actor = {"principal_id": "prn_a", "name": "alice", "role": "approver", "token_id": "tok_1"}
    at = "2026-12-07T00:00:00.000000Z"
    base = {"at": at, "request_id": None, "actor": actor, "outcome": "allowed"}
    registered = {**base, "kind": "approval.key_registered", "scheme": "ed25519", "public_key": public}
    vote = {
        **base,
        "kind": "approval.vote",
        "approval_id": "apr_1",
        "decision": "approve",
        "digest_named": digest,
        "signature_scheme": "ed25519",
        "signature": signature,
    }

    def run(lines: list[str]) -> dict[str, Any]:
        verifier = ExportVerifier(key=None, check=check_ed25519, approval_check=_approval_check)
        for line in lines:
            verifier.feed(line)
        return verifier.finish()

    report = run(_chain_of([registered, vote]))
    assert report["ok"] and report["approvals_verified"] == 1, report
    # A vote re-signed for another decision, or a vote whose approver's key is not in the export.
    forged = {**vote, "decision": "reject"}
    report = run(_chain_of([registered, forged]))
    assert (report["ok"], report["what"], report["first_bad_seq"]) == (False, "approval_signature_invalid", 2)
    report = run(_chain_of([vote]))
    assert report["ok"] and report["approvals_unverifiable"] == 1


def test_a_range_export_proves_it_extends_the_checkpoint_the_auditor_holds(chain: Any) -> None:
    import base64

    from signer.audit_tree import consistency_proof

    records, notes = chain
    tree, nodes = TreeBuilder(), {}
    for record in records:
        for level, index, digest in tree.append(leaf_hash(record["event"].encode())):
            nodes[(level, index)] = digest
    held = open_checkpoint(note_for(records, 3), KEY, check_ed25519)
    edge_tree = TreeBuilder()
    for record in records[:5]:
        edge_tree.append(leaf_hash(record["event"].encode()))
    start = {"tree_start": {"size": 5, "edge": [base64.b64encode(h).decode() for h in edge_tree.edge]}}
    proof = [base64.b64encode(h).decode() for h in consistency_proof(3, 8, lambda lv, i: nodes[(lv, i)])]
    line = {"consistency": {"first": 3, "second": 8, "proof": proof}}
    lines = [json.dumps(start) + "\n", json.dumps(line) + "\n", *export(records[5:], notes)]
    report = verify(lines, held=held)
    assert report["ok"] and report["held_checkpoint"] == 3, report
    # Without the proof the held checkpoint cannot be checked: that is a failure, not a pass.
    report = verify([lines[0], *lines[2:]], held=held)
    assert (report["ok"], report["reason"]) == (False, "held_checkpoint_not_covered")
    # A held checkpoint over another history (signed by the same key) is not a prefix.
    other = [{**r, "event": r["event"].replace('"n":1,', '"n":111,')} for r in records]
    forged_held = open_checkpoint(note_for(rehash(other), 3), KEY, check_ed25519)
    report = verify(lines, held=forged_held)
    assert (report["what"], report["reason"]) == ("rewritten", "held_checkpoint_inconsistent")


def test_an_unanchored_tail_fails_only_when_anchoring_is_required(chain: Any) -> None:
    records, notes = chain
    lines = export(records, notes)
    verifier = ExportVerifier(key=KEY, check=check_ed25519, require_anchored=True)
    for line in lines:
        verifier.feed(line)
    report = verifier.finish()
    assert (report["ok"], report["what"], report["first_bad_seq"]) == (False, "unanchored", 17)
    assert report["ranges"][-1] == "events 17..20: unanchored"
    # Ending at a checkpoint, the same export passes the stricter check.
    strict = ExportVerifier(key=KEY, check=check_ed25519, require_anchored=True)
    for line in export(records[:16], notes):
        strict.feed(line)
    assert strict.finish()["ok"]


def test_a_range_starting_at_the_held_checkpoint_must_rebuild_its_root(chain: Any) -> None:
    import base64

    records, notes = chain
    tree = TreeBuilder()
    for record in records[:8]:
        tree.append(leaf_hash(record["event"].encode()))
    start = json.dumps({"tree_start": {"size": 8, "edge": [base64.b64encode(h).decode() for h in tree.edge]}})
    held = open_checkpoint(notes[8], KEY, check_ed25519)
    rest = [start + "\n", *export(records[8:], notes)]
    assert verify(rest, held=held)["ok"]
    forged = TreeBuilder(8, [bytes(32)])
    bad = json.dumps({"tree_start": {"size": 8, "edge": [base64.b64encode(h).decode() for h in forged.edge]}})
    report = verify([bad + "\n", *export(records[8:], notes)], held=held)
    assert (report["ok"], report["reason"]) == (False, "held_checkpoint_mismatch")
