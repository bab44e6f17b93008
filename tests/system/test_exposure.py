"""A-13: what the running service shows to whoever can reach it.

- Error responses are problem documents with a code, never a stack trace, a file path, SQL, a driver or
  PKCS#11 name (the HSM-down and database-down bodies are checked in test_hsm_gone and test_db_down).
- By default it listens on 127.0.0.1 only: every other local address (127.0.0.2, the host's other
  interfaces, ::1) refuses the connection, and the kernel's socket table shows one loopback listener.
- No CORS: no ``Access-Control-Allow-*`` header, even when a browser's Origin or preflight is sent.
- ``/healthz`` and ``/readyz`` say up/down and nothing else.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.service_harness import Server, grant, make_key, make_service

LEAKS = (
    "Traceback",
    'File "',
    "site-packages",
    ".py",
    "/work/",
    "sqlalchemy",
    "sqlite",
    "asyncpg",
    "SELECT ",
    "INSERT ",
    "pkcs11",
    "CKR_",
    "aiohttp",
    "Exception",
)


@pytest.fixture
def relayer(server: Server, unique_name: str) -> tuple[str, dict]:
    service = make_service(server, unique_name)
    key = make_key(server, "secp256k1", "exposure")
    grant(server, service["principal"]["id"], key["id"], ["sign_transaction", "sign_message"])
    return service["credentials"]["access_token"], key


def bad_requests(token: str, key_id: str, admin: str) -> list[tuple[str, str, dict]]:
    """(method, path, options for ``Server.call``) for every kind of refusal we can cause from outside."""
    sign = f"/v1/keys/{key_id}/sign/message"
    tx = f"/v1/keys/{key_id}/sign/transaction"
    return [
        ("POST", sign, {"raw": b"{not json", "token": token}),
        ("POST", sign, {"raw": b'{"message": "\xff\xfe"}', "token": token}),
        ("POST", sign, {"body": {"message": "x", "encoding": "utf8", "extra": 1}, "token": token}),
        ("POST", sign, {"body": {"message": 5, "encoding": "utf8"}, "token": token}),
        ("POST", sign, {"body": {"message": "0xzz", "encoding": "hex"}, "token": token}),
        ("POST", sign, {"raw": b'{"message": "' + b"a" * 70_000 + b'"}', "token": token}),
        ("POST", tx, {"body": {"transaction": {"type": 2, "chainId": 0}}, "token": token}),
        ("POST", tx, {"body": {"raw": "0x02c0ffee"}, "token": token}),
        ("POST", sign, {"body": {"message": "x", "encoding": "utf8"}}),
        ("POST", sign, {"body": {"message": "x", "encoding": "utf8"}, "token": "sat_nonsense"}),
        ("POST", sign, {"body": {"message": "x", "encoding": "utf8"}, "token": token[:-2] + "AA"}),
        ("POST", "/v1/keys/key_doesnotexist/sign/message", {"body": {"message": "x"}, "token": token}),
        ("POST", "/v1/keys/..%2F..%2Fetc%2Fpasswd/sign/message", {"body": {"message": "x"}, "token": token}),
        ("POST", "/v1/principals", {"body": {"name": "x", "role": "admin"}, "token": token}),
        ("GET", "/v1/keys?limit=abc", {"token": admin}),
        ("GET", "/v1/audit/events?after=x", {"token": admin}),
        ("DELETE", "/v1/keys", {"token": admin}),
        ("GET", "/no/such/route", {}),
        ("GET", "/v1/keys/%00", {"token": admin}),
    ]


def test_error_responses_carry_no_internals(server: Server, relayer) -> None:
    token, key = relayer
    admin = server.installation.admin_token
    data_dir = str(server.installation.data_dir)
    for method, path, options in bad_requests(token, key["id"], admin):
        status, headers, body = server.call(method, path, options.pop("body", None), **options)
        assert 400 <= status < 500, (method, path, status, body)
        assert headers.get("Content-Type", "").startswith("application/problem+json"), (path, headers)
        assert isinstance(body, dict) and isinstance(body.get("code"), str), (path, body)
        assert body["status"] == status and body["request_id"] == headers["X-Request-Id"]
        text = json.dumps(body)
        for leak in (*LEAKS, data_dir, str(Path(data_dir).parent)):
            assert leak not in text, (method, path, leak, body)


def local_addresses() -> list[tuple[int, str]]:
    """Every address of this host other than 127.0.0.1 that a socket can connect to without a scope."""
    found = {(socket.AF_INET, "127.0.0.2"), (socket.AF_INET6, "::1")}
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    last = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped.split()[1]
        elif "/32 host LOCAL" in stripped and last:
            found.add((socket.AF_INET, last))
    try:
        for row in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = row.split()[0]
            address = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw))
            if not address.startswith("fe80"):  # link-local needs a scope id
                found.add((socket.AF_INET6, address))
    except OSError:
        pass
    found.discard((socket.AF_INET, "127.0.0.1"))
    return sorted(found)


def test_listens_on_loopback_only_by_default(server: Server) -> None:
    assert server.extra_env.get("SIGNER_HOST") is None and "SIGNER_HOST" not in server.installation.env
    reachable = []
    for family, address in local_addresses():
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            try:
                probe.connect((address, server.port))
            except OSError:
                continue
            reachable.append(address)
    assert not reachable, f"the server answers on {reachable}"
    listeners = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == server.port:
                listeners.append(local.rsplit(":", 1)[0])
    assert listeners == ["0100007F"], listeners  # 127.0.0.1, IPv4 only


def test_no_cors_headers(server: Server, relayer) -> None:
    token, key = relayer
    origin = {"Origin": "https://evil.example"}
    sign = f"/v1/keys/{key['id']}/sign/message"
    answers = [
        server.call("GET", "/healthz", headers=origin),
        server.call("POST", sign, {"message": "cors", "encoding": "utf8"}, token, headers=origin),
        server.call(
            "OPTIONS",
            sign,
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        ),
    ]
    assert answers[1][0] == 200
    assert answers[2][0] >= 400  # no preflight is ever approved
    for _, headers, _ in answers:
        assert not [name for name in headers if name.lower().startswith("access-control-")], headers


def test_health_and_readiness_say_up_or_down_only(server: Server) -> None:
    status, _, body = server.call("GET", "/healthz")
    assert status == 200 and body == {"status": "ok"}
    status, _, body = server.call("GET", "/readyz")
    assert status == 200 and body == {"status": "ready", "checks": {"hsm": "up", "database": "up"}}
