"""The typed audit event: required fields by name, optional resource and error refs, nothing shadowed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from signer.audit import AuditDraft, AuditEvent, ErrorRef, EventTarget, Outcome, canonical_json, make_event

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_builder_writes_what_make_event_wrote_plus_the_refs_given() -> None:
    event = AuditEvent.of(
        "key.create", at=AT, outcome=Outcome.ALLOWED, actor={"name": "a"}, request_id="r1", key_id="k1"
    )
    old = make_event(
        "key.create", at=AT, outcome="allowed", actor={"name": "a"}, request_id="r1", key_id="k1"
    )
    assert dict(event) == old
    assert canonical_json(event) == canonical_json(old)
    refused = AuditEvent.of(
        "request.refused",
        at=AT,
        outcome=Outcome.REFUSED,
        actor=None,
        request_id=None,
        resource=EventTarget("key", None),
        error=ErrorRef("forbidden", 403),
        action="create_key",
    )
    assert refused["resource"] == {"type": "key", "id": None}
    assert refused["error"] == {"code": "forbidden", "status": 403}
    assert refused["outcome"] == "refused" and refused.kind == "request.refused"


@pytest.mark.parametrize("name", ["kind", "at", "request_id", "actor", "outcome", "resource", "error"])
def test_a_field_cannot_shadow_what_the_builder_writes(name: str) -> None:
    # In ``AuditEvent.of`` each of these is a parameter, so Python itself refuses a second value.
    event = AuditEvent.of("x", at=AT, outcome=Outcome.ALLOWED, actor=None, request_id=None)
    with pytest.raises(ValueError):
        event.with_fields(**{name: "y"})


def test_bad_events_are_refused_and_built_ones_do_not_change() -> None:
    with pytest.raises(ValueError):
        AuditEvent.of("", at=AT, outcome=Outcome.ALLOWED, actor=None, request_id=None)
    with pytest.raises(ValueError):
        AuditEvent.of("x", at=datetime(2026, 1, 2), outcome=Outcome.ALLOWED, actor=None, request_id=None)
    with pytest.raises(ValueError):
        AuditEvent.of("x", at=AT, outcome="maybe", actor=None, request_id=None)  # type: ignore[arg-type]
    event = AuditEvent.of("x", at=AT, outcome=Outcome.ALLOWED, actor=None, request_id=None, n=1)
    with pytest.raises(AttributeError):
        event._body = {}  # type: ignore[misc]
    assert event.with_fields(m=2)["m"] == 2 and "m" not in event


def test_a_draft_is_finished_once_per_path() -> None:
    draft = AuditDraft(
        "sign.message", AT, {"name": "relayer"}, "r2", EventTarget("key", "k1"), {"key_id": "k1"}
    )
    allowed = draft.event(Outcome.ALLOWED, decision={"effect": "allow"})
    refused = draft.event(Outcome.DENIED, error=ErrorRef("policy_denied", 403))
    assert allowed["outcome"] == "allowed" and allowed["decision"] == {"effect": "allow"}
    assert refused["error"] == {"code": "policy_denied", "status": 403} and "decision" not in refused
    assert allowed["key_id"] == refused["key_id"] == "k1"
    assert allowed["resource"] == {"type": "key", "id": "k1"}
    assert draft.event(Outcome.REFUSED, kind="sign.refused").kind == "sign.refused"
