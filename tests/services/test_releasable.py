"""``pending.releasable``: which approved request its requester may release now, and the stable code
for every other state (an approved read past its expiry included, which the server tests cannot reach
without waiting on the wall clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from signer.errors import SignerError
from signer.services.pending import releasable
from signer.store import ApprovalRequestRecord

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def record(state: str, *, expires_in: timedelta = timedelta(minutes=5)) -> ApprovalRequestRecord:
    return ApprovalRequestRecord(
        id="apr_1",
        kind="read_value",
        resource_id="sec_1",
        requester_id="prn_requester",
        payload={"operation": "read_value", "secret_id": "sec_1", "body": {"version": 1, "fields": ["A"]}},
        payload_digest="ab" * 32,
        view={},
        requirements={"approvals": []},
        state=state,
        created_at=NOW - timedelta(minutes=1),
        expires_at=NOW + expires_in,
        updated_at=NOW,
    )


def code(rec: ApprovalRequestRecord | None, requester: str = "prn_requester", **kw: str) -> str:
    try:
        releasable(rec, requester, kw.get("operation", "read_value"), kw.get("resource", "sec_1"), NOW)
    except SignerError as exc:
        return f"{exc.status} {exc.code}"
    return "ok"


def test_the_requester_releases_its_approved_unexpired_request() -> None:
    assert code(record("approved")) == "ok"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("pending", "409 approval_pending"),
        ("rejected", "409 approval_rejected"),
        ("expired", "409 approval_expired"),
        ("cancelled", "409 approval_cancelled"),
        ("failed", "409 approval_failed"),
        ("released", "409 result_already_fetched"),
        ("signed", "409 result_already_fetched"),
    ],
)
def test_other_states_answer_stable_codes(state: str, expected: str) -> None:
    assert code(record(state)) == expected


def test_an_approved_request_past_its_expiry_is_not_released() -> None:
    assert code(record("approved", expires_in=timedelta(0))) == "409 approval_expired"


def test_anyone_or_anything_else_is_told_it_does_not_exist() -> None:
    approved = record("approved")
    assert code(None) == "404 approval_not_found"
    assert code(approved, requester="prn_other") == "404 approval_not_found"
    assert code(approved, operation="sign_transaction") == "404 approval_not_found"
    assert code(approved, resource="sec_2") == "404 approval_not_found"
