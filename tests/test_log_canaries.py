"""Canaries (matrix rows A-14 and I3): no PIN, token, token key or signed payload reaches the logs, the
audit export or the database, on success paths, refusals, errors and a failed start.

Real parts only: `signer init` makes a SoftHSM token with random PINs (the canaries), a real server
subprocess logs to a file, and every secret the test knows is searched for in what the service wrote.
"""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from tests.service_harness import Server, grant, init_installation, make_key, make_service, start_server
from tests.test_api_signing import tx_fields


def _forms(value: str) -> set[str]:
    """The value and the encodings a careless log line might use."""
    raw = value.encode()
    return {value, json.dumps(value)[1:-1], base64.b64encode(raw).decode(), raw.hex()}


def test_no_secret_in_logs_audit_or_database(tmp_path_factory: pytest.TempPathFactory) -> None:
    installation = init_installation(tmp_path_factory.mktemp("canary"))
    data = installation.data_dir
    metrics_token = "metrics-canary-" + secrets.token_hex(16)
    (data / "metrics-token").write_text(metrics_token)
    server = start_server(installation, env={"SIGNER_METRICS_TOKEN_FILE": str(data / "metrics-token")})
    admin = installation.admin_token
    wrong_pin = "wrong-pin-canary-" + secrets.token_hex(8)
    message = "payload-canary-" + secrets.token_hex(16)
    forged = f"sat_{secrets.token_hex(12)}.{secrets.token_urlsafe(32)[:43]}"
    garbage = "garbage-token-canary-" + secrets.token_hex(16)
    try:
        service = make_service(server, "canary-relayer")
        token = service["credentials"]["access_token"]
        refresh = service["credentials"]["refresh_token"]
        key = make_key(server, "secp256k1", "canary")
        grant(server, service["principal"]["id"], key["id"], ["sign_transaction", "sign_message"])
        sign = f"/v1/keys/{key['id']}/sign"

        # Success paths.
        assert server.call("POST", f"{sign}/transaction", {"transaction": tx_fields(2)}, token)[0] == 200
        assert server.call("POST", f"{sign}/message", {"message": message}, token)[0] == 200
        status, _, renewed = server.call("POST", "/v1/auth/refresh", {"refresh_token": refresh})
        assert status == 200
        # Refusals: forged and garbage tokens; a wrong scheme; a request id that is not safe.
        assert server.call("GET", "/v1/whoami", token=forged)[0] == 401
        assert server.call("GET", "/v1/whoami", token=garbage)[0] == 401
        assert server.call("GET", "/v1/whoami", headers={"Authorization": f"Basic {garbage}"})[0] == 401
        assert server.call("POST", "/v1/auth/refresh", {"refresh_token": garbage})[0] == 401
        status, headers, _ = server.call("GET", "/healthz", headers={"X-Request-Id": f"{garbage} <x>"})
        assert status == 200 and garbage not in headers["X-Request-Id"]
        # Errors whose input carries a secret: unknown field, bad JSON, wrong types, bad hex.
        bad = [
            {"message": message, "token": token},
            {"message": 7, "pin": admin},
            {"message": message + "zz", "encoding": "hex"},
        ]
        for body in bad:
            assert server.call("POST", f"{sign}/message", body, renewed["access_token"])[0] == 400
        raw = b'{"message": "' + message.encode() + b'", ' + admin.encode()
        assert server.call("POST", f"{sign}/message", raw=raw, token=token)[0] in (400, 401)
        assert server.call("POST", "/v1/principals", {"name": admin, "role": "service"}, admin)[0] == 400
        assert server.call("GET", "/metrics", token=metrics_token)[0] == 200
        # Replaying a used refresh token revokes its whole family (so this comes last).
        assert server.call("POST", "/v1/auth/refresh", {"refresh_token": refresh})[0] == 401
        status, _, export = server.call("GET", "/v1/audit/events?limit=10000", token=admin)
        assert status == 200 and isinstance(export, str) and export
    finally:
        server.stop()

    # A failed start with a wrong PIN: refused, and the PIN is not in what it printed.
    failed = start_server(installation, env={"SIGNER_HSM_PIN": wrong_pin}, expect_ready=False)
    assert failed.process.wait(timeout=60) != 0

    canaries = {
        "user PIN": (data / "hsm-user-pin").read_text().strip(),
        "SO PIN": (data / "hsm-so-pin").read_text().strip(),
        "wrong PIN": wrong_pin,
        "token HMAC key": (data / "token-hmac.key").read_bytes().hex(),
        "metrics token": metrics_token,
        "admin token": admin,
        "admin refresh token": installation.admin["credentials"]["refresh_token"],
        "service token": token,
        "service refresh token": refresh,
        "renewed token": renewed["access_token"],
        "renewed refresh token": renewed["refresh_token"],
        "forged token": forged,
        "garbage token": garbage,
        "signed message": message,
    }
    # Tokens read <prefix>_<id>.<secret>: the id is public (audit events name it), the secret never.
    for name in [n for n, v in canaries.items() if v.startswith(("sat_", "srt_"))]:
        canaries[f"{name} secret"] = canaries[name].split(".", 1)[1]

    logs = server.log_text() + failed.log_text()
    # The scan means something only if the logs were written: one access line per request, with the
    # caller's principal id once authenticated, and the failed start said why.
    access = [json.loads(line) for line in server.log_text().splitlines() if '"signer.access"' in line]
    assert len(access) >= 15
    assert any(entry.get("principal") == service["principal"]["id"] for entry in access)
    assert "PIN" in failed.log_text()
    places = {"server log": logs, "audit export": export}
    database = b"".join(path.read_bytes() for path in sorted(data.glob("signer.db*")))
    hits = [
        f"{name} in {place}"
        for name, value in canaries.items()
        for place, text in places.items()
        if any(form in text for form in _forms(value))
    ]
    hits += [
        f"{name} in the database"
        for name, value in canaries.items()
        if name != "signed message" and value.encode() in database
    ]
    assert hits == []


def test_request_id_is_returned_logged_and_audited(server: Server, unique_name: str) -> None:
    service = make_service(server, unique_name)
    key = make_key(server, "secp256k1", "request-id")
    grant(server, service["principal"]["id"], key["id"], ["sign_transaction"])
    request_id = "relayer-" + secrets.token_hex(8)
    status, headers, _ = server.call(
        "POST",
        f"/v1/keys/{key['id']}/sign/transaction",
        {"transaction": tx_fields(2)},
        service["credentials"]["access_token"],
        headers={"X-Request-Id": request_id},
    )
    assert status == 200 and headers["X-Request-Id"] == request_id
    status, _, export = server.call(
        "GET", "/v1/audit/events?limit=10000", token=server.installation.admin_token
    )
    events = [json.loads(line) for line in export.splitlines() if request_id in line]
    assert [(e["kind"], e["request_id"]) for e in events] == [("sign.transaction", request_id)]
    line = next(
        json.loads(entry)
        for entry in server.log_text().splitlines()
        if '"signer.access"' in entry and request_id in entry
    )
    assert line["principal"] == service["principal"]["id"]
    assert line["route"] == "/v1/keys/{key_id}/sign/transaction" and line["status"] == 200
    assert line["method"] == "POST" and line["duration_ms"] > 0
    # An unsafe id is replaced, not echoed.
    status, headers, _ = server.call("GET", "/healthz", headers={"X-Request-Id": "a" * 65})
    assert status == 200 and headers["X-Request-Id"] != "a" * 65 and len(headers["X-Request-Id"]) == 16
