"""Disabling and enabling a whole secret through a running server and the CLI, on SQLite and PostgreSQL
(issue 13, "Secret lifecycle").

The impact review's scenario (``test_impact.Scenario``): the secret ``stripe`` read by a service through
a grant on the secret (workload ``billing-api``) and by another through its group's folder grant
(workload ``ledger``, also by reference). Disabled, every read path refuses it with ``409
secret_disabled`` to those granted (a fetch, a named version, a reference through
``/v1/secrets/resolve``; a scope skips it and says why), while a caller holding no grant gets exactly the
``404`` of a missing secret; metadata stays visible and shows the state; a new value may still be
written; enabling restores reads. The dry run (``/v1/impact``, action ``disable_secret``, and
``signer secrets disable --dry-run``) names who loses reads, which workloads fail and which references
and consumers fail, and writes nothing; the action's audit event carries the same report, compacted.
With two workers, a fetch right after the disable is refused by the worker that did not disable it,
whatever it had cached (the facts epoch moved).
"""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, init_installation, make_service, start_server
from tests.system.support import wait_all_workers_ready
from tests.system.test_impact import Scenario, about, subjects
from tests.system.test_secrets import World, canary
from tests.system.test_workers import pinned_connections, workers_of


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def disable_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_secdisable"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("secdisable")) / "data", database_url)
        server = start_server(installation)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def scene(disable_server: Server, tmp_path: Path) -> Scenario:
    return Scenario(disable_server, tmp_path)


def stranger(world: World) -> str:
    """A service principal holding no grant about anything in the world's organisation."""
    made = make_service(world.server, f"stranger-{secrets.token_hex(4)}")
    return str(made["credentials"]["access_token"])


def refused(answer: tuple[int, Any], code: str = "secret_disabled", status: int = 409) -> dict[str, Any]:
    got, body = answer
    assert (got, body.get("code")) == (status, code), body
    assert "values" not in body
    return dict(body)


def test_the_dry_run_names_who_loses_reads_and_what_fails_and_writes_nothing(scene: Scenario) -> None:
    w = scene.world
    status, before = w.call("GET", f"/v1/secrets/{scene.secret}")
    assert status == 200 and before["state"] == "active"
    report = scene.impact("disable_secret", scene.secret)
    assert report["target"] == {"type": "secret", "id": scene.secret}
    assert report["state"] == {"from": "active", "to": "disabled", "changes": True}
    (resource,) = report["resources"]
    # Only reads are taken: the group keeps listing it.
    lose = subjects(resource["lose"])
    assert lose == {
        f"principal:{w.service_id}": (["read_value"], [scene.own]),
        f"group:{scene.group}": (["read_value"], [scene.by_group]),
    }
    assert subjects(resource["keep"])[f"group:{scene.group}"] == (["list"], [scene.by_group])
    fetched = {(f["principal_id"], f["workload"]): f for f in resource["fetched"]}
    assert fetched[(w.service_id, "billing-api")]["fetches"] == 2
    assert all(f["fails"] for f in resource["fetched"])
    assert {c["name"]: c["status"] for c in resource["consumers"]} == {
        "billing-api": "fails",
        "ledger": "fails",
        "reports": "fails",
    }
    # The reference still finds this secret (and is refused): it never resolves elsewhere.
    assert [(r["reference"], r["status"]) for r in resource["references"]] == [(scene.reference, "fails")]
    # Its grants stay (they read again once it is enabled): nothing becomes unused for good.
    assert report["unused_after"] == {"grants": [], "secrets": []}
    assert report["grants_naming_only_this_secret"] == [scene.own]
    summary = report["summary"]
    assert summary["principals_losing"] == [w.service_id]
    assert summary["groups_losing"] == [scene.group]
    assert summary["workloads_failing"] == ["billing-api", "ledger"]
    assert summary["consumers_failing"] == ["billing-api", "ledger", "reports"]
    assert summary["references_failing"] == 1
    # The CLI's dry run, by the secret's path, gives the same answer.
    by_cli = scene.cli("secrets", "disable", f"{w.folder}/stripe", "--dry-run")
    assert by_cli["action"] == "disable_secret" and by_cli["summary"] == summary
    # Nothing changed: reads answer, the record and its revision are as they were, no event.
    assert w.fetch(scene.secret)[0] == 200
    status, after = w.call("GET", f"/v1/secrets/{scene.secret}")
    assert (after["state"], after["revision"]) == ("active", before["revision"])
    assert [e for e in scene.events("secret.disable") if about(e) == scene.secret] == []
    # An auditor may review; a service may not.
    status, body = w.call("POST", "/v1/impact", {"action": "disable_secret", "id": scene.secret}, w.service)
    assert status == 403, body


def test_disabled_refuses_every_read_to_the_granted_and_hides_from_the_rest(scene: Scenario) -> None:
    w = scene.world
    status, _, disabled = w.server.call(
        "POST", f"/v1/secrets/{scene.secret}/disable", {"reason": "leaked in a build log"}, w.admin
    )
    assert status == 200, disabled
    assert (disabled["state"], disabled["state_reason"]) == ("disabled", "leaked in a build log")
    assert disabled["state_changed_by"] == w.server.installation.admin["principal"]["id"]
    # Granted callers: 409 secret_disabled, for the current version, a named one, a field.
    refused(w.fetch(scene.secret))
    refused(w.fetch(scene.secret, version=1, field="STRIPE_SECRET"))
    refused(w.fetch(scene.secret, token=w.other, workload="ledger"))
    # A reference says which one; a scope skips it and says why.
    body = refused(
        w.call(
            "POST", "/v1/secrets/resolve", {"references": [scene.reference], "workload": "ledger"}, w.other
        )
    )
    assert body["index"] == 0
    status, resolved = w.call("POST", "/v1/secrets/resolve", {"scope": f"{w.org}/payments"}, w.other)
    assert status == 200, resolved
    assert resolved["scope"] == []
    assert resolved["skipped"] == [
        {"secret_id": scene.secret, "name": "stripe", "folder": w.folder, "state": "disabled"}
    ]
    # No grant: the same 404 as a missing secret, on reads and on the state routes alike.
    outsider = stranger(w)
    missing = w.fetch("sec_0000000000000000", token=outsider)
    ungranted = w.fetch(scene.secret, token=outsider)
    assert missing[0] == ungranted[0] == 404
    assert missing[1]["code"] == ungranted[1]["code"] == "secret_not_found"
    assert missing[1]["detail"] == ungranted[1]["detail"]
    for action in ("disable", "enable"):
        status, body = w.call("POST", f"/v1/secrets/{scene.secret}/{action}", {}, outsider)
        assert (status, body["code"]) == (404, "secret_not_found")
    # A reader holding no update grant may not change the state.
    status, body = w.call("POST", f"/v1/secrets/{scene.secret}/enable", {}, w.service)
    assert (status, body["code"]) == (403, "operation_not_granted")
    # Metadata stays visible and shows the state; listing shows it too.
    status, shown = w.call("GET", f"/v1/secrets/{scene.secret}")
    assert status == 200 and shown["state"] == "disabled"
    status, listed = w.call("GET", f"/v1/secrets?folder={w.folder}")
    assert [s["state"] for s in listed["items"] if s["id"] == scene.secret] == ["disabled"]
    # The refusals are audited (no value), and the disable carries its impact review.
    denied = [
        e
        for e in scene.events("secret.fetch")
        if about(e) == scene.secret and (e.get("error") or {}).get("code") == "secret_disabled"
    ]
    assert len(denied) >= 3
    (event,) = [e for e in scene.events("secret.disable") if about(e) == scene.secret]
    assert (event["was"], event["state"], event["changed"], event["reason"]) == (
        "active",
        "disabled",
        True,
        "leaked in a build log",
    )
    impact = event["impact"]
    assert impact["action"] == "disable_secret"
    assert impact["principals_losing"] == [w.service_id]
    assert impact["groups_losing"] == [scene.group]
    # Declared consumers all fail (fetch counts reach it as each worker's usage recorder flushes them).
    assert impact["consumers_failing"] == ["billing-api", "ledger", "reports"]
    # Disabling again changes nothing and says so.
    status, again = w.call("POST", f"/v1/secrets/{scene.secret}/disable", {})
    assert status == 200 and again["revision"] == disabled["revision"]
    assert [e["changed"] for e in scene.events("secret.disable") if about(e) == scene.secret] == [True, False]


def test_a_new_value_may_be_written_while_disabled_and_enabling_restores_reads(scene: Scenario) -> None:
    w = scene.world
    status, disabled = w.call("POST", f"/v1/secrets/{scene.secret}/disable", {})
    assert status == 200, disabled
    # Replace a leaked value before anyone reads again: the new version is current, still unread.
    fresh = canary()
    status, rotated = w.call(
        "POST", f"/v1/secrets/{scene.secret}/versions", {"fields": {"STRIPE_SECRET": fresh}}
    )
    assert status == 201 and rotated["current_version"] == 2 and rotated["state"] == "disabled", rotated
    refused(w.fetch(scene.secret))
    # If-Match: a stale ETag is refused, nothing changes.
    status, _, body = w.server.call(
        "POST",
        f"/v1/secrets/{scene.secret}/enable",
        {},
        w.admin,
        headers={"If-Match": f'"r{disabled["revision"]}"'},
    )
    assert (status, body["code"]) == (409, "if_match_failed")
    review = scene.impact("enable_secret", scene.secret)
    assert review["state"] == {"from": "disabled", "to": "active", "changes": True}
    assert review["summary"]["subjects_gaining"] == sorted(
        [f"group:{scene.group}", f"principal:{w.service_id}"]
    )
    assert review["summary"]["principals_losing"] == []
    enabled = scene.cli("secrets", "enable", scene.secret, "--reason", "rotated")
    assert (enabled["state"], enabled["state_reason"]) == ("active", "rotated")
    status, body = w.fetch(scene.secret)
    assert status == 200 and body["values"] == {"STRIPE_SECRET": fresh} and body["version"] == 2
    status, body = w.call(
        "POST", "/v1/secrets/resolve", {"references": [scene.reference], "workload": "ledger"}, w.other
    )
    assert status == 200 and body["references"][0]["values"] == {"STRIPE_SECRET": fresh}
    (event,) = [e for e in scene.events("secret.enable") if about(e) == scene.secret]
    assert event["impact"]["action"] == "enable_secret"
    assert event["impact"]["counts"]["subjects_gaining"] == 2
    assert (event["was"], event["state"], event["reason"]) == ("disabled", "active", "rotated")
    # A missing secret, a bad reason: stable refusals.
    status, body = w.call("POST", "/v1/secrets/sec_0000000000000000/disable", {})
    assert (status, body["code"]) == (404, "secret_not_found")
    status, body = w.call("POST", f"/v1/secrets/{scene.secret}/disable", {"reason": "line\nbreak"})
    assert status == 400 and "line" not in json.dumps(body)


# -- two workers ------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def two_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_secdisable_workers"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(tmp_path / "data", database_url)
        server = start_server(installation, workers=2)
        try:
            wait_all_workers_ready(server, 2)
            yield server
        finally:
            server.stop()


def fetch_via(connection: http.client.HTTPConnection, token: str, secret_id: str) -> tuple[int, Any]:
    connection.request(
        "POST",
        f"/v1/secrets/{secret_id}/fetch",
        body=json.dumps({"workload": "billing-api"}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def state_via(connection: http.client.HTTPConnection, token: str, secret_id: str, action: str) -> int:
    connection.request(
        "POST",
        f"/v1/secrets/{secret_id}/{action}",
        body=b"{}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    response.read()
    return response.status


def test_a_fetch_right_after_disable_is_refused_by_either_worker(two_workers: Server) -> None:
    w = World(two_workers, secrets.token_hex(4))
    secret_id = w.create("stripe")["id"]
    w.grant(w.service_id, secret_id=secret_id, operations=["read_value"])
    connections = pinned_connections(two_workers, workers_of(two_workers))
    try:
        first, second = connections.values()
        # Each worker has fetched it (its record, version row and data key are cached there).
        for _ in range(3):
            for connection in (first, second):
                assert fetch_via(connection, w.service, secret_id)[0] == 200
        assert state_via(first, w.admin, secret_id, "disable") == 200
        for connection in (second, first):
            refused(fetch_via(connection, w.service, secret_id))
        assert state_via(second, w.admin, secret_id, "enable") == 200
        for connection in (first, second):
            status, body = fetch_via(connection, w.service, secret_id)
            assert status == 200 and body["version"] == 1, body
    finally:
        for connection in connections.values():
            connection.close()
