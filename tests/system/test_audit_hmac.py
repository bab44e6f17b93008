"""U-03 through a running server: an Idempotency-Key is written to the audit log only as an HMAC under
the install's audit field key (in the token), and ``POST /v1/audit/hmac`` gives an auditor that HMAC.

Equal values give equal HMACs (the look-up finds the event), different values different ones, the
field's name is bound in, and the key's canary value appears nowhere: not in the audit export, not in
the server's logs, not in the database file, not in the look-up's own audit event. A service principal
is refused (403), and a burst beyond the per-principal rate gets 429.
"""

from __future__ import annotations

import secrets
from typing import Any

from tests.service_harness import Server, grant, http, make_key, make_service
from tests.system.support import RECIPIENT, events, export_audit


def _tx(nonce: int) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 1,
        "nonce": nonce,
        "gas": 21000,
        "to": RECIPIENT,
        "value": 1,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }


def _hmac(server: Server, token: str, value: str, field: str = "idempotency_key") -> tuple[int, Any]:
    status, _, body = http("POST", server.url + "/v1/audit/hmac", {"field": field, "value": value}, token)
    return status, body


def test_idempotency_keys_are_audited_as_hmacs_only(server: Server) -> None:
    admin = server.installation.admin_token
    service = make_service(server, "hmac-relayer-" + secrets.token_hex(3))
    token = service["credentials"]["access_token"]
    key = make_key(server, "secp256k1", "hmac")
    grant(server, service["principal"]["id"], key["id"], ["sign_transaction"])
    canary = "CANARY-idem-" + secrets.token_hex(8)
    status, _, signed = http(
        "POST",
        f"{server.url}/v1/keys/{key['id']}/sign/transaction",
        {"transaction": _tx(7)},
        token,
        headers={"Idempotency-Key": canary},
    )
    assert status == 200, signed

    status, first = _hmac(server, admin, canary)
    assert status == 200 and first["event_field"] == "idempotency_key_hmac"
    assert len(first["hmac"]) == 64 and canary not in str(first)
    status, again = _hmac(server, admin, canary)
    assert again["hmac"] == first["hmac"]
    status, other = _hmac(server, admin, canary + "x")
    assert other["hmac"] != first["hmac"]
    status, wrong_field = _hmac(server, admin, canary, field="token")
    assert status == 400 and canary not in str(wrong_field)

    lines = export_audit(server)
    text = "".join(lines)
    assert canary not in text
    found = [e for e in events(lines) if e.get("idempotency_key_hmac") == first["hmac"]]
    assert [e["outcome"] for e in found] == ["allowed"]
    assert all("idempotency_key_sha256" not in e for e in events(lines))
    lookups = [e for e in events(lines) if e["kind"] == "audit.hmac_computed"]
    assert lookups and all(e["field"] == "idempotency_key" and "hmac" not in e for e in lookups)
    assert first["hmac"] not in "".join(line for line in lines if "audit.hmac_computed" in line)

    # Nor in any log (the idempotency table itself keeps the key until it expires: it must look it up).
    for path in server.installation.data_dir.glob("*.log"):
        assert canary.encode() not in path.read_bytes(), path
    assert canary not in server.log_text()

    # Only auditors and admins may ask.
    status, refused = _hmac(server, token, canary)
    assert status == 403 and canary not in str(refused)


def test_hmac_lookups_are_rate_limited_per_principal(server: Server) -> None:
    auditor = http(
        "POST",
        server.url + "/v1/principals",
        {"name": "hmac-auditor-" + secrets.token_hex(3), "role": "auditor"},
        server.installation.admin_token,
    )[2]["credentials"]["access_token"]
    statuses = [_hmac(server, auditor, f"v{i}")[0] for i in range(61)]
    assert statuses[:60] == [200] * 60
    assert statuses[60] == 429
    assert _hmac(server, server.installation.admin_token, "still-fine")[0] == 200
