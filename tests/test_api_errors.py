"""Bad input through the running server: a clear 4xx with a stable code, nothing half-written, no secret."""

from __future__ import annotations

import json
import socket

import pytest

from tests.service_harness import Server, grant, make_key, make_service
from tests.test_api_signing import tx_fields


@pytest.fixture
def setup(server: Server, unique_name: str):
    service = make_service(server, unique_name)
    key = make_key(server, "secp256k1", "errors")
    grant(server, service["principal"]["id"], key["id"], ["sign_transaction", "sign_message"])
    return service["credentials"]["access_token"], key


def audit_count(server: Server) -> int:
    status, _, text = server.call(
        "GET", "/v1/audit/events?limit=10000", token=server.installation.admin_token
    )
    assert status == 200
    return len([line for line in text.splitlines() if line.strip()]) if isinstance(text, str) else 1


def sign_tx(server: Server, token: str, key_id: str, body, **kw):
    return server.call("POST", f"/v1/keys/{key_id}/sign/transaction", body, token, **kw)


def assert_problem(status: int, body, expected_status: int, code: str):
    assert status == expected_status, body
    assert isinstance(body, dict) and body["code"] == code, body
    assert body["status"] == expected_status
    assert "request_id" in body
    text = json.dumps(body)
    assert "Traceback" not in text and "/work/" not in text and "sqlalchemy" not in text.lower()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "malformed_json"),
        (b'{"transaction": {"type": 2}, "transaction": {}}', "malformed_json"),
        (b'{"transaction": {"value": NaN}}', "malformed_json"),
        (b"[" * 5000 + b"]" * 5000, "malformed_json"),
        (b'{"transaction": {"value": ' + b"9" * 5000 + b"}}", "malformed_json"),
        (b"[]", "invalid_request"),
        (b"\xff\xfe", "malformed_json"),
        (b"", "malformed_json"),
    ],
)
def test_hostile_json(server: Server, setup, raw: bytes, code: str):
    token, key = setup
    status, _, body = sign_tx(server, token, key["id"], None, raw=raw)
    assert_problem(status, body, 400, code)


def test_unknown_and_mistyped_fields(server: Server, setup):
    token, key = setup
    status, _, body = sign_tx(server, token, key["id"], {"transaction": tx_fields(2), "admin": True})
    assert_problem(status, body, 400, "unknown_field")
    status, _, body = sign_tx(server, token, key["id"], {"transaction": {**tx_fields(2), "extra": 1}})
    assert_problem(status, body, 400, "unknown_field")
    status, _, body = sign_tx(server, token, key["id"], {"transaction": "0x02"})
    assert_problem(status, body, 400, "invalid_field")
    status, _, body = sign_tx(server, token, key["id"], {"transaction": {**tx_fields(2), "gas": 1.5}})
    assert status == 400, body


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"chainId": None}, "missing_chain_id"),
        ({"chainId": 0}, "invalid_chain_id"),
        ({"value": -1}, "value_out_of_range"),
        ({"value": 2**256}, "value_out_of_range"),
        ({"value": hex(2**256)}, "value_out_of_range"),
        ({"to": "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}, "invalid_address"),
        ({"to": "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae"}, "invalid_address"),
        ({"data": "0xzz"}, "invalid_hex"),
        ({"value": True}, "invalid_field"),
    ],
)
def test_bad_transaction_fields(server: Server, setup, change, code):
    token, key = setup
    fields = tx_fields(2)
    for name, value in change.items():
        if value is None:
            fields.pop(name)
        else:
            fields[name] = value
    status, _, body = sign_tx(server, token, key["id"], {"transaction": fields})
    assert_problem(status, body, 400, code)


def test_body_over_limit_is_413_before_parsing(server: Server, setup):
    token, key = setup
    big = {"message": "a" * (70 * 1024)}
    status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/message", big, token)
    assert_problem(status, body, 413, "body_too_large")


def test_chunked_body_over_limit(server: Server, setup):
    token, key = setup
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            f"POST /v1/keys/{key['id']}/sign/message HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.sendall(head)
        chunk = b"a" * 8192
        try:
            for _ in range(20):
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            response += data
    assert response.startswith(b"HTTP/1.1 413"), response[:200]


def test_unknown_key_disabled_key_and_wrong_curve(server: Server, setup, unique_name: str):
    token, key = setup
    status, _, body = sign_tx(server, token, "key_doesnotexist", {"transaction": tx_fields(2)})
    assert_problem(status, body, 404, "key_not_found")
    # A key that exists but is not granted answers exactly like a missing one.
    other = make_key(server, "secp256k1", "other")
    status, _, body = sign_tx(server, token, other["id"], {"transaction": tx_fields(2)})
    assert_problem(status, body, 404, "key_not_found")

    admin = server.installation.admin_token
    status, _, _ = server.call("POST", f"/v1/keys/{key['id']}/disable", None, admin)
    assert status == 200
    status, _, body = sign_tx(server, token, key["id"], {"transaction": tx_fields(2)})
    assert_problem(status, body, 409, "key_disabled")
    assert body["state"] == "suspended"
    status, _, _ = server.call("POST", f"/v1/keys/{key['id']}/enable", None, admin)
    status, _, body = sign_tx(server, token, key["id"], {"transaction": tx_fields(2)})
    assert status == 200, body


def test_missing_malformed_and_revoked_tokens(server: Server, setup):
    token, key = setup
    body = {"transaction": tx_fields(2)}
    for header in (
        None,
        "Bearer",
        "Basic abc",
        "Bearer sat_000000000000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ):
        headers = {"Authorization": header} if header else {}
        status, hdrs, problem = server.call(
            "POST", f"/v1/keys/{key['id']}/sign/transaction", body, None, headers=headers
        )
        assert_problem(status, problem, 401, "unauthenticated")
        assert "Bearer" in hdrs.get("WWW-Authenticate", "")
    # A tampered secret for a real token id.
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    status, _, problem = sign_tx(server, forged, key["id"], body)
    assert_problem(status, problem, 401, "unauthenticated")

    token_id = token.split("_", 1)[1].split(".", 1)[0]
    status, _, _ = server.call("DELETE", f"/v1/tokens/{token_id}", None, server.installation.admin_token)
    assert status == 200
    status, _, problem = sign_tx(server, token, key["id"], body)
    assert_problem(status, problem, 401, "token_revoked")


def test_refresh_rotates_and_replay_revokes_family(server: Server, unique_name: str):
    created = make_service(server, unique_name)
    first = created["credentials"]
    status, _, second = server.call("POST", "/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 200, second
    assert second["access_token"] != first["access_token"]
    status, _, who = server.call("GET", "/v1/whoami", token=second["access_token"])
    assert status == 200 and who["name"] == unique_name
    # Replaying the used refresh token is theft or a bug: the whole family dies.
    status, _, problem = server.call("POST", "/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert_problem(status, problem, 401, "token_revoked")
    status, _, problem = server.call("GET", "/v1/whoami", token=second["access_token"])
    assert_problem(status, problem, 401, "token_revoked")
    # An access token is not a refresh token.
    status, _, problem = server.call("POST", "/v1/auth/refresh", {"refresh_token": first["access_token"]})
    assert_problem(status, problem, 401, "unauthenticated")


def test_service_cannot_administer(server: Server, setup):
    token, key = setup
    for method, path, body in (
        ("POST", "/v1/keys", {"curve": "secp256k1", "label": "x"}),
        ("POST", "/v1/principals", {"name": "evil", "role": "admin"}),
        ("POST", "/v1/grants", {"principal_id": "p", "key_id": key["id"], "operations": ["sign_raw"]}),
        ("POST", f"/v1/keys/{key['id']}/disable", None),
        ("GET", "/v1/audit/events", None),
    ):
        status, _, problem = server.call(method, path, body, token)
        assert_problem(status, problem, 403, "role_required")


def test_unknown_route_and_method(server: Server):
    status, _, body = server.call("GET", "/v1/nope")
    assert_problem(status, body, 404, "not_found")
    status, _headers, body = server.call("PUT", "/v1/keys")
    assert_problem(status, body, 405, "method_not_allowed")


def test_readyz_and_healthz(server: Server):
    status, _, body = server.call("GET", "/readyz")
    assert status == 200 and body == {"status": "ready", "checks": {"hsm": "up", "database": "up"}}
    status, _, body = server.call("GET", "/healthz")
    assert status == 200 and body == {"status": "ok"}


def test_no_secret_in_logs_or_responses(server: Server, setup):
    token, key = setup
    pin = (server.installation.data_dir / "hsm-user-pin").read_text().strip()
    so_pin = (server.installation.data_dir / "hsm-so-pin").read_text().strip()
    admin_token = server.installation.admin_token
    status, _, body = server.call("GET", f"/v1/keys/{key['id']}", token=admin_token)
    assert status == 200
    text = json.dumps(body)
    assert "CKA_VALUE" not in text and pin not in text
    assert body["attributes"]["CKA_NEVER_EXTRACTABLE"] is True
    assert body["attributes"]["CKA_ALWAYS_SENSITIVE"] is True
    assert body["attributes"]["CKA_LOCAL"] is True
    assert body["attributes"]["CKA_EXTRACTABLE"] is False
    log = server.log_text()
    for secret in (pin, so_pin, admin_token, token, admin_token.split(".")[1], token.split(".")[1]):
        assert secret not in log
    status, _, exported = server.call("GET", "/v1/audit/events?limit=10000", token=admin_token)
    for secret in (pin, so_pin, admin_token.split(".")[1], token.split(".")[1]):
        assert secret not in exported


def test_nesting_at_the_body_limit_cannot_crash_the_server(server: Server, setup):
    token, key = setup
    # eth-account's py_ecc raises the recursion limit; 64 KiB of '[' must still be a clean 400.
    for raw in (b"[" * 65000, b'{"a":' * 10000 + b"1" + b"}" * 10000, b'["' + b"[" * 60000 + b'"]'):
        status, _, body = sign_tx(server, token, key["id"], None, raw=raw)
        assert status == 400, body
    status, _, _ = server.call("GET", "/healthz")
    assert status == 200


def test_no_version_banner(server: Server):
    _, headers, _ = server.call("GET", "/healthz")
    assert "Server" not in headers


def test_host_allowlist(installation, tmp_path):
    from tests.service_harness import start_server

    running = start_server(installation, env={"SIGNER_ALLOWED_HOSTS": "signer.internal,127.0.0.1"})
    try:
        status, _, _ = running.call("GET", "/healthz")
        assert status == 200  # urllib sends Host: 127.0.0.1:<port>
        status, _, body = running.call("GET", "/healthz", headers={"Host": "evil.example"})
        assert_problem(status, body, 400, "host_not_allowed")
        status, _, _ = running.call("GET", "/healthz", headers={"Host": "signer.internal:8443"})
        assert status == 200
    finally:
        running.stop()
