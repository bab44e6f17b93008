"""Attacks on the secrets API through a running server: existence oracles, grant scope, value leaks.

Each test is a hole an outside attack run could look for: a caller that may not see a secret gets
exactly the answer for a missing one on every route (status, code, body shape, headers); grants match
folders by whole path segment; a value never comes back in an error, listing or log.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

from tests.service_harness import Server
from tests.system.test_secrets import World, canary, secrets_server, world

__all__ = ["secrets_server", "world"]

MISSING = "sec_0000000000000000"


def answer(world: World, method: str, path: str, body: Any, token: str) -> tuple[int, dict[str, str], Any]:
    status, headers, payload = world.server.call(method, path, body, token)
    kept = {k.lower(): v for k, v in dict(headers).items() if k.lower() not in ("date", "x-request-id")}
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k not in ("request_id",)}
    return status, kept, payload


def routes(secret_id: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", f"/v1/secrets/{secret_id}", None),
        ("PATCH", f"/v1/secrets/{secret_id}", {"description": "x"}),
        ("DELETE", f"/v1/secrets/{secret_id}", None),
        ("POST", f"/v1/secrets/{secret_id}/versions", {"fields": {"A": "b"}}),
        ("POST", f"/v1/secrets/{secret_id}/fetch", {}),
        ("POST", f"/v1/secrets/{secret_id}/fetch", {"field": "STRIPE_SECRET"}),
        ("POST", f"/v1/secrets/{secret_id}/fetch", {"field": "nope", "version": 7}),
        ("POST", f"/v1/secrets/{secret_id}/fetch", {"version": 1}),
    ]


def _principal(world: World, role: str) -> tuple[str, str]:
    status, made = world.call(
        "POST", "/v1/principals", {"name": f"{role}-{secrets.token_hex(4)}", "role": role}
    )
    assert status == 201, made
    return made["principal"]["id"], made["credentials"]["access_token"]


def _denied_callers(world: World) -> list[tuple[str, str]]:
    """Callers that may not see a secret in ``world.folder``: each must be told it does not exist."""
    _, auditor = _principal(world, "auditor")
    _, approver = _principal(world, "approver")
    # Only `list` on a sibling folder.
    lister_id, lister = _principal(world, "service")
    world.grant(lister_id, scope=f"{world.org}/elsewhere", operations=["list", "read_value"])
    # Everything on the organisation, but no access to the folder (the narrower grant wins).
    closed_id, closed = _principal(world, "service")
    world.grant(
        closed_id, scope=world.org, operations=["list", "read_metadata", "read_value", "update", "delete"]
    )
    status, body = world.call(
        "POST", "/v1/grants", {"principal_id": closed_id, "scope": world.folder, "no_access": True}
    )
    assert status == 201, body
    # A grant about another secret with the same name in another folder.
    twin_id, twin = _principal(world, "service")
    elsewhere = world.create("probe", folder=f"{world.org}/elsewhere")
    world.grant(twin_id, secret_id=elsewhere["id"], operations=["list", "read_metadata", "read_value"])
    assert world.fetch(elsewhere["id"], token=twin)[0] == 200
    return [
        ("no grant", world.other),
        ("auditor", auditor),
        ("approver", approver),
        ("list on a sibling folder", lister),
        ("no-access on the folder", closed),
        ("twin", twin),
    ]


def test_denied_callers_get_the_missing_answer_on_every_route(world: World) -> None:
    """Same status, code, body and headers for "exists but not yours" as for "does not exist", whatever
    the caller's role: a fetch by an auditor or approver used to answer 403 role_required for a secret
    that exists and 404 for one that does not (the role was checked before existence)."""
    secret_id = world.create("probe")["id"]
    callers = _denied_callers(world)
    problems = []
    for who, token in callers:
        for method, path, body in routes(secret_id):
            got = answer(world, method, path, body, token)
            want = answer(world, method, path.replace(secret_id, MISSING), body, token)
            if got != want or got[0] != 404:
                problems.append((who, method, path, got, want))
        listed = answer(world, "GET", f"/v1/secrets?folder={world.folder}", None, token)
        empty = answer(world, "GET", f"/v1/secrets?folder={world.org}/nothing-here", None, token)
        if listed != empty or listed[2]["items"]:
            problems.append((who, "list", listed, empty))
    assert not problems
    # Nothing was changed or deleted by any of them.
    status, shown = world.call("GET", f"/v1/secrets/{secret_id}")
    assert status == 200 and shown["description"] == "" and shown["current_version"] == 1


def test_no_error_body_log_or_audit_event_repeats_a_value(world: World) -> None:
    """Invalid names, oversized and mistyped values, unknown fields holding the value, broken JSON:
    every refusal answers without the value, and neither the log nor the audit export holds it."""
    c = canary()
    base = {"folder": world.folder, "name": "leak-" + secrets.token_hex(3), "owner_group": "payments"}
    created = world.create("leaky", fields={"A": c})
    sid = created["id"]
    bodies: list[tuple[str, str, Any]] = [
        ("POST", "/v1/secrets", {**base, "fields": {"bad name!": c}}),
        ("POST", "/v1/secrets", {**base, "fields": {"bad name!": c, "B": "x"}}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": [c]}}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": {"x": c}}}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": c * 200}}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": c}, "extra": c}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": c}, c: 1}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": c}, "generate": {"kind": "uuid"}}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": c + "\ud800"}}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": c}, "category": c}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": c}, "owner_principal": c}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": c}, "folder": world.folder + "/" + c + "/.."}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": 1, "B": c}}),
        ("POST", "/v1/secrets", {**base, "fields": {"A": c, "": c}}),
        ("POST", f"/v1/secrets/{sid}/versions", {"fields": {"bad name!": c}}),
        ("POST", f"/v1/secrets/{sid}/versions", {"fields": {"A": c * 200}}),
        ("POST", f"/v1/secrets/{sid}/versions", {"fields": {"A": c}, "junk": c}),
        ("POST", f"/v1/secrets/{sid}/versions", {"value": c}),
        ("PATCH", f"/v1/secrets/{sid}", {"fields": {"A": c}}),
        ("PATCH", f"/v1/secrets/{sid}", {"value": c}),
        ("POST", f"/v1/secrets/{sid}/fetch", {"field": c}),
        ("POST", f"/v1/secrets/{sid}/fetch", {"version": c}),
        ("POST", f"/v1/secrets/{sid}/fetch", {"value": c}),
        ("GET", f"/v1/secrets?folder={c}/..", None),
        ("GET", f"/v1/secrets/{c}", None),
    ]
    found = []
    for method, path, body in bodies:
        status, headers, payload = world.server.call(method, path, body, world.admin)
        text = json.dumps(payload)
        assert status >= 400 or method == "GET", (method, path, status)
        if c in text or c in json.dumps(dict(headers)):
            found.append((method, path, body if len(json.dumps(body)) < 300 else "...", status, text[:500]))
    # Raw bodies: broken JSON, oversized, duplicated keys.
    quoted = json.dumps(c)
    for raw in (
        '{"folder": ' + json.dumps(world.folder) + ', "name": "x", "fields": {"A": ' + quoted,
        '{"fields": {"A": ' + quoted + ', "A": ' + quoted + "}}",
        '{"fields": {"A": ' + quoted + '}, "x": NaN}',
        '{"fields": {"A": ' + quoted + "}} trailing",
        '{"fields": {"A": "' + c + "x" * 2_000_000 + '"}}',
    ):
        for path in ("/v1/secrets", f"/v1/secrets/{sid}/versions", f"/v1/secrets/{sid}/fetch"):
            status, headers, text = _raw(world.server, path, raw)
            assert status in (400, 413), (path, status)
            if c in text:
                found.append(("RAW", path, raw[:80], status, text[:500]))
    # Refused for want of a grant (404) or of the operation (403): the refusal's audit event and log
    # line name the request, never the value in its body.
    lister_id, lister = _principal(world, "service")
    world.grant(lister_id, secret_id=sid, operations=["list"])
    for token in (world.other, lister):
        for method, path, body in (
            ("POST", f"/v1/secrets/{sid}/versions", {"fields": {"A": c}}),
            ("POST", "/v1/secrets", {**base, "fields": {"A": c}}),
            ("PATCH", f"/v1/secrets/{sid}", {"description": "d"}),
        ):
            status, headers, payload = world.server.call(method, path, body, token)
            assert status in (403, 404) and c not in json.dumps(payload), (method, path, payload)
    log = world.server.log_text()
    if c in log:
        found.append(("LOG", [line[:300] for line in log.splitlines() if c in line][:3]))
    status, _, audit = world.server.call("GET", "/v1/audit/events?limit=1000", None, world.admin)
    if c in json.dumps(audit):
        found.append(("AUDIT", status))
    assert not found


def _raw(server: Server, path: str, raw: str) -> tuple[int, Any, Any]:
    request = urllib.request.Request(
        server.url + path, data=raw.encode("utf-8", "surrogatepass"), method="POST"
    )
    request.add_header("Authorization", f"Bearer {server.installation.admin_token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode("utf-8", "replace")


def test_each_operation_needs_its_own_grant(world: World) -> None:
    """read_metadata cannot fetch; read_value fetches but cannot show; update, delete and create each
    need their own grant; owning a secret gives nothing."""
    value = canary()
    secret_id = world.create("ops", fields={"A": value})["id"]
    path = f"/v1/secrets/{secret_id}"

    def calls(token: str) -> dict[str, int]:
        return {
            "show": world.call("GET", path, token=token)[0],
            "fetch": world.fetch(secret_id, token=token)[0],
            "patch": world.call("PATCH", path, {"description": "changed"}, token=token)[0],
            "rotate": world.call("POST", f"{path}/versions", {"fields": {"A": canary()}}, token=token)[0],
            "list": len(world.call("GET", f"/v1/secrets?folder={world.folder}", token=token)[1]["items"]),
            "create": world.call(
                "POST",
                "/v1/secrets",
                {
                    "folder": world.folder,
                    "name": "c-" + secrets.token_hex(3),
                    "owner_group": "g",
                    "fields": {"A": "x"},
                },
                token=token,
            )[0],
        }

    expected = {
        "read_metadata": {"show": 200, "fetch": 403, "patch": 403, "rotate": 403, "list": 0, "create": 403},
        "read_value": {"show": 403, "fetch": 200, "patch": 403, "rotate": 403, "list": 0, "create": 403},
        "list": {"show": 403, "fetch": 403, "patch": 403, "rotate": 403, "list": 1, "create": 403},
        "update": {"show": 200, "fetch": 403, "patch": 200, "rotate": 201, "list": 0, "create": 403},
        "delete": {"show": 403, "fetch": 403, "patch": 403, "rotate": 403, "list": 0, "create": 403},
    }
    for operation, want in expected.items():
        principal_id, token = _principal(world, "service")
        world.grant(principal_id, secret_id=secret_id, operations=[operation])
        got = calls(token)
        if operation == "update":
            # PATCH and set-value answer with the secret's metadata; show itself still needs read_metadata.
            want = {**want, "show": 403}
        assert got == want, (operation, got)
    # Owning a secret gives nothing; create on one folder does not cover a sibling.
    owner_id, owner = _principal(world, "service")
    owned = world.create("owned", owner_principal=owner_id, owner_group=None)
    assert world.fetch(owned["id"], token=owner)[0] == 404
    assert world.call("GET", f"/v1/secrets/{owned['id']}", token=owner)[0] == 404
    world.grant(owner_id, scope=f"{world.org}/payments/dev", operations=["create"])
    status, body = world.call(
        "POST",
        "/v1/secrets",
        {"folder": world.folder, "name": "sneaky", "owner_group": "g", "fields": {"A": "x"}},
        token=owner,
    )
    assert (status, body["code"]) == (403, "operation_not_granted")
    # A delete grant deletes, and the secret is then missing for everyone.
    deleter_id, deleter = _principal(world, "service")
    world.grant(deleter_id, secret_id=secret_id, operations=["delete"])
    assert world.call("DELETE", path, token=deleter)[0] == 200
    assert world.call("GET", path)[1]["code"] == "secret_not_found"


def test_folder_grants_match_whole_segments(world: World) -> None:
    """A grant on `org` covers `org/...` and nothing named `org-evil` or `orgx`; `..`, empty segments,
    trailing slashes, upper case and look-alike letters are refused in folders, names and grant scopes."""
    admin_id = world.server.installation.admin["principal"]["id"]
    reader_id, reader = _principal(world, "service")
    world.grant(reader_id, scope=world.org, operations=["read_value", "read_metadata", "list"])
    inside = world.create("inside")["id"]
    assert world.fetch(inside, token=reader)[0] == 200
    for org in (f"{world.org}-evil", f"{world.org}x"):
        world.grant(admin_id, scope=org, operations=["create"])
        outside = world.create("inside", folder=f"{org}/payments/prod")["id"]
        assert world.fetch(outside, token=reader)[1]["code"] == "secret_not_found"
        assert world.call("GET", f"/v1/secrets/{outside}", token=reader)[1]["code"] == "secret_not_found"
    listed = world.call("GET", "/v1/secrets", token=reader)[1]["items"]
    assert [s["id"] for s in listed] == [inside]
    for folder in (
        f"{world.folder}/..",
        f"{world.org}/../{world.org}-evil",
        f"{world.folder}/",
        f"/{world.folder}",
        f"{world.org}//payments",
        world.folder.upper(),
        world.folder.replace("a", "\u0430"),  # Cyrillic a
        f"{world.folder}/a..b",
        f"{world.folder}\n",
    ):
        status, body = world.call(
            "POST", "/v1/secrets", {"folder": folder, "name": "x", "owner_group": "g", "fields": {"A": "x"}}
        )
        assert status == 400, (folder, body)
        status, body = world.call(
            "POST", "/v1/grants", {"principal_id": reader_id, "scope": folder, "operations": ["list"]}
        )
        assert status == 400 or folder.endswith("a..b"), (folder, body)
    for name in ("..", "a..b", "X", "a/b", "caf\u00e9", "x\u200b"):
        status, body = world.call(
            "POST",
            "/v1/secrets",
            {"folder": world.folder, "name": name, "owner_group": "g", "fields": {"A": "x"}},
        )
        assert status == 400, (name, body)


def test_fetch_of_what_is_not_there_is_a_clean_404(world: World) -> None:
    value = canary()
    created = world.create("gone", fields={"A": value})
    secret_id = created["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    before = world.call("GET", f"/v1/secrets/{secret_id}")[1]
    for body, code in (
        ({"version": 2}, "secret_version_not_found"),
        ({"version": 10**6}, "secret_version_not_found"),
        ({"field": "B"}, "secret_field_not_found"),
        ({"field": "B", "version": 1}, "secret_field_not_found"),
    ):
        status, headers, payload = world.server.call(
            "POST", f"/v1/secrets/{secret_id}/fetch", body, world.service
        )
        assert (status, payload["code"]) == (404, code), (body, payload)
        assert value not in json.dumps(payload) and headers["Cache-Control"] == "no-store"
    for body in ({"version": 0}, {"version": -1}, {"version": True}, {"field": ""}, {"field": "a b"}):
        status, payload = world.fetch(secret_id, **body)
        assert status == 400 and value not in json.dumps(payload), (body, payload)
    after = world.call("GET", f"/v1/secrets/{secret_id}")[1]
    # Nothing was recorded as fetched by the refused reads.
    assert after["last_fetched_at"] == before["last_fetched_at"] is None
    status, headers, payload = world.server.call("POST", f"/v1/secrets/{secret_id}/fetch", {}, world.service)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert world.call("DELETE", f"/v1/secrets/{secret_id}")[0] == 200
    status, payload = world.fetch(secret_id)
    assert (status, payload["code"]) == (404, "secret_not_found") and value not in json.dumps(payload)


def test_a_grant_for_another_resource_kind_does_not_reveal_a_secret(world: World) -> None:
    """A signing grant on a scope is about the keys there: a secret in that scope still answers as
    missing (it used to answer 403 operation_not_granted, so a signer learned which secret ids exist).
    The same holds the other way for keys (``authorization.reaches`` filters by the resource's kind)."""
    secret_id = world.create("kinds")["id"]
    signer_id, signer = _principal(world, "service")
    world.grant(signer_id, scope=world.org, operations=["sign_raw", "sign_message"])
    # Nor does `create` on its folder: making new secrets says nothing about the ones there.
    maker_id, maker = _principal(world, "service")
    world.grant(maker_id, scope=world.folder, operations=["create"])
    for token in (signer, maker):
        for method, path, body in routes(secret_id):
            got = answer(world, method, path, body, token)
            want = answer(world, method, path.replace(secret_id, MISSING), body, token)
            assert got == want and got[0] == 404, (method, path, got)


def test_a_grant_taken_away_stops_the_next_fetch(world: World) -> None:
    """The fetch path caches grants and records: a no-access grant added, or the grant revoked, after a
    successful fetch must answer the very next fetch as missing."""
    secret_id = world.create("revoked")["id"]
    reader_id, reader = _principal(world, "service")
    granted = world.grant(reader_id, scope=world.org, operations=["read_value", "read_metadata"])
    assert world.fetch(secret_id, token=reader)[0] == 200
    status, closed = world.call(
        "POST", "/v1/grants", {"principal_id": reader_id, "secret_id": secret_id, "no_access": True}
    )
    assert status == 201, closed
    for method, path, body in routes(secret_id):
        assert answer(world, method, path, body, reader) == answer(
            world, method, path.replace(secret_id, MISSING), body, reader
        ), (method, path)
    other = world.create("revoked-2")["id"]
    assert world.fetch(other, token=reader)[0] == 200
    assert world.call("DELETE", f"/v1/grants/{granted['id']}")[0] in (200, 204)
    status, body = world.fetch(other, token=reader)
    assert (status, body["code"]) == (404, "secret_not_found")


def test_no_access_on_a_folder_stops_create_there(world: World) -> None:
    maker_id, maker = _principal(world, "service")
    world.grant(maker_id, scope=world.org, operations=["create"])
    status, body = world.call(
        "POST", "/v1/grants", {"principal_id": maker_id, "scope": world.folder, "no_access": True}
    )
    assert status == 201, body

    def create(folder: str) -> int:
        body = {
            "folder": folder,
            "name": "m-" + secrets.token_hex(3),
            "owner_group": "g",
            "fields": {"A": "x"},
        }
        return world.call("POST", "/v1/secrets", body, token=maker)[0]

    assert create(f"{world.org}/payments/dev") == 201
    assert create(world.folder) == 403
    assert create(f"{world.folder}/deeper") == 403
