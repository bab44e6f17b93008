"""Grant precedence through the running server, on SQLite and PostgreSQL: a group's scope grant with a
no-access exception below it, a narrower allow under that exception, and the principal's own grant
unioned with the group's. A key closed by no-access answers exactly as a key that does not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.service_harness import Server, init_installation, make_service
from tests.system.support import events, export_audit

A = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
MISSING_KEY = "key_" + "0" * 16


def tx(nonce: int) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 1,
        "nonce": nonce,
        "gas": 21000,
        "to": A,
        "value": 1,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }


def _key(server: Server, scope: str) -> str:
    status, _, body = server.call(
        "POST", "/v1/keys", {"curve": "secp256k1", "label": scope.replace("/", "-"), "scope": scope},
        server.installation.admin_token,
    )  # fmt: skip
    assert status == 201, body
    return str(body["id"])


def _grant(server: Server, **fields: Any) -> dict[str, Any]:
    status, _, body = server.call("POST", "/v1/grants", fields, server.installation.admin_token)
    assert status == 201, body
    return dict(body)


def _sign(server: Server, token: str, key_id: str, nonce: int = 0) -> tuple[int, Any]:
    status, _, body = server.call(
        "POST", f"/v1/keys/{key_id}/sign/transaction", {"transaction": tx(nonce)}, token
    )
    return status, body


def _not_found(body: Any) -> tuple[Any, ...]:
    """What a 404 says, less what differs per request."""
    return (body["status"], body["code"], body["title"], body.get("detail"))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_scope_grant_with_a_no_access_exception(
    backend: str, tmp_path: Path, launch: Any, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    server = launch(init_installation(tmp_path / "data", url))
    admin = server.installation.admin_token
    service = make_service(server, "relayer")
    principal_id, token = service["principal"]["id"], service["credentials"]["access_token"]
    assert server.call("PUT", f"/v1/groups/developers/members/{principal_id}", token=admin)[0] == 200
    ops_key = _key(server, "acme/ops")
    prod_key = _key(server, "acme/payments/prod")
    ci_key = _key(server, "acme/payments/prod/ci")

    _grant(server, group="developers", scope="acme", operations=["sign_transaction"])
    closed = _grant(server, group="developers", scope="acme/payments/prod", no_access=True)
    assert closed["no_access"] is True and closed["operations"] == [] and closed["max_uses"] is None

    # acme/ops is reached through the group's scope grant; acme/payments/prod is closed to it, and
    # answers exactly as a key that does not exist, for signing, showing and listing.
    assert _sign(server, token, ops_key)[0] == 200
    status, closed_body = _sign(server, token, prod_key)
    missing_status, missing_body = _sign(server, token, MISSING_KEY)
    assert (status, missing_status) == (404, 404)
    assert closed_body["code"] == "key_not_found"
    assert _not_found(closed_body) == _not_found(missing_body)
    assert server.call("GET", f"/v1/keys/{prod_key}", token=token)[0] == 404
    status, _, listed = server.call("GET", "/v1/keys?limit=1000", token=token)
    assert status == 200
    visible = {k["id"] for k in listed["items"]}
    assert ops_key in visible and prod_key not in visible and ci_key not in visible

    # A narrower allow for the same group under its no-access reopens that part only.
    _grant(server, group="developers", scope="acme/payments/prod/ci", operations=["sign_transaction"])
    assert _sign(server, token, ci_key)[0] == 200
    assert _sign(server, token, prod_key)[0] == 404

    # The principal's own grant unions with the group's answer: the group's exception does not take
    # away what the principal is granted itself.
    own = _grant(server, principal_id=principal_id, key_id=prod_key, operations=["sign_transaction"])
    assert _sign(server, token, prod_key, 1)[0] == 200
    assert server.call("DELETE", f"/v1/grants/{own['id']}", token=admin)[0] == 200
    assert _sign(server, token, prod_key, 2)[0] == 404

    # Revoking the exception gives back what the scope grant says.
    assert server.call("DELETE", f"/v1/grants/{closed['id']}", token=admin)[0] == 200
    assert _sign(server, token, prod_key, 3)[0] == 200

    # Listing shows it; the audit event of its creation says what it was.
    status, _, grants = server.call("GET", "/v1/grants", token=admin)
    assert status == 200
    shown = next(g for g in grants["items"] if g["id"] == closed["id"])
    assert shown["no_access"] is True and shown["revoked"] is True
    created = [e for e in events(export_audit(server)) if e.get("kind") == "grant.create"]
    assert any(e["grant"]["id"] == closed["id"] and e["grant"]["no_access"] is True for e in created)


@pytest.mark.parametrize(
    "fields",
    [
        {"operations": ["sign_message"], "no_access": True},
        {"operations": [], "no_access": True},
        {"no_access": True, "max_uses": 1},
        {"no_access": True, "value_budgets": {}},
        {"no_access": False},
        {},
    ],
)
def test_a_grant_allows_operations_or_says_no_access_never_both_or_neither(
    server: Server, fields: dict[str, Any]
) -> None:
    status, _, body = server.call(
        "POST", "/v1/grants", {"group": "nobody-in-particular", "scope": "acme", **fields},
        server.installation.admin_token,
    )  # fmt: skip
    assert status in (400, 422), body
