"""Grants on a kind of resource the grants code has never heard of, through the running server, on SQLite
and PostgreSQL: ``tests.fake_kind`` registers widgets (in tests only) and the server runs with it.

Granting on a widget by reference, refusing an unknown widget with the kind's own not-found answer, an
operation of another kind, or a kind nobody registered; a scope grant reaching widgets below it with a
no-access exception deeper down; listing, the impact review of a revocation, a grant's usage report and
the audit event all name the reference; authorisation (``holds_any_grant``, from the stored grants)
reaches exactly the widgets the grants say. Nothing in ``signer/`` knows widgets.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from signer.services.authorization import holds_any_grant
from signer.store import open_store
from tests.fake_kind import CATALOGUE, SERVE, widget_ref
from tests.service_harness import Server, init_installation, make_service
from tests.system.support import events, export_audit

FIRST, DEEP = sorted(CATALOGUE)


def _grant(server: Server, **fields: Any) -> tuple[int, Any]:
    status, _, body = server.call("POST", "/v1/grants", fields, server.installation.admin_token)
    return status, body


def _reaches(url: str, principal_id: str) -> dict[str, bool]:
    """Whether the principal's live grants, as stored, reach each widget (the authorisation check)."""

    async def run() -> dict[str, bool]:
        store = await open_store(url)
        try:
            async with store.read() as reader:
                groups = await reader.groups.of(principal_id)
                held = await reader.grants.for_principal(principal_id, groups, datetime.now(UTC))
        finally:
            await store.close()
        return {w.id: holds_any_grant(held, widget_ref(w)) for w in CATALOGUE.values()}

    return asyncio.run(run())


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_grants_on_a_kind_registered_from_tests(
    backend: str, tmp_path: Path, launch: Any, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    server = launch(init_installation(tmp_path / "data", url), command=SERVE)
    store_url = url or f"sqlite+aiosqlite:///{(tmp_path / 'data' / 'signer.db').resolve()}"
    admin = server.installation.admin_token
    service = make_service(server, "widget-reader")
    principal_id = service["principal"]["id"]

    # On one widget, by reference: the answer names it the same way, and the older fields too.
    status, own = _grant(
        server,
        principal_id=principal_id,
        resource={"type": "widget", "id": FIRST},
        operations=["read_metadata"],
    )
    assert status == 201, own
    assert own["resource"] == {"type": "widget", "id": FIRST} and own["scope"] is None
    assert (own["resource_type"], own["resource_id"]) == ("widget", FIRST)

    # Refusals come from the kind: its not-found answer, its operations; an unregistered kind is refused.
    status, body = _grant(
        server,
        principal_id=principal_id,
        resource={"type": "widget", "id": "wdg_missing"},
        operations=["update"],
    )
    assert (status, body["code"]) == (404, "widget_not_found")
    status, body = _grant(
        server, principal_id=principal_id, resource={"type": "widget", "id": FIRST}, operations=["sign_raw"]
    )
    assert (status, body["code"]) == (400, "invalid_operations")
    status, body = _grant(
        server, principal_id=principal_id, resource={"type": "gadget", "id": FIRST}, operations=["update"]
    )
    assert (status, body["code"], body.get("field")) == (400, "invalid_grant", "resource.type")
    assert "gadget" not in str(body)

    # A scope grant reaches the widgets below it; a no-access grant deeper down closes that part.
    status, wide = _grant(server, principal_id=principal_id, scope="acme/widgets", operations=["update"])
    assert status == 201 and wide["resource"] is None and wide["scope"] == "acme/widgets"
    assert _reaches(store_url, principal_id) == {FIRST: True, DEEP: True}
    status, closed = _grant(server, principal_id=principal_id, scope="acme/widgets/deep", no_access=True)
    assert status == 201, closed
    assert _reaches(store_url, principal_id) == {FIRST: True, DEEP: False}

    # Listing, the impact review of revoking the widget grant, and its usage name the reference.
    status, _, listed = server.call("GET", f"/v1/grants?principal_id={principal_id}", token=admin)
    assert status == 200
    assert {g["id"]: g["resource"] for g in listed["items"]} == {
        own["id"]: {"type": "widget", "id": FIRST},
        wide["id"]: None,
        closed["id"]: None,
    }
    status, _, report = server.call("POST", "/v1/impact", {"action": "revoke_grant", "id": own["id"]}, admin)
    assert status == 200, report
    assert report["grant"]["on"] == f"widget:{FIRST}"
    (resource,) = report["resources"]
    assert resource == {**resource, "type": "widget", "id": FIRST, "name": "first", "scope": "acme/widgets"}
    # Revoked, the principal loses read_metadata there and keeps update through the scope grant.
    assert resource["lose"] == [
        {"subject": f"principal:{principal_id}", "operations": ["read_metadata"], "through": [own["id"]]}
    ]
    assert resource["keep"] == [
        {"subject": f"principal:{principal_id}", "operations": ["update"], "through": [wide["id"]]}
    ]
    status, _, usage = server.call("GET", f"/v1/usage/grants/{own['id']}", token=admin)
    assert (status, usage["uses"]) == (200, 0)

    assert server.call("DELETE", f"/v1/grants/{own['id']}", token=admin)[0] == 200
    status, _, report = server.call("POST", "/v1/impact", {"action": "revoke_grant", "id": wide["id"]}, admin)
    assert status == 200 and report["resources"] == []  # a scope grant names no one resource
    assert _reaches(store_url, principal_id) == {FIRST: True, DEEP: False}
    assert server.call("DELETE", f"/v1/grants/{wide['id']}", token=admin)[0] == 200
    assert _reaches(store_url, principal_id) == {FIRST: False, DEEP: False}

    created = [e for e in events(export_audit(server)) if e.get("kind") == "grant.create"]
    assert any(e["grant"]["resource"] == {"type": "widget", "id": FIRST} for e in created)
