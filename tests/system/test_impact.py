"""Impact review, usage and the operator checklist through a running server and the CLI, on SQLite and
PostgreSQL (issue 13).

A scenario with known consumers: one secret read by a service through a grant on the secret itself
(workload ``billing-api``) and by another service through its group's folder grant (workload ``ledger``,
also by reference through ``/v1/secrets/resolve``). Each impact report (revoking either grant, disabling
the second service, deleting the secret, rotating it) must name exactly who loses and who keeps access,
through which grants, which workloads, references and declared consumers fail and what becomes unused;
the real action records the same report, compacted, in its audit event. Every checklist item is
produced by a fixture made to produce it and is absent for its look-alike. Usage reports count the
fetches per principal and workload and say when each grant was last used.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from signer.services.checklist import ITEMS
from tests.dbfixtures import private_pg_database
from tests.service_harness import (
    SIGNER,
    TREE,
    Server,
    attach_policy,
    init_installation,
    make_key,
    start_server,
)
from tests.system.support import wait_until
from tests.system.test_secrets import World, canary

LARGE_GROUP = 3  # members
WIDE_FOLDER = 4  # secrets


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def impact_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_impact")) if request.param == "postgres" else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("impact")) / "data", database_url)
        server = start_server(
            installation,
            env={
                # Small enough for a fixture to cross (and its look-alike to stay under).
                "SIGNER_CHECKLIST_LARGE_GROUP_MEMBERS": str(LARGE_GROUP),
                "SIGNER_CHECKLIST_WIDE_FOLDER_SECRETS": str(WIDE_FOLDER),
                "SIGNER_CHECKLIST_INTERVAL_SECONDS": "0.5",
            },
        )
        try:
            yield server
        finally:
            server.stop()


class Scenario:
    """The secret ``stripe`` with its two readers, their grants and their workloads."""

    def __init__(self, server: Server, tmp: Path) -> None:
        self.tmp = tmp
        self.world = w = World(server, secrets.token_hex(4))
        self.group = f"readers-{w.org}"
        status, _ = w.call("PUT", f"/v1/groups/{self.group}/members/{w.other_id}")
        assert status in (200, 201)
        self.secret = w.create("stripe", consumers=["billing-api", "ledger", "reports"])["id"]
        self.own = w.grant(w.service_id, secret_id=self.secret, operations=["read_value"])["id"]
        status, body = w.call(
            "POST",
            "/v1/grants",
            {"group": self.group, "scope": f"{w.org}/payments", "operations": ["read_value", "list"]},
        )
        assert status == 201, body
        self.by_group = body["id"]
        self.unused = w.grant(w.service_id, scope=f"{w.org}/unused", operations=["read_value"])["id"]
        for _ in range(2):
            assert w.fetch(self.secret)[0] == 200
        status, body = w.fetch(self.secret, token=w.other, workload="ledger")
        assert status == 200, body
        self.reference = f"secret://{w.folder}/stripe"
        status, body = w.call(
            "POST", "/v1/secrets/resolve", {"references": [self.reference], "workload": "ledger"}, w.other
        )
        assert status == 200, body

    def impact(self, action: str, target: str, **body: Any) -> dict[str, Any]:
        status, report = self.world.call("POST", "/v1/impact", {"action": action, "id": target, **body})
        assert status == 200, report
        assert report["dry_run"] is True
        return report

    def cli(self, *args: str) -> Any:
        token_file = self.tmp / f"token-{secrets.token_hex(4)}"
        token_file.write_text(self.world.admin + "\n")
        token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNER_")}
        env.update(SIGNER_SERVER=self.world.server.url, SIGNER_TOKEN_FILE=str(token_file), HOME=str(self.tmp))
        done = subprocess.run(
            [*SIGNER, *args, "--json"], env=env, cwd=TREE, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def events(self, kind: str) -> list[dict[str, Any]]:
        status, _, exported = self.world.server.call(
            "GET", "/v1/audit/events?limit=10000", token=self.world.admin
        )
        assert status == 200
        found = [json.loads(json.loads(line)["event"]) for line in exported.splitlines() if line]
        return [e for e in found if e.get("kind") == kind]


@pytest.fixture
def scene(impact_server: Server, tmp_path: Path) -> Scenario:
    return Scenario(impact_server, tmp_path)


def about(event: dict[str, Any]) -> str | None:
    """The id of the resource an audit event is about."""
    resource = event.get("resource")
    return resource.get("id") if isinstance(resource, dict) else None


def subjects(entries: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[str]]]:
    return {e["subject"]: (e["operations"], e["through"]) for e in entries}


def test_revoking_the_own_grant_stops_billing_and_keeps_the_ledger(scene: Scenario) -> None:
    w = scene.world
    report = scene.impact("revoke_grant", scene.own, days=7)
    (resource,) = report["resources"]
    assert resource["id"] == scene.secret
    assert subjects(resource["lose"]) == {f"principal:{w.service_id}": (["read_value"], [scene.own])}
    assert f"principal:{w.service_id}" not in subjects(resource["keep"])
    fetched = {(f["principal_id"], f["workload"]): f for f in resource["fetched"]}
    assert fetched[(w.service_id, "billing-api")]["fetches"] == 2
    assert fetched[(w.service_id, "billing-api")]["fails"] is True
    assert fetched[(w.other_id, "ledger")]["fetches"] == 2  # the fetch and the resolve
    assert fetched[(w.other_id, "ledger")]["fails"] is False
    consumers = {c["name"]: c["status"] for c in resource["consumers"]}
    assert consumers == {"billing-api": "fails", "ledger": "keeps", "reports": "not_seen"}
    assert [r["status"] for r in resource["references"]] == ["keeps"]
    summary = report["summary"]
    assert summary["principals_losing"] == [w.service_id]
    assert summary["workloads_failing"] == ["billing-api"]
    assert summary["secrets_unused_after"] == []
    assert report["grant"]["uses"] == 2 and report["grant"]["last_used_at"] is not None
    # A dry run changed nothing; the CLI gives the same answer.
    assert w.fetch(scene.secret)[0] == 200
    by_cli = scene.cli("impact", "revoke_grant", scene.own, "--days", "7")["summary"]
    assert by_cli["fetches_in_window"] == summary["fetches_in_window"] + 1  # the fetch just made
    assert {**by_cli, "fetches_in_window": 0} == {**summary, "fetches_in_window": 0}


def test_revoking_the_group_grant_names_the_group_its_member_and_the_reference(scene: Scenario) -> None:
    w = scene.world
    report = scene.impact("revoke_grant", scene.by_group)
    (resource,) = report["resources"]
    lose = subjects(resource["lose"])
    assert lose[f"group:{scene.group}"] == (["list", "read_value"], [scene.by_group])
    assert lose[f"principal:{w.other_id}"] == (["list", "read_value"], [scene.by_group])
    assert f"principal:{w.service_id}" not in lose
    (reference,) = resource["references"]
    assert (reference["reference"], reference["status"], reference["principal_id"]) == (
        scene.reference,
        "fails",
        w.other_id,
    )
    assert report["summary"]["workloads_failing"] == ["ledger"]
    assert report["grant"]["secrets_covered"] == 1
    assert scene.cli("impact", "revoke_grant", scene.by_group)["summary"] == report["summary"]
    # The real revocation records what stopped working, compacted, in its audit event.
    status, body = w.call("DELETE", f"/v1/grants/{scene.by_group}")
    assert status == 200, body
    (event,) = [e for e in scene.events("grant.revoke") if about(e) == scene.by_group]
    assert event["impact"]["action"] == "revoke_grant"
    assert event["impact"]["principals_losing"] == [w.other_id]
    assert event["impact"]["counts"]["workloads_failing"] == 1
    assert w.fetch(scene.secret, token=w.other, workload="ledger")[0] in (403, 404)


def test_disabling_a_principal_says_what_stops_and_which_grants_go_unused(scene: Scenario) -> None:
    w = scene.world
    report = scene.impact("disable_principal", w.other_id)
    assert report["principal"]["groups"] == [scene.group]
    assert report["workloads"] == ["ledger"]
    (resource,) = report["resources"]
    assert subjects(resource["lose"])[f"principal:{w.other_id}"][0] == ["list", "read_value"]
    assert report["unused_after"]["grants"] == [scene.by_group]
    assert report["summary"]["principals_losing"] == [w.other_id]
    assert scene.cli("impact", "disable_principal", w.other_id)["summary"] == report["summary"]
    # The real action records the report, compacted, in its audit event.
    status, body = w.call("POST", f"/v1/principals/{w.other_id}/state", {"disabled": True})
    assert status == 200, body
    (event,) = [e for e in scene.events("principal.disable") if about(e) == w.other_id]
    assert event["impact"]["principals_losing"] == [w.other_id]
    assert event["impact"]["grants_unused_after"] == [scene.by_group]
    assert event["impact"]["counts"]["workloads_failing"] == 1


def test_deleting_the_secret_fails_everyone_and_leaves_its_grants_unused(scene: Scenario) -> None:
    w = scene.world
    report = scene.impact("delete_secret", scene.secret)
    (resource,) = report["resources"]
    lose = subjects(resource["lose"])
    assert lose[f"principal:{w.service_id}"] == (["read_value"], [scene.own])
    assert lose[f"group:{scene.group}"] == (["list", "read_value"], [scene.by_group])
    assert resource["keep"] == []
    assert {c["status"] for c in resource["consumers"]} == {"fails"}
    assert all(f["fails"] for f in resource["fetched"])
    assert [r["status"] for r in resource["references"]] == ["fails"]
    assert report["unused_after"] == {
        "grants": sorted([scene.own, scene.by_group]),
        "secrets": [scene.secret],
    }
    assert report["summary"]["workloads_failing"] == ["billing-api", "ledger"]
    assert scene.cli("impact", "delete_secret", scene.secret)["summary"] == report["summary"]
    status, _ = w.call("DELETE", f"/v1/secrets/{scene.secret}")
    assert status == 200
    (event,) = [e for e in scene.events("secret.delete") if about(e) == scene.secret]
    assert event["impact"]["counts"]["consumers_failing"] == 3
    assert sorted(event["impact"]["grants_unused_after"]) == sorted([scene.own, scene.by_group])


def test_rotating_keeps_everyone_and_names_grants_only_used_for_older_versions(scene: Scenario) -> None:
    w = scene.world
    report = scene.impact("rotate_secret", scene.secret)
    (resource,) = report["resources"]
    assert resource["lose"] == []
    keep = subjects(resource["keep"])
    assert keep[f"principal:{w.service_id}"] == (["read_value"], [scene.own])
    assert keep[f"group:{scene.group}"] == (["list", "read_value"], [scene.by_group])
    assert report["versions"]["current"] == 1 and report["versions"]["next"] == 2
    assert report["older_grants"] == []
    assert scene.cli("impact", "rotate_secret", scene.secret)["summary"] == report["summary"]
    status, body = w.call(
        "POST", f"/v1/secrets/{scene.secret}/versions", {"fields": {"STRIPE_SECRET": canary()}}
    )
    assert status == 201, body
    (event,) = [e for e in scene.events("secret.rotate") if about(e) == scene.secret]
    assert event["impact"]["action"] == "rotate_secret"
    assert event["impact"]["counts"]["fetches_in_window"] == 4
    # The group's reader pins version 1 from now on; the service follows the rotation.
    assert w.fetch(scene.secret, token=w.other, workload="ledger", version=1)[0] == 200
    assert w.fetch(scene.secret)[0] == 200
    after = scene.impact("rotate_secret", scene.secret)
    assert [g["grant_id"] for g in after["older_grants"]] == [scene.by_group]
    assert after["older_grants"][0]["versions"] == [1, 1]


def test_usage_reports_count_fetches_and_say_when_grants_were_last_used(scene: Scenario) -> None:
    w = scene.world
    status, usage = w.call("GET", f"/v1/usage/secrets/{scene.secret}?days=1")
    assert status == 200, usage
    counts = {(r["principal_id"], r["workload"]): r["fetches"] for r in usage["by_principal"]}
    assert counts == {(w.service_id, "billing-api"): 2, (w.other_id, "ledger"): 2}
    last = usage["last_fetched"]
    assert (last["by"], last["workload"]) == (w.other_id, "ledger") and last["at"]  # the resolve
    assert sum(d["fetches"] for d in usage["by_day"]) == 4
    assert {g["grant_id"] for g in usage["grants"]} == {scene.own, scene.by_group}
    status, grant = w.call("GET", f"/v1/usage/grants/{scene.own}")
    assert status == 200 and grant["uses"] == 2 and grant["last_used_at"] is not None
    status, grant = w.call("GET", f"/v1/usage/grants/{scene.unused}")
    assert status == 200 and grant["uses"] == 0 and grant["last_used_at"] is None
    report = scene.cli("usage", "report", "--days", "0", "--limit", "1000")
    never_used = {g["grant_id"] for g in report["grants_never_used"]["items"]}
    assert scene.unused in never_used and scene.own not in never_used and scene.by_group not in never_used
    # Secrets never fetched, and not fetched in N days (the never-fetched among them).
    quiet = w.create("quiet")["id"]

    def report_ids(days: int) -> tuple[set[str], set[str]]:
        status, body = w.call("GET", f"/v1/usage?days={days}&limit=1000")
        assert status == 200, body
        assert body["never_fetched"]["count"] >= len(body["never_fetched"]["items"])
        return (
            ids(body["never_fetched"]["items"], "secret_id"),
            ids(body["not_fetched_in_days"]["items"], "secret_id"),
        )

    never, stale = report_ids(0)  # 0 days: everything last fetched before now is stale
    assert quiet in never and scene.secret not in never
    assert quiet in stale and scene.secret in stale
    never, stale = report_ids(1)  # fetched today: not stale over a day
    assert quiet in stale and scene.secret not in stale
    # A service may not read who uses what.
    status, body = w.call("GET", "/v1/usage?days=1", token=w.service)
    assert status == 403, body


def items(checklist: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {item["id"]: item["entries"] for item in checklist["items"]}


def ids(entries: list[dict[str, Any]], field: str) -> set[str]:
    return {e[field] for e in entries}


def test_each_checklist_item_is_produced_by_its_fixture_and_absent_for_its_look_alike(
    scene: Scenario,
) -> None:
    w = scene.world
    server = w.server
    admin_id = server.installation.admin["principal"]["id"]
    # Broad: the whole organisation; narrow: one secret (the scenario's own grant).
    broad = w.grant(admin_id, scope=w.org, operations=["read_value"])["id"]
    registry = w.create("npm-token", category="registry")["id"]
    publication = w.create("pypi-publish", category="publication")["id"]
    shared = w.create("cdn-key", tags=["shared:cdn"])["id"]
    plain = w.create("plain", tags=["production"])["id"]
    infra = w.create(
        "db-pass",
        category="infrastructure",
        consumers=["api"],
        generate={"kind": "hex", "bytes": 16},
    )["id"]
    idle = server.call(
        "POST",
        "/v1/principals",
        {"name": f"idle-{w.org}", "role": "service"},
        server.installation.admin_token,
    )[2]["principal"]["id"]
    w.grant(idle, secret_id=plain, operations=["read_value"])
    # Keys: a group's signing grant on the key's scope, one key guarded by a policy and one not.
    bare = make_key(server, label=f"bare {w.org}")["id"]
    guarded = make_key(server, label=f"guarded {w.org}")["id"]
    for key in (bare, guarded):
        status, body = w.call(
            "POST", "/v1/grants", {"group": scene.group, "key_id": key, "operations": ["sign_message"]}
        )
        assert status == 201, body
    attach_policy(
        server,
        {"id": f"guard-{w.org}", "rules": [{"id": "blind", "kind": "raw_digest", "effect": "allow"}]},
        key_id=guarded,
    )
    status, checklist = w.call("GET", "/v1/checklist?days=0&rotated_days=0&limit=1000")
    assert status == 200, checklist
    found = items(checklist)
    for item in checklist["items"]:
        assert item["what"] and item["why"] and item["action"]
    assert broad in ids(found["broad_secret_grants"], "grant_id")
    assert scene.own not in ids(found["broad_secret_grants"], "grant_id")
    assert registry in ids(found["registry_and_publication_credentials"], "secret_id")
    assert publication in ids(found["registry_and_publication_credentials"], "secret_id")
    assert plain not in ids(found["registry_and_publication_credentials"], "secret_id")
    assert shared in ids(found["shared_or_public_assets"], "secret_id")
    assert plain not in ids(found["shared_or_public_assets"], "secret_id")
    (db,) = [e for e in found["generated_infrastructure_secrets"] if e["secret_id"] == infra]
    assert db["consumers"] == ["api"]
    assert plain not in ids(found["generated_infrastructure_secrets"], "secret_id")
    assert plain in ids(found["secrets_never_fetched"], "secret_id")
    assert scene.secret not in ids(found["secrets_never_fetched"], "secret_id")
    assert scene.unused in ids(found["grants_never_used"], "grant_id")
    assert scene.own not in ids(found["grants_never_used"], "grant_id")
    assert idle in ids(found["principals_with_unused_access"], "principal_id")
    assert w.service_id not in ids(found["principals_with_unused_access"], "principal_id")
    assert bare in ids(found["keys_with_broad_signing_grants_and_no_policy"], "key_id")
    assert guarded not in ids(found["keys_with_broad_signing_grants_and_no_policy"], "key_id")
    # Never rotated: one version older than the threshold (0 days here); a rotated secret is not.
    assert plain in ids(found["never_rotated"], "secret_id")
    status, _ = w.call("POST", f"/v1/secrets/{plain}/versions", {"fields": {"STRIPE_SECRET": canary()}})
    assert status == 201
    again = items(scene.cli("checklist", "--days", "0", "--rotated-days", "0", "--limit", "1000"))
    assert plain not in ids(again["never_rotated"], "secret_id")
    # Within the default grace (30 days) nothing this young is reported as unused.
    status, default = w.call("GET", "/v1/checklist")
    assert scene.unused not in ids(items(default)["grants_never_used"], "grant_id")


def test_overdue_rotation_large_groups_and_wide_folders(scene: Scenario) -> None:
    """The checklist items the scenario above leaves out, each with its look-alike: a secret past its
    rotation interval (and one within it), a group's grant from ``LARGE_GROUP`` members (and the
    scenario's one-member group), a folder grant from ``WIDE_FOLDER`` secrets under it (and a folder one
    secret short)."""
    w = scene.world
    admin = w.server.installation.admin_token
    overdue = w.create("overdue-key")["id"]
    calm = w.create("calm-key")["id"]
    for secret, interval in ((overdue, 1), (calm, 86400)):
        status, body = w.call("PATCH", f"/v1/secrets/{secret}", {"rotation_interval_seconds": interval})
        assert status == 200, body
    # Groups: one with LARGE_GROUP members, granted one secret (broad for its size alone).
    big = f"big-{w.org}"
    for i in range(LARGE_GROUP):
        status, _, made = w.server.call(
            "POST", "/v1/principals", {"name": f"member-{i}-{w.org}", "role": "service"}, admin
        )
        assert status == 201, made
        status, _ = w.call("PUT", f"/v1/groups/{big}/members/{made['principal']['id']}")
        assert status in (200, 201)
    status, body = w.call(
        "POST", "/v1/grants", {"group": big, "secret_id": calm, "operations": ["read_value"]}
    )
    assert status == 201, body
    by_big = body["id"]
    # Folders: WIDE_FOLDER secrets under one (counting a subfolder), one fewer under the other.
    for name in range(WIDE_FOLDER):
        sub = "/deep" if name == 0 else ""
        w.create(f"w{name}", folder=f"{w.org}/wide{sub}")
    for name in range(WIDE_FOLDER - 1):
        w.create(f"n{name}", folder=f"{w.org}/narrow")
    wide = w.grant(w.service_id, scope=f"{w.org}/wide", operations=["read_value"])["id"]
    narrow = w.grant(w.service_id, scope=f"{w.org}/narrow", operations=["read_value"])["id"]

    def checklist() -> dict[str, list[dict[str, Any]]]:
        status, body = w.call("GET", "/v1/checklist?limit=1000")
        assert status == 200, body
        return items(body)

    found = wait_until(
        lambda: (c := checklist()) and overdue in ids(c["rotation_overdue"], "secret_id") and c,
        30,
        "the secret to be past its one-second rotation interval",
    )
    (entry,) = [e for e in found["rotation_overdue"] if e["secret_id"] == overdue]
    assert entry["version"] == 1 and entry["due_at"]
    assert calm not in ids(found["rotation_overdue"], "secret_id")
    assert scene.secret not in ids(found["rotation_overdue"], "secret_id")  # no interval at all
    broad = {e["grant_id"]: e["because"] for e in found["broad_secret_grants"]}
    assert broad[by_big] == [f"large group ({LARGE_GROUP} members)"]
    assert broad[wide] == [f"wide folder prefix ({WIDE_FOLDER} secrets)"]
    assert narrow not in broad and scene.by_group not in broad and scene.own not in broad
    # Rotated, the secret is no longer overdue (its new version is younger than the interval).
    status, _ = w.call("PATCH", f"/v1/secrets/{overdue}", {"rotation_interval_seconds": 3600})
    assert status == 200
    status, _ = w.call("POST", f"/v1/secrets/{overdue}/versions", {"fields": {"STRIPE_SECRET": canary()}})
    assert status == 201
    assert overdue not in ids(checklist()["rotation_overdue"], "secret_id")


def _gauges(text: str) -> dict[str, float]:
    prefix = 'signer_checklist_items{item="'
    found = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            item, _, value = line[len(prefix) :].partition('"} ')
            found[item] = float(value)
    return found


def test_checklist_gauges_and_refusals(scene: Scenario) -> None:
    w = scene.world
    # One gauge per checklist item, each the item's count (the gauges are recomputed off the requests,
    # with the default windows: the same answer as GET /v1/checklist without parameters).
    w.grant(w.service_id, scope=w.org, operations=["read_value"])  # one more broad grant

    def agree() -> bool:
        status, _, text = w.server.call("GET", "/metrics")
        assert status == 200
        gauges = _gauges(text)
        assert set(gauges) == set(ITEMS)
        status, body = w.call("GET", "/v1/checklist?limit=1")
        assert status == 200, body
        counts = {item["id"]: item["count"] for item in body["items"]}
        return counts["broad_secret_grants"] > 0 and gauges == {k: float(v) for k, v in counts.items()}

    wait_until(agree, 30, "the checklist gauges to show the checklist's counts")
    status, body = w.call("GET", "/v1/checklist", token=w.service)
    assert (status, body["code"]) == (403, "role_not_allowed") or status == 403
    status, body = w.call("POST", "/v1/impact", {"action": "delete_secret", "id": "sec_missing"})
    assert (status, body["code"]) == (404, "secret_not_found")
    status, body = w.call("POST", "/v1/impact", {"action": "explode", "id": scene.secret})
    assert status == 400
