"""Issue 10 section 5 (A-13, I-02): nothing echoed, nothing cached, nothing held open, by class.

One server runs for the module with a 1 s request-head deadline, a 2 s keep-alive and
``allowed_hosts = 127.0.0.1``; every test talks to it from outside, over raw sockets where the point is
what happens below HTTP. Requests are built from the live ``/openapi.json`` so a route added later is
covered without editing this file:

- every request that cannot be parsed (oversized header or line, bad request line, method, version,
  header byte, chunk size, Content-Length) and every request the application refuses (bad JSON, a bad
  value, a bad query parameter, a bad timestamp, bad chunking met while reading a body) answers a problem
  document; neither the response nor the server's log contains the canary it carried;
- a connection that trickles its head, sends nothing, or idles after a response is closed by the server;
- every response, on every route and every error path, says ``Cache-Control: no-store`` (the API
  contract pages may say ``no-cache``: they carry nothing secret);
- a Host not allowed is refused on every route (API, health, metrics, contract, console, unknown paths),
  also in absolute form and when the header is absent;
- every timestamp field of every request body refuses naive, malformed and out-of-range times with 400
  ``invalid_timestamp``, never 500.
"""

from __future__ import annotations

import json
import secrets
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service_harness import Server, init_installation, make_key, make_service, start_server
from tests.system.support import HANG_GUARD, assert_no_secret, export_audit, installation_secrets

HEADER_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    installation = init_installation(tmp_path_factory.mktemp("edge") / "data")
    server = start_server(
        installation,
        env={
            "SIGNER_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "SIGNER_KEEPALIVE_TIMEOUT_SECONDS": str(KEEPALIVE_TIMEOUT),
            "SIGNER_ALLOWED_HOSTS": "127.0.0.1",
        },
    )
    try:
        yield server
    finally:
        server.stop()
        assert_no_secret(server.log_text(), installation_secrets(installation), "the server log")


def canary() -> str:
    return "canary" + secrets.token_hex(12)


def exchange(server: Server, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or a response is whole)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_GUARD) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            if _complete(received):
                break
    return received


def _complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_and_problem(received: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, json.loads(body)


def openapi(server: Server) -> dict[str, Any]:
    status, _, document = server.call("GET", "/openapi.json")
    assert status == 200
    return document


def concrete(path: str) -> str:
    """A template path with every parameter filled by an id that exists nowhere."""
    parts = [("nosuch" if part.startswith("{") else part) for part in path.split("/")]
    return "/".join(parts)


# -- 1. nothing echoed --------------------------------------------------------------------------------


def parse_failures(token: str) -> list[tuple[str, bytes]]:
    """Requests aiohttp's parser refuses, each carrying ``token`` where a careless message would quote it."""
    t = token.encode()
    host = b"Host: 127.0.0.1\r\n"
    return [
        (
            "oversized bearer",
            b"GET /v1/whoami HTTP/1.1\r\n" + host + b"Authorization: Bearer " + t * 800 + b"\r\n\r\n",
        ),
        ("oversized line", b"GET /healthz?" + t * 800 + b" HTTP/1.1\r\n" + host + b"\r\n"),
        ("oversized header name", b"GET /healthz HTTP/1.1\r\n" + host + b"X-" + t * 800 + b": v\r\n\r\n"),
        ("request line", b"GET /" + t + b" HTTP/1.1 junk\r\n" + host + b"\r\n"),
        ("method", t + b"\x01 / HTTP/1.1\r\n" + host + b"\r\n"),
        ("version", b"GET / HTTP/1." + t + b"\r\n" + host + b"\r\n"),
        ("header name byte", b"GET / HTTP/1.1\r\n" + host + b"X-" + t + b"\x01: v\r\n\r\n"),
        ("header value byte", b"GET / HTTP/1.1\r\n" + host + b"X-Token: " + t + b"\x7f\r\n\r\n"),
        ("header without colon", b"GET / HTTP/1.1\r\n" + host + t + b"\r\n\r\n"),
        (
            "content-length",
            b"POST /v1/principals HTTP/1.1\r\n" + host + b"Content-Length: " + t + b"\r\n\r\n",
        ),
        (
            "chunk size",
            b"POST /v1/auth/refresh HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + t + b"\r\n" + t + b"\r\n0\r\n\r\n",
        ),
        (
            "chunk after a good chunk",
            b"POST /v1/auth/refresh HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n2\r\n{"\r\nzz' + t + b"\r\n",
        ),
        (
            "too many headers",
            b"GET / HTTP/1.1\r\n"
            + host
            + b"".join(b"X-%d: " % i + t + b"\r\n" for i in range(200))
            + b"\r\n",
        ),
        ("duplicate host", b"GET / HTTP/1.1\r\n" + host + b"Host: " + t + b"\r\n\r\n"),
    ]


def app_failures(token: str, admin: str) -> list[tuple[str, bytes]]:
    """Requests that parse as HTTP but that the application refuses, each carrying ``token``."""
    t = token.encode()
    auth = b"Authorization: Bearer " + admin.encode() + b"\r\n"

    def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
        return (
            b"POST "
            + path
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + auth
            + extra
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )

    def get(path: bytes) -> bytes:
        return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth + b"\r\n"

    return [
        ("malformed json", post(b"/v1/principals", b'{"name": "' + t + b'",')),
        ("bad utf-8", post(b"/v1/principals", b'{"name": "' + t + b'\xff"}')),
        ("wrong type", post(b"/v1/principals", b'{"name": 1, "role": "' + t + b'"}')),
        ("bad name", post(b"/v1/principals", b'{"name": "' + t + b'!", "role": "service"}')),
        (
            "bad timestamp",
            post(b"/v1/grants", b'{"operations": ["sign_message"], "expires_at": "' + t + b'"}'),
        ),
        (
            "naive timestamp",
            post(b"/v1/grants", b'{"operations": ["sign_message"], "expires_at": "2030-01-01T00:00:00"}'),
        ),
        ("unknown field", post(b"/v1/principals", b'{"name": "x", "role": "service", "' + t + b'": 1}')),
        ("nested unknown field", post(b"/v1/principals", b'{"name": {"' + t + b'": 1}, "role": "service"}')),
        ("duplicate key", post(b"/v1/principals", b'{"' + t + b'": 1, "' + t + b'": 2}')),
        (
            "dict key",
            post(b"/v1/grants", b'{"operations": ["sign_message"], "value_budgets": {"' + t + b'": 5}}'),
        ),
        ("bad refresh", post(b"/v1/auth/refresh", b'{"refresh_token": "' + t + b'"}')),
        ("bad query", get(b"/v1/keys?limit=" + t)),
        ("unknown query parameter", get(b"/v1/keys?" + t + b"=1")),
        ("bad cursor", get(b"/v1/audit/events?after=" + t)),
        ("bad percent", get(b"/v1/keys/%ZZ" + t + b"%")),
        ("nul in path", get(b"/v1/keys/%00" + t)),
        ("unknown route", get(b"/" + t)),
        ("bad content-encoding", post(b"/v1/principals", t, b"Content-Encoding: gzip\r\n")),
        (
            "bad bearer",
            b"GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + t + b"\r\n\r\n",
        ),
    ]


def test_no_error_echoes_what_it_was_sent(edge: Server) -> None:
    token = canary()
    admin = edge.installation.admin_token
    cases = [*parse_failures(token), *app_failures(token, admin)]
    for name, data in cases:
        received = exchange(edge, data)
        assert received, name
        assert token.encode() not in received, f"{name}: the response quotes the request"
        status, headers, problem = status_and_problem(received)
        assert 400 <= status < 500, (name, status, problem)
        assert headers["content-type"].startswith("application/problem+json"), name
        assert problem["code"] and problem["status"] == status, name
        assert "server" not in headers, f"{name}: a version banner"
    log = edge.log_text()
    assert token not in log, "the server log quotes a refused request"
    assert "Traceback" not in log or "message withheld" in log


def payload_documents(t: str) -> list[tuple[str, str, str, Any]]:
    """Documents inside a request body that the services read themselves (a policy, a transaction, EIP-712
    data), each with a field named ``t`` where no field of that name is allowed: (case, route kind,
    content type, body)."""
    rule = {"id": "r", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1]}
    cap = {"id": "c", "kind": "value_cap", "effect": "require_approval", "max_value": "1"}
    approval = {"quorum": 1, "group": "g", "expires_in_seconds": 60}
    domains = {"id": "d", "kind": "typed_data_domain_allowlist", "effect": "deny"}
    policy = {"id": "p-echo", "version": 1}
    to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    tx = {"type": 4, "chainId": 1, "nonce": 0, "gas": 90000, "to": to, "value": 0}
    tx |= {"maxFeePerGas": 2, "maxPriorityFeePerGas": 1, "accessList": []}
    auth = {"chainId": 1, "address": to, "nonce": 0, "yParity": 0, "r": 1, "s": 1}
    domain_type = [{"name": "name", "type": "string"}]
    mail = [{"name": "from", "type": "Person"}]
    person = [{"name": "name", "type": "string"}]
    typed = {
        "types": {"EIP712Domain": domain_type, "Mail": mail, "Person": person},
        "primaryType": "Mail",
        "domain": {"name": "x"},
        "message": {"from": {"name": "a"}},
    }
    return [
        ("policy top", "policy", "json", {**policy, "rules": [], t: 1}),
        ("policy rule", "policy", "json", {**policy, "rules": [{**rule, t: 1}]}),
        ("policy approval", "policy", "json", {**policy, "rules": [{**cap, "approval": {**approval, t: 1}}]}),
        (
            "policy domain",
            "policy",
            "json",
            {**policy, "rules": [{**domains, "domains": [{"name": "x", t: 1}]}]},
        ),
        ("policy duplicate key", "policy", "raw", f'{{"{t}": 1, "{t}": 2}}'),
        ("policy yaml", "policy", "yaml", f"id: p-echo\nversion: 1\nrules: []\n{t}: 1\n"),
        ("transaction", "transaction", "json", {"transaction": {**tx, "authorizationList": [auth], t: 1}}),
        (
            "access list",
            "transaction",
            "json",
            {
                "transaction": {
                    **tx,
                    "authorizationList": [auth],
                    "accessList": [{"address": to, "storageKeys": [], t: 1}],
                }
            },
        ),
        (
            "authorization",
            "transaction",
            "json",
            {"transaction": {**tx, "authorizationList": [{**auth, t: 1}]}},
        ),
        ("typed data top", "typed-data", "json", {"typed_data": {**typed, t: 1}}),
        ("typed data domain", "typed-data", "json", {"typed_data": {**typed, "domain": {"name": "x", t: 1}}}),
        (
            "typed data message",
            "typed-data",
            "json",
            {"typed_data": {**typed, "message": {"from": {"name": "a"}, t: 1}}},
        ),
        (
            "typed data nested",
            "typed-data",
            "json",
            {"typed_data": {**typed, "message": {"from": {"name": "a", t: 1}}}},
        ),
    ]


def test_no_refusal_of_a_payload_document_names_a_field_it_was_sent(edge: Server, unique_name: str) -> None:
    """An unknown field anywhere in a policy document, a transaction or EIP-712 data is reported by where
    it is (and what is allowed there), never by its name: not in the response, the log or the audit."""
    token = canary()
    admin = edge.installation.admin_token
    service = make_service(edge, unique_name)
    key = make_key(edge, "secp256k1", unique_name[:60])
    status, _, body = edge.call(
        "POST",
        "/v1/grants",
        {
            "principal_id": service["principal"]["id"],
            "key_id": key["id"],
            "operations": ["sign_transaction", "sign_typed_data"],
        },
        admin,
    )
    assert status == 201, body
    relayer = service["credentials"]["access_token"]
    for name, kind, content, document in payload_documents(token):
        if kind == "policy":
            raw = json.dumps(document) if content == "json" else document
            headers = {"Content-Type": "application/yaml"} if content == "yaml" else {}
            status, _, problem = edge.call(
                "POST", "/v1/policies", token=admin, raw=raw.encode(), headers=headers
            )
        else:
            path = f"/v1/keys/{key['id']}/sign/{kind}"
            status, _, problem = edge.call("POST", path, document, relayer)
        assert status == 400, (name, status, problem)
        assert token not in json.dumps(problem), f"{name}: the refusal names the field it was sent"
    assert token not in edge.log_text()
    assert token not in "\n".join(export_audit(edge))


def test_parse_errors_have_stable_codes(edge: Server) -> None:
    token = canary()
    codes = {}
    for name, data in parse_failures(token):
        _, _, problem = status_and_problem(exchange(edge, data))
        codes[name] = problem["code"]
    assert codes["oversized bearer"] == codes["oversized line"] == "request_head_too_large"
    assert codes["request line"] == codes["header value byte"] == "malformed_request"


# -- 2. nothing held open -----------------------------------------------------------------------------


def closed_by_server(sock: socket.socket, trickle: bytes = b"") -> bool:
    """Send ``trickle`` a byte at a time (one per 0.2 s) until the server closes the connection; True if it
    did before the hang guard. The pace is the behaviour under test, not a synchronisation."""
    deadline = time.monotonic() + HANG_GUARD
    position = 0
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    return True
            except ConnectionResetError:
                return True
            continue
        if position < len(trickle):
            try:
                sock.send(trickle[position : position + 1])
            except (BrokenPipeError, ConnectionResetError):
                return True
            position += 1
    return False


def test_a_trickled_head_is_cut_off(edge: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 400 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", edge.port), timeout=HANG_GUARD) as sock:
        assert closed_by_server(sock, head)
    # The service itself is unharmed.
    assert edge.call("GET", "/healthz")[0] == 200


def test_a_silent_connection_is_closed(edge: Server) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=HANG_GUARD) as sock:
        assert closed_by_server(sock)


def test_an_idle_keep_alive_connection_is_closed(edge: Server) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=HANG_GUARD) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while not _complete(received):
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        assert closed_by_server(sock)


def test_a_slow_head_after_a_kept_alive_request_is_cut_off(edge: Server) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=HANG_GUARD) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while not _complete(received):
            received += sock.recv(65536)
        # A keep-alive timer re-armed by each byte would never fire; the head deadline does.
        assert closed_by_server(sock, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 400)


# -- 3. nothing cached --------------------------------------------------------------------------------


def every_operation(server: Server) -> list[tuple[str, str]]:
    document = openapi(server)
    return [
        (method.upper(), concrete(path))
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


CONSOLE = [
    ("GET", "/console"),
    ("GET", "/console/login"),
    ("POST", "/console/login"),
    ("POST", "/console/logout"),
    ("GET", "/console/approvals/nosuch"),
    ("POST", "/console/approvals/nosuch/approve"),
    ("GET", "/console/static/console.js"),
    ("GET", "/console/static/nosuch"),
    ("GET", "/console/keys"),
    ("GET", "/console/audit"),
    ("POST", "/console/grants/nosuch/revoke"),
    ("GET", "/console/checklist"),
    ("GET", "/console/principals/nosuch/disable"),
    ("POST", "/console/principals/nosuch/disable"),
    ("GET", "/console/secrets/nosuch/delete"),
    ("POST", "/console/secrets/nosuch/delete"),
    ("GET", "/console/secrets/nosuch/disable"),
    ("POST", "/console/secrets/nosuch/enable"),
    ("GET", "/no/such/route"),
]


def test_every_response_is_no_store(edge: Server, unique_name: str) -> None:
    admin = edge.installation.admin_token
    seen = 0
    for method, path in [*every_operation(edge), *CONSOLE]:
        for token in (admin, None):
            if (method, path) == ("POST", "/v1/auth/logout") or path.endswith("/stop"):
                continue
            status, headers, _ = edge.call(
                method, path, {} if method in ("POST", "PUT", "PATCH") else None, token
            )
            cache = {k.lower(): v for k, v in headers.items()}.get("cache-control")
            if path in ("/docs", "/openapi.json") and status == 200:
                assert cache in ("no-store", "no-cache"), (method, path)
            else:
                assert cache == "no-store", (method, path, status, cache)
            seen += 1
    assert seen > 40
    # The responses that carry credentials, on their success path.
    service = make_service(edge, unique_name)
    status, headers, body = edge.call(
        "POST", "/v1/auth/refresh", {"refresh_token": service["credentials"]["refresh_token"]}
    )
    assert status == 200 and headers["Cache-Control"] == "no-store"
    status, headers, body = edge.call(
        "POST", f"/v1/principals/{service['principal']['id']}/tokens", token=admin
    )
    assert status == 201 and "access_token" in body and headers["Cache-Control"] == "no-store"
    status, headers, _ = edge.call("GET", "/console/login")
    assert status == 200 and headers["Cache-Control"] == "no-store"


# -- 5. allowed_hosts on every route ------------------------------------------------------------------


def test_a_host_not_allowed_is_refused_on_every_route(edge: Server) -> None:
    admin = edge.installation.admin_token
    routes = [*every_operation(edge), *CONSOLE, ("GET", "/metrics"), ("GET", "/healthz")]
    for method, path in routes:
        for host in ("evil.example", "EVIL.example:8080", "127.0.0.1.evil.example", "127.0.0.2", "[::1]"):
            status, _, body = edge.call(method, path, None, admin, headers={"Host": host})
            assert status == 400 and body["code"] == "host_not_allowed", (method, path, host, status)
    for spelling in ("127.0.0.1", "127.0.0.1.", f"127.0.0.1:{edge.port}"):
        assert edge.call("GET", "/metrics", headers={"Host": spelling})[0] == 200, spelling


def test_a_host_not_allowed_is_refused_in_absolute_form_and_when_absent(edge: Server) -> None:
    absolute = exchange(edge, b"GET http://evil.example/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, _, problem = status_and_problem(absolute)
    assert (status, problem["code"]) == (400, "host_not_allowed")
    absent = exchange(edge, b"GET /metrics HTTP/1.0\r\n\r\n")
    status, _, problem = status_and_problem(absent)
    assert (status, problem["code"]) == (400, "host_not_allowed")


def test_a_header_that_may_appear_once_is_refused_twice_on_every_route(edge: Server) -> None:
    """Two Authorization headers (a proxy may have checked the other), two Idempotency-Keys, two request
    ids or two Cookie headers: 400 ``duplicate_header`` whichever comes first, on every route."""
    admin = edge.installation.admin_token.encode()
    doubled = {
        "Authorization": (b"Bearer " + admin, b"Bearer not-a-token"),
        "Idempotency-Key": (b"key-1", b"key-2"),
        "X-Request-Id": (b"first", b"second"),
        "Cookie": (b"a=1", b"b=2"),
    }
    for method, path in [*every_operation(edge), *CONSOLE, ("GET", "/metrics"), ("GET", "/healthz")]:
        for name, (one, other) in doubled.items():
            for first, second in ((one, other), (other, one)):
                head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n" % (
                    method.encode(),
                    path.encode(),
                )
                if name != "Authorization":
                    head += b"Authorization: Bearer " + admin + b"\r\n"
                head += b"%s: %s\r\n%s: %s\r\n\r\n" % (name.encode(), first, name.encode(), second)
                status, _, problem = status_and_problem(exchange(edge, head))
                assert (status, problem["code"]) == (400, "duplicate_header"), (method, path, name, problem)


def test_a_query_parameter_given_twice_is_refused(edge: Server) -> None:
    admin = edge.installation.admin_token
    document = openapi(edge)
    seen = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            names = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
            if method != "get" or not names:
                continue
            status, _, body = edge.call("GET", f"{concrete(path)}?{names[0]}=1&{names[0]}=2", token=admin)
            assert (status, body["code"]) == (400, "duplicate_query_parameter"), (path, body)
            seen += 1
    assert seen >= 5


# -- 6. every timestamp validated at the edge ---------------------------------------------------------


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _is_timestamp(document: dict[str, Any], schema: dict[str, Any]) -> bool:
    schema = _resolve(document, schema)
    if schema.get("format") == "date-time":
        return True
    return any(_is_timestamp(document, s) for s in schema.get("anyOf", []) + schema.get("oneOf", []))


def _example(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A value the schema accepts, for the required fields around the one under test."""
    schema = _resolve(document, schema)
    if "enum" in schema:
        return schema["enum"][0]
    for choice in schema.get("anyOf", []):
        if _resolve(document, choice).get("type") != "null":
            return _example(document, choice)
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items", {})
        return [_example(document, items)] if items else []
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _example(document, props[name]) for name in schema.get("required", [])}
    return {"integer": 1, "number": 1, "boolean": False}.get(kind, "x")


def timestamp_fields(server: Server) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, a body valid apart from the field, field) for every date-time field of a request."""
    document = openapi(server)
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if not content:
                continue
            schema = _resolve(document, content["schema"])
            base = _example(document, schema)
            for name, prop in schema.get("properties", {}).items():
                if _is_timestamp(document, prop):
                    found.append((method.upper(), concrete(path), base, name))
    return found


BAD_TIMES = [
    "2030-01-01T00:00:00",  # naive
    "2030-01-01 00:00:00",
    "2030-01-01",
    "00:00:00Z",
    "2030-01-01T00:00Z",
    "2030-13-01T00:00:00Z",
    "2030-02-30T00:00:00Z",
    "2030-01-01T24:00:00Z",
    "2030-01-01T00:00:60Z",
    "2030-01-01T00:00:00+24:00",
    "2030-01-01T00:00:00+0100",
    "9999-12-31T23:59:59-01:00",  # past year 9999 in UTC
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "1969-12-31T23:59:59Z",
    "+12030-01-01T00:00:00Z",
    "now",
    "",
    " 2030-01-01T00:00:00Z",
    "2030-01-01T00:00:00Z\n",
    "\uff12\uff10\uff13\uff10-01-01T00:00:00Z",  # full-width digits
    1893456000,
    1893456000.5,
    True,
    [],
    {},
]


def test_the_registry_has_timestamp_fields(edge: Server) -> None:
    fields = timestamp_fields(edge)
    assert ("POST", "/v1/grants") in {(m, p) for m, p, _, _ in fields}


@pytest.mark.parametrize("value", BAD_TIMES, ids=repr)
def test_every_timestamp_field_refuses_bad_times(edge: Server, value: Any) -> None:
    admin = edge.installation.admin_token
    for method, path, base, field in timestamp_fields(edge):
        status, headers, body = edge.call(method, path, {**base, field: value}, admin)
        assert status == 400, (path, field, value, status, body)
        assert body["code"] == "invalid_timestamp" and body["field"] == field, body
        assert headers.get("Cache-Control") == "no-store"


@pytest.fixture(scope="module")
def grant_target(edge: Server) -> dict[str, str]:
    service = make_service(edge, "edge-times")
    key = make_key(edge, "secp256k1", "edge-times")
    return {"principal_id": service["principal"]["id"], "key_id": key["id"]}


TIMESTAMP_LIKE = r"[0-9+-]{4,6}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d)?(\.\d{1,12})?([Zz]|[+-]\d\d:?\d\d)?"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.from_regex(TIMESTAMP_LIKE, fullmatch=True) | st.text(max_size=40) | st.integers())
def test_no_timestamp_is_a_server_error(edge: Server, grant_target: dict[str, str], value: Any) -> None:
    """Through the whole grant path (a real principal and key), any value is a grant or a 400."""
    admin = edge.installation.admin_token
    body = {**grant_target, "operations": ["sign_message"], "expires_at": value}
    status, _, answer = edge.call("POST", "/v1/grants", body, admin)
    assert status in (201, 400), (value, status, answer)
    if status == 400:
        assert answer["code"] in ("invalid_timestamp", "invalid_expiry"), answer
        # Nothing of the value is echoed: every detail is one of a few fixed texts, whatever was sent (a
        # substring test would trip on a value like "0" that the fixed example time happens to contain).
        assert answer["detail"] in _FIXED_DETAILS, (value, answer)


# Every detail a refused expires_at may carry; none of them is built from the value.
_FIXED_DETAILS = {
    "invalid value for expires_at: expected an RFC 3339 time with a time-zone offset,"
    " e.g. 2030-01-01T00:00:00Z",
    "invalid value for expires_at: not a valid date and time",
    "invalid value for expires_at: out of range: before 1970",
    "expires_at is in the past",
}


@pytest.mark.parametrize(
    "value", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999999+00:00", "2100-01-01T00:00:00+14:00"]
)
def test_extreme_valid_times_round_trip(edge: Server, unique_name: str, value: str) -> None:
    admin = edge.installation.admin_token
    service = make_service(edge, unique_name)
    key = make_key(edge, "secp256k1", "edge")
    status, _, grant = edge.call(
        "POST",
        "/v1/grants",
        {
            "principal_id": service["principal"]["id"],
            "key_id": key["id"],
            "operations": ["sign_message"],
            "expires_at": value,
        },
        admin,
    )
    assert status == 201, grant
    assert grant["expires_at"].startswith(
        ("9999-12-31T23:59:59", "2100-01-01T00:00:00", "2099-12-31T10:00:00")
    )
    status, _, listing = edge.call(
        "GET", f"/v1/grants?principal_id={service['principal']['id']}", token=admin
    )
    assert status == 200, listing
    status, _, signed = edge.call(
        "POST",
        f"/v1/keys/{key['id']}/sign/message",
        {"message": "hi"},
        service["credentials"]["access_token"],
    )
    assert status == 200, signed


def test_times_and_echoes_on_postgresql(tmp_path: Path, pg_url: str, launch) -> None:
    """The same edge on PostgreSQL: extreme valid times round-trip, bad ones are 400, nothing quoted."""
    server = launch(init_installation(tmp_path / "data", pg_url), env={"SIGNER_HEADER_TIMEOUT_SECONDS": "1"})
    admin = server.installation.admin_token
    service = make_service(server, "edge-pg")
    key = make_key(server, "secp256k1", "edge-pg")
    target = {"principal_id": service["principal"]["id"], "key_id": key["id"], "operations": ["sign_message"]}
    for value in ("9999-12-31T23:59:59.999999Z", "2100-01-01T00:00:00+14:00"):
        status, _, grant = server.call("POST", "/v1/grants", {**target, "expires_at": value}, admin)
        assert status == 201, grant
    for value in BAD_TIMES:
        status, _, body = server.call("POST", "/v1/grants", {**target, "expires_at": value}, admin)
        assert (status, body["code"]) == (400, "invalid_timestamp"), (value, body)
    token = canary()
    for name, data in [*parse_failures(token), *app_failures(token, admin)]:
        received = exchange(server, data)
        assert received and token.encode() not in received, name
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_GUARD) as sock:
        assert closed_by_server(sock, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 400)
    assert token not in server.log_text()
