"""Data written before ``policy.canonical_json`` became the one encoder still verifies after it.

The fixtures below were written by the encoders as they were before (``signer/audit.py`` escaping
non-ASCII text, ``policy/canonical.py`` writing it raw) and are kept here as bytes: the audit chain and
the approval payload digest were already the ASCII form, so they are the same bytes today; a policy
version stored with raw UTF-8 keeps the digest it was stored under.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from policy import canonical_json, parse_policy_json, parse_stored_policy_json, sha256_digest
from signer import audit
from signer.audit import ChainVerifier, parse_canonical, verify_jsonl

# Two events with non-ASCII text (accents, an astral character, a bidi override, U+2028, DEL),
# exported by the encoder of commit b32ccef (kept as data: the bytes are the vector).
OLD_EXPORT = (
    (Path(__file__).parent / "vectors" / "old_encoder_chain.jsonl").read_text("utf-8").splitlines(True)
)
OLD_HEAD = (2, "0980884c2932fc63cd9b09fc80aa6bd3390647a416d85abbdc8b266ab7694c34")

# A policy version as the old policy encoder stored it (raw UTF-8), and the digest it was stored under.
LEGACY_POLICY_TEXT = '{"description":"Trésorerie — paiements","id":"payments","rules":[],"version":1}'
LEGACY_POLICY_DIGEST = "sha256:15afb98f56a853769cd5d3f66ecb27ae4fad653519081a22cc80818edf4fc93e"

# An approval payload document with non-ASCII text and its digest under the old audit encoder.
APPROVAL_DOCUMENT = {"v": 1, "kind": "sign_message", "body": {"message": "héllo"}, "policy_digests": []}
APPROVAL_DIGEST = "4b0d2d02a363f28c146db472d46dc392c1a75f88a06fc542eeaf0898d6f58012"


def test_a_chain_written_by_the_old_encoder_verifies() -> None:
    result = verify_jsonl(OLD_EXPORT, expected_head=OLD_HEAD)
    assert result.ok, result
    assert result.checked == 2


def test_the_old_events_are_the_one_canonical_text_today() -> None:
    # The hash is over the stored text, kept as is; the verifier also demands that text be canonical,
    # which it is, because the one encoder writes exactly what the audit encoder wrote.
    for line in OLD_EXPORT:
        record = parse_canonical(line[:-1])
        body = parse_canonical(record["event"])
        assert canonical_json(body).decode("ascii") == record["event"]
        assert audit.canonical_json(body).decode("ascii") == record["event"]


def test_the_chain_continues_on_an_old_head() -> None:
    verifier = ChainVerifier()
    for line in OLD_EXPORT:
        assert verifier.feed(parse_canonical(line[:-1]))
    event = audit.make_event(
        "key.disable", at=audit.parse_at("2026-01-02T03:04:07Z"), outcome="allowed", actor={"name": "Zoë"}
    )
    text = audit.canonical_json(event)
    record = {
        "seq": 3,
        "at": event["at"],
        "request_id": None,
        "kind": "key.disable",
        "event": text.decode("ascii"),
        "prev_hash": verifier.last_hash,
        "hash": audit.chain_hash(verifier.last_hash, text),
    }
    assert verifier.feed(record)
    assert verifier.result().ok


def test_approval_payload_digests_are_unchanged() -> None:
    assert hashlib.sha256(canonical_json(APPROVAL_DOCUMENT)).hexdigest() == APPROVAL_DIGEST
    assert hashlib.sha256(audit.canonical_json(APPROVAL_DOCUMENT)).hexdigest() == APPROVAL_DIGEST


def test_a_legacy_policy_version_keeps_its_stored_digest() -> None:
    stored = parse_stored_policy_json(LEGACY_POLICY_TEXT)
    assert stored.digest == LEGACY_POLICY_DIGEST
    # The same meaning written today: the one (ASCII) text, and the digest of that text.
    fresh = parse_policy_json(LEGACY_POLICY_TEXT)
    assert fresh == stored
    assert (
        fresh.canonical_json()
        == b'{"description":"Tr\\u00e9sorerie \\u2014 paiements","id":"payments","rules":[],"version":1}'
    )
    assert fresh.digest == sha256_digest(fresh.as_dict()) != LEGACY_POLICY_DIGEST
    # A version stored today reads back under the digest it was stored with.
    assert parse_stored_policy_json(fresh.canonical_json().decode("ascii")).digest == fresh.digest


def test_only_the_exact_legacy_spelling_is_read_as_legacy() -> None:
    # Same document, but not the old encoder's exact text (a space): the canonical digest, not the
    # sha256 of whatever text was stored.
    spaced = LEGACY_POLICY_TEXT.replace('"rules":[]', '"rules": []')
    assert parse_stored_policy_json(spaced).digest == parse_policy_json(LEGACY_POLICY_TEXT).digest
    ascii_only = '{"description":"plain","id":"payments","rules":[],"version":1}'
    assert parse_stored_policy_json(ascii_only).digest == parse_policy_json(ascii_only).digest
