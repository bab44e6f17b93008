"""verify_chain / verify_jsonl: a valid chain verifies; tampering is flagged at its exact position (U-04)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from signer.audit import (
    GENESIS_HASH,
    AuditRecord,
    ChainVerifier,
    canonical_json,
    chain_hash,
    export_jsonl,
    parse_at,
    verify_chain,
    verify_jsonl,
)
from tests.audit.audit_testkit import build_chain

Chain = list[dict[str, Any]]


def lines_of(chain: Chain) -> list[str]:
    return list(export_jsonl(chain))


def test_chain_hash_definition() -> None:
    import hashlib

    canonical = b'{"kind":"x"}'
    assert chain_hash(GENESIS_HASH, canonical) == hashlib.sha256(bytes(32) + canonical).hexdigest()
    with pytest.raises(ValueError):
        chain_hash("00", canonical)
    with pytest.raises(ValueError):
        chain_hash("A" * 64, canonical)  # upper case is not the canonical hex form


def test_a_valid_chain_verifies(chain: Chain) -> None:
    result = verify_chain(chain, expected_head=(20, chain[-1]["hash"]))
    assert (result.ok, result.checked, result.first_bad_seq, result.reason) == (True, 20, None, None)
    assert verify_jsonl(lines_of(chain)).ok
    assert verify_chain([]).ok
    assert verify_chain([], expected_head=(0, GENESIS_HASH)).ok


def test_export_lines_are_canonical_single_lines(chain: Chain) -> None:
    lines = lines_of(chain)
    assert len(lines) == 20
    for line, record in zip(lines, chain, strict=True):
        assert line.endswith("\n") and line.count("\n") == 1
        assert json.loads(line) == record
        assert line[:-1].encode() == canonical_json(record)


def test_audit_records_export_like_mappings(chain: Chain) -> None:
    records = [
        AuditRecord(
            seq=r["seq"],
            at=parse_at(r["at"]),
            request_id=r["request_id"],
            kind=r["kind"],
            event=r["event"],
            prev_hash=r["prev_hash"],
            hash=r["hash"],
        )
        for r in chain
    ]
    assert lines_of(records) == lines_of(chain)  # type: ignore[arg-type]
    assert verify_chain(records).ok


def test_slice_verifies_from_a_trusted_anchor(chain: Chain) -> None:
    tail = chain[10:]
    assert verify_chain(tail).reason == "seq_mismatch"
    assert verify_chain(tail, first_seq=11, prev_hash=chain[9]["hash"]).ok
    assert verify_chain(tail, first_seq=11, prev_hash=chain[8]["hash"]).reason == "prev_hash_mismatch"


def _edit_event(chain: Chain, seq: int) -> Chain:
    edited = copy.deepcopy(chain)
    body = json.loads(edited[seq - 1]["event"])
    body["outcome"] = "denied"
    edited[seq - 1]["event"] = canonical_json(body).decode()
    return edited


def _edit_and_rehash(chain: Chain, seq: int) -> Chain:
    # A forger who recomputes this record's hash still breaks the next record's prev link.
    edited = _edit_event(chain, seq)
    record = edited[seq - 1]
    record["hash"] = chain_hash(record["prev_hash"], record["event"].encode())
    return edited


def _swap(chain: Chain, seq: int) -> Chain:
    edited = copy.deepcopy(chain)
    edited[seq - 1], edited[seq] = edited[seq], edited[seq - 1]
    return edited


def _delete(chain: Chain, seq: int) -> Chain:
    return [r for r in copy.deepcopy(chain) if r["seq"] != seq]


def _insert_copy(chain: Chain, seq: int) -> Chain:
    edited = copy.deepcopy(chain)
    edited.insert(seq - 1, copy.deepcopy(chain[seq - 2]))  # a replay of the previous record
    return edited


def _insert_forged(chain: Chain, seq: int) -> Chain:
    # A well-formed record with the right seq and prev link, slipped in before the real one.
    edited = copy.deepcopy(chain)
    prev = chain[seq - 2]["hash"]
    body = {"kind": "sign.transaction", "at": chain[seq - 1]["at"], "request_id": None, "forged": True}
    event = canonical_json(body).decode()
    forged = {
        "seq": seq,
        "at": body["at"],
        "request_id": None,
        "kind": body["kind"],
        "event": event,
        "prev_hash": prev,
        "hash": chain_hash(prev, event.encode()),
    }
    edited.insert(seq - 1, forged)
    return edited


def _set(field: str, value: Any):  # type: ignore[no-untyped-def]
    def tamper(chain: Chain, seq: int) -> Chain:
        edited = copy.deepcopy(chain)
        edited[seq - 1][field] = value
        return edited

    return tamper


def _reformat_event(chain: Chain, seq: int) -> Chain:
    # Same JSON value, different text, hash recomputed: only the canonical-form check sees it.
    edited = copy.deepcopy(chain)
    record = edited[seq - 1]
    record["event"] = json.dumps(json.loads(record["event"]), sort_keys=True)
    record["hash"] = chain_hash(record["prev_hash"], record["event"].encode())
    for later in edited[seq:]:
        later["prev_hash"] = edited[later["seq"] - 2]["hash"]
        later["hash"] = chain_hash(later["prev_hash"], later["event"].encode())
    return edited


@pytest.mark.parametrize("seq", [1, 2, 9, 20])
@pytest.mark.parametrize(
    ("tamper", "bad_at", "reason"),
    [
        (_edit_event, 0, "hash_mismatch"),
        (_edit_and_rehash, 1, "prev_hash_mismatch"),
        (_swap, 0, "seq_mismatch"),
        (_delete, 0, "seq_mismatch"),
        (_insert_copy, 0, "seq_mismatch"),
        (_set("kind", "auth.login"), 0, "field_mismatch"),
        (_set("request_id", "req-other"), 0, "field_mismatch"),
        (_set("at", "2030-01-01T00:00:00.000000Z"), 0, "field_mismatch"),
        (_set("hash", "f" * 64), 0, "hash_mismatch"),
        (_set("prev_hash", "e" * 64), 0, "prev_hash_mismatch"),
        (_set("seq", 99), 0, "seq_mismatch"),
        (_set("seq", "3"), 0, "malformed_record"),
        (_set("hash", "F" * 64), 0, "malformed_record"),
        (_reformat_event, 0, "event_not_canonical"),
    ],
)
def test_tampering_is_flagged_at_its_position(tamper, bad_at: int, reason: str, seq: int) -> None:  # type: ignore[no-untyped-def]
    chain = build_chain(20)
    if tamper is _swap and seq == 20:
        seq = 19
    tampered = tamper(chain, seq)
    expected_bad = min(seq + bad_at, 21)
    if tamper is _edit_and_rehash and seq == 20:
        # Nothing follows the last record, so only an outside anchor reveals the rewrite.
        assert verify_chain(tampered).ok
        result = verify_chain(tampered, expected_head=(20, chain[-1]["hash"]))
        assert (result.ok, result.first_bad_seq, result.reason) == (False, 20, "head_mismatch")
        return
    if tamper is _delete and seq == 20:
        result = verify_chain(tampered, expected_head=(20, chain[-1]["hash"]))
        assert (result.ok, result.first_bad_seq, result.reason) == (False, 20, "truncated")
        return
    for result in (verify_chain(tampered), verify_jsonl(lines_of(tampered))):
        assert (result.ok, result.first_bad_seq, result.reason) == (False, expected_bad, reason)
        assert result.checked == expected_bad - 1


def test_a_forged_insertion_is_caught_where_the_real_record_resumes() -> None:
    # An unkeyed chain lets a forger compute one valid-looking record; the real one after it then
    # no longer fits, so the verifier stops right there (checkpoints signed outside pin the rest).
    chain = build_chain(20)
    result = verify_chain(_insert_forged(chain, 9))
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 10, 9)
    assert result.reason == "seq_mismatch"


def test_truncation_of_lines_and_of_the_tail() -> None:
    chain = build_chain(20)
    lines = lines_of(chain)
    cut_line = [*lines[:14], lines[14][: len(lines[14]) // 2]]
    result = verify_jsonl(cut_line)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 15, "malformed_record")
    head = (20, chain[-1]["hash"])
    result = verify_jsonl(lines[:15], expected_head=head)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 16, "truncated")
    result = verify_chain([], expected_head=head)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 1, "truncated")
    extra = build_chain(21)
    result = verify_chain(extra, expected_head=head)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 21, "head_mismatch")


@pytest.mark.parametrize(
    "line",
    [
        "not json\n",
        "\n",
        '{"seq": 5}\n',
        "[1,2,3]\n",
        '{"at":"x","event":"{}","hash":"00","kind":"x","prev_hash":"00","request_id":null,"seq":5}\n',
    ],
)
def test_garbage_lines_are_flagged_where_they_are(line: str) -> None:
    lines = lines_of(build_chain(10))
    result = verify_jsonl([*lines[:6], line, *lines[6:]])
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 7, "malformed_record")


def test_extra_or_missing_fields_are_malformed(chain: Chain) -> None:
    extra = copy.deepcopy(chain)
    extra[3]["note"] = "added"
    assert verify_chain(extra).reason == "malformed_record"
    missing = copy.deepcopy(chain)
    del missing[3]["at"]
    assert verify_chain(missing).first_bad_seq == 4


def test_streaming_verifier_stops_at_first_failure(chain: Chain) -> None:
    verifier = ChainVerifier()
    tampered = _edit_event(chain, 5)
    assert [verifier.feed(r) for r in tampered[:7]] == [True] * 4 + [False] * 3
    assert verifier.result().first_bad_seq == 5
    assert verifier.next_seq == 5 and verifier.last_hash == chain[3]["hash"]
