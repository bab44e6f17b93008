"""The decision corpus: each file in ``corpus/`` is a request, grants, attached policy documents, a ledger
and ``now``, with the expected effect **and reasons** (rule id and code, in order). Optional expectations:
``reservations`` (limit key and amount), ``approvals`` (group, quorum, expiry) and ``policies`` (where the
consulted documents were attached). ``"ledger": null`` means the caller passed no facts at all; an
optional ``"anomalies"`` lists the unusual-access signals the service saw (``Facts.anomalies``).

The file's own shape is checked first, so a misspelt expectation fails instead of being skipped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from policy import Facts, evaluate, usage_queries
from tests.policy.support import instant, ledger_from, policy_set_from, request_from

CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.json"))
CASE_FIELDS = {"description", "now", "request", "grants", "policies", "ledger", "expected"}
EXPECTED_FIELDS = {"effect", "reasons", "reservations", "approvals", "policies"}


def test_the_corpus_is_there():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_case(path):
    case = json.loads(path.read_text(encoding="utf-8"))
    assert set(case) - {"anomalies"} == CASE_FIELDS, f"{path.name}: fields {sorted(set(case) ^ CASE_FIELDS)}"
    expected = case["expected"]
    assert {"effect", "reasons"} <= set(expected) <= EXPECTED_FIELDS, path.name

    now = instant(case["now"])
    req = request_from(case["request"])
    policies = policy_set_from(case)
    if case["ledger"] is None:
        facts = Facts()
    else:
        facts = Facts.from_reservations(usage_queries(req, policies, now=now), ledger_from(case["ledger"]))
    facts = dataclasses.replace(facts, anomalies=frozenset(case.get("anomalies", ())))
    decision = evaluate(req, policies, facts, now=now)

    assert decision.effect.value == expected["effect"]
    assert [{"rule_id": r.rule_id, "code": r.code} for r in decision.reasons] == expected["reasons"]
    assert all(r.message for r in decision.reasons)
    if "reservations" in expected:
        got = [{"limit_key": r.limit_key, "amount": str(r.amount)} for r in decision.reservations]
        assert got == expected["reservations"]
    if "approvals" in expected:
        got = [
            {"group": a.group, "quorum": a.quorum, "expires_at": a.expires_at.isoformat()}
            for a in decision.approvals
        ]
        assert got == expected["approvals"]
    if "policies" in expected:
        assert [p.attached_to for p in decision.policies] == expected["policies"]
    # Every consulted document is recorded with the digest of what was parsed.
    attached = {(a.document.policy_id, a.attached_to): a.document.digest for a in policies.documents}
    for ref in decision.policies:
        assert ref.digest == attached[(ref.policy_id, ref.attached_to)]
    json.dumps(decision.as_dict())
