"""What a caller's grants let it see of secrets, and who can use one secret: listing and "access".

Listing reads only what the caller's grants name: the folders of its live ``list`` grants (its own and
its groups'), narrowed to the folder asked about, and the secrets its ``list`` grants name one by one.
A caller whose grants name nothing there reads no secret row at all, so its answer (an empty page) and
its cost are the same whether the folder holds nothing or a hundred thousand secrets; a caller's cost
follows what its grants cover, never the table's size. Every row read is still judged (no-access
grants, policy rules) before it is shown.

``access`` is the "who can use it" of ``show``: for each principal and group holding live grants about
one resource (on it, or on a folder at or above it), the operations of its kind (from the registry of
kinds) they allow that no no-access grant of the same subject overrides, and through which grants. It
is only ever computed for a caller allowed ``read_metadata`` on that secret; it names grants about that
one secret, nothing about other resources. This module decides nothing about requests (the pipeline's
judge does) and never sees a value.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from policy import Effect, GrantRequest, evaluate_grants
from signer.services.authorization import to_grant
from signer.services.context import iso
from signer.services.resources import MAKING, SCOPE, ResourceRef, resource_kind
from signer.store import GrantRecord

# The order ``access`` lists a secret's operations in; a kind's others follow, alphabetically.
_ORDER = ("list", "read_metadata", "read_value", "update", "delete")


def _within(folder: str, prefix: str) -> bool:
    return folder == prefix or folder.startswith(prefix + "/")


def listing_targets(grants: Iterable[GrantRecord], under: str | None) -> tuple[list[str], list[str]]:
    """The folders (no one inside another) and secret ids that the ``list`` grants among ``grants``
    name, narrowed to ``under`` (None: everywhere). Grants are only a superset of what may be shown:
    each secret found is judged again."""
    prefixes: set[str] = set()
    ids: set[str] = set()
    for grant in grants:
        if grant.no_access or "list" not in grant.operations:
            continue
        if grant.resource_type == "secret":
            ids.add(grant.resource_id)
        elif grant.resource_type == SCOPE:
            scope = grant.resource_id
            if under is None or _within(scope, under):
                prefixes.add(scope)
            elif _within(under, scope):
                prefixes.add(under)
    folders = sorted(p for p in prefixes if not any(q != p and _within(p, q) for q in prefixes))
    return folders, sorted(ids)


def ancestors(folder: str) -> list[str]:
    """``acme/payments/prod`` -> ``acme``, ``acme/payments``, ``acme/payments/prod``."""
    parts = folder.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def access_view(ref: ResourceRef, grants: list[GrantRecord], now: datetime) -> list[dict[str, Any]]:
    """Per subject holding live grants about the secret: the operations it may use (no-access and
    precedence applied per subject, limits such as ``max_uses`` not counted) and the grants giving them."""
    by_subject: dict[tuple[str, str], list[GrantRecord]] = {}
    for grant in grants:
        subject = (
            ("group", grant.group_name)
            if grant.group_name is not None
            else ("principal", grant.principal_id or "")
        )
        by_subject.setdefault(subject, []).append(grant)
    view: list[dict[str, Any]] = []
    existing = resource_kind(ref.type).operations - MAKING
    ordered = sorted(existing, key=lambda op: (_ORDER.index(op) if op in _ORDER else len(_ORDER), op))
    for (kind, name), held in sorted(by_subject.items()):
        converted = tuple(to_grant(g) for g in held)
        operations: list[str] = []
        for operation in ordered:
            request = GrantRequest(
                principal_id=name if kind == "principal" else "",
                operation=operation,
                resource_type=ref.type,
                resource_id=ref.id,
                scope=ref.scope,
                groups=frozenset({name}) if kind == "group" else frozenset(),
            )
            decision = evaluate_grants(request, converted, now=now)
            if decision.effect is Effect.ALLOW:
                operations.append(operation)
        if not operations:
            continue
        view.append(
            {
                "subject": f"{kind}:{name}",
                "operations": operations,
                "grants": [
                    {
                        "id": g.id,
                        "on": f"folder:{g.resource_id}" if g.resource_type == SCOPE else ref.type,
                        "operations": sorted(g.operations),
                        "no_access": g.no_access,
                        "expires_at": iso(g.expires_at),
                    }
                    for g in held
                ],
            }
        )
    return view
