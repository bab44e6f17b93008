"""A key's lifecycle transitions, and grants on it, as payload kinds, so that policy can send them to
approvers.

One ``PayloadKind`` per action (``activate_key``, ``suspend_key``, ``deactivate_key``, ``compromise_key``,
``destroy_key``) on the ``key`` resource kind. They never go through the decision pipeline (an admin
acts by its role, not by a grant, and the keys service applies the transition in its own transaction);
they are registered so that a pending request for one is opened, shown, voted on and closed exactly as
a signature or a secret read is (``pending``, ``approvals``). Like a secret read, nothing runs on
approval (``released_by_requester``): the requester completes it by calling the same route again with
the approval's id, and the transition is applied then, once.

The canonical body an approval digests is the action, the reason and (for a compromise) when it
happened; with the key's id, curve and address from the resource kind, an approval to destroy one key
cannot destroy another, nor compromise it, nor carry another reason. This module never decides and
never writes.

Granting access to one key (``grant_key``) and revoking a grant on one key (``revoke_grant_key``) are
payload kinds on the key the same way: their body is the whole grant (who, which operations, until
when, its budgets) or the grant revoked, so an approval for one grant creates no other.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from policy import KEY_LIFECYCLE_OPERATIONS
from signer.errors import InvalidRequest
from signer.identity import Role
from signer.services.key_states import DESTROYED_STATES, NEEDS_CONFIRMATION, KeyAction, next_state
from signer.services.payloads import PayloadKind, Prepared, Preparer
from signer.services.payloads import register as register_payload
from signer.store import KeyRecord

SCHEME = "key_lifecycle"


def operation_of(action: KeyAction) -> str:
    """The operation's name for ``action``: ``destroy_key``..."""
    return action.value + "_key"


def lifecycle_body(action: KeyAction, reason: str | None, compromised_at: datetime | None) -> dict[str, Any]:
    """The canonical body of one transition: what an approval binds besides the key."""
    body: dict[str, Any] = {"action": action.value, "reason": reason}
    if action is KeyAction.COMPROMISE:
        body["compromised_at"] = None if compromised_at is None else compromised_at.isoformat()
    return body


def stored_compromised_at(body: Mapping[str, Any]) -> datetime | None:
    text = body.get("compromised_at")
    return None if text is None else datetime.fromisoformat(str(text))


def prepare_transition(action: KeyAction, body: Mapping[str, Any]) -> Preparer:
    """The payload of one transition of a key: no bytes to sign; the view approvers read."""

    def prepare(key: KeyRecord) -> Prepared:
        target = next_state(key.state, action)
        view: dict[str, Any] = {
            "scheme": SCHEME,
            "action": action.value,
            "reason": body.get("reason"),
            "key_state": key.state,
            "state_after": None if target is None else target.value,
            "scope": key.scope,
            "curve": key.curve,
            "irreversible": action in NEEDS_CONFIRMATION,
            "destroys_private_key": target is not None and target.value in DESTROYED_STATES,
        }
        if action is KeyAction.COMPROMISE:
            view["compromised_at"] = body.get("compromised_at")
        return Prepared(data=b"", summary={"action": action.value}, body=dict(body), view=view)

    return prepare


def _parse(action: KeyAction) -> Any:
    def parse(body: Mapping[str, Any]) -> Preparer:
        if body.get("action") != action.value:
            raise InvalidRequest(
                "the stored body is for another action", code="invalid_field", field="action"
            )
        return prepare_transition(action, body)

    return parse


def _not_counted(resource: Any | None, operation: str, outcome: str) -> None:
    # Key transitions are counted by their audit events, not in the signing metrics.
    return None


PAYLOADS: dict[KeyAction, PayloadKind] = {
    action: register_payload(
        PayloadKind(
            operation=operation_of(action),
            resource_type="key",
            event_kind="key." + action.value,
            parse=_parse(action),
            parse_stored=_parse(action),
            fits=lambda key: None,
            actors=frozenset({Role.ADMIN}),
            actors_refusal="only admins change a key's state",
            audited_result=("state",),
            released_by_requester=True,
            count=_not_counted,
        )
    )
    for action in KeyAction
}


# -- grants on one key -------------------------------------------------------------------------------

GRANT_SCHEME = "key_grant"


def grant_body(
    *,
    principal_id: str | None,
    group: str | None,
    operations: list[str],
    expires_at: datetime | None,
    max_uses: int | None,
    value_budgets: Mapping[str, str],
    no_access: bool,
) -> dict[str, Any]:
    """The canonical body of a grant on one key: everything the grant will say."""
    return {
        "action": "grant",
        "principal_id": principal_id,
        "group": group,
        "operations": sorted(set(operations)),
        "expires_at": None if expires_at is None else expires_at.isoformat(),
        "max_uses": max_uses,
        "value_budgets": dict(sorted(value_budgets.items())),
        "no_access": no_access,
    }


def revoke_body(
    grant_id: str, principal_id: str | None, group: str | None, operations: list[str]
) -> dict[str, Any]:
    """The canonical body of revoking one grant on a key (who loses which operations)."""
    return {
        "action": "revoke_grant",
        "grant_id": grant_id,
        "principal_id": principal_id,
        "group": group,
        "operations": sorted(operations),
    }


def _prepare_grant(body: Mapping[str, Any]) -> Preparer:
    def prepare(key: KeyRecord) -> Prepared:
        grantee = (
            f"group:{body.get('group')}" if body.get("group") else f"principal:{body.get('principal_id')}"
        )
        view = {
            "scheme": GRANT_SCHEME,
            **dict(body),
            "grantee": grantee,
            "scope": key.scope,
            "curve": key.curve,
        }
        return Prepared(data=b"", summary={"action": body.get("action")}, body=dict(body), view=view)

    return prepare


def _parse_grant(action: str) -> Any:
    def parse(body: Mapping[str, Any]) -> Preparer:
        if body.get("action") != action:
            raise InvalidRequest(
                "the stored body is for another action", code="invalid_field", field="action"
            )
        return _prepare_grant(body)

    return parse


GRANT_PAYLOADS: dict[str, PayloadKind] = {
    action: register_payload(
        PayloadKind(
            operation=action + "_key",
            resource_type="key",
            event_kind="grant.create" if action == "grant" else "grant.revoke",
            parse=_parse_grant(action),
            parse_stored=_parse_grant(action),
            fits=lambda key: None,
            actors=frozenset({Role.ADMIN}),
            actors_refusal="only admins grant and revoke",
            audited_result=("id",),
            released_by_requester=True,
            count=_not_counted,
        )
    )
    for action in ("grant", "revoke_grant")
}

_ALL = [*PAYLOADS.values(), *GRANT_PAYLOADS.values()]
if set(KEY_LIFECYCLE_OPERATIONS) != {kind.operation for kind in _ALL}:
    raise RuntimeError("policy's key lifecycle operations and the key states' actions differ")
