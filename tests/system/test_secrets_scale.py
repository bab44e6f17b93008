"""Secrets at scale, through a running server (two workers) on SQLite and PostgreSQL (issue 12).

- Listing shows exactly what the caller's ``list`` grants cover (folders, single secrets, narrowed to
  the folder asked about, no-access carve-outs, groups), page by page; a caller without a grant gets the
  same empty answer for a full folder as for an empty one.
- ``show`` names who can use the secret, with which operations, through which grants (no-access and
  precedence applied), and only to a caller allowed ``read_metadata``.
- A caller with ``update`` cannot use the owner field to learn whether a principal id exists.
- A value rotated through one worker is what the next fetch through any worker returns, although each
  worker keeps sealed versions and records in memory.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, init_installation, make_service, start_server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ExitStack() as stack:
        url = (
            stack.enter_context(private_pg_database("signer_scale")) if request.param == "postgres" else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("scale")) / "data", url)
        running = start_server(installation, workers=2)
        try:
            yield running
        finally:
            running.stop()


class Org:
    """A fresh organisation the admin may create, update, read and list in, and a service principal."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.admin = server.installation.admin_token
        self.admin_id = server.installation.admin["principal"]["id"]
        self.name = "org-" + secrets.token_hex(4)
        self.grant(
            self.admin_id,
            scope=self.name,
            operations=["create", "update", "read_metadata", "read_value", "list", "delete"],
        )
        made = make_service(server, "svc-" + secrets.token_hex(4))
        self.service_id = made["principal"]["id"]
        self.service = made["credentials"]["access_token"]

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        status, _, payload = self.server.call(method, path, body, token or self.admin)
        return status, payload

    def grant(self, principal_id: str | None = None, **body: Any) -> dict[str, Any]:
        subject = {"principal_id": principal_id} if principal_id is not None else {}
        status, made = self.call("POST", "/v1/grants", {**subject, **body})
        assert status == 201, made
        return made

    def create(self, folder: str, name: str) -> str:
        status, made = self.call(
            "POST",
            "/v1/secrets",
            {
                "folder": f"{self.name}/{folder}",
                "name": name,
                "owner_group": "ops",
                "fields": {"v": "x" + name},
            },
        )
        assert status == 201, made
        return str(made["id"])

    def listed(self, token: str, folder: str | None = None, limit: int = 1000) -> list[str]:
        """Every id the caller lists, following ``next`` page by page."""
        ids: list[str] = []
        after: str | None = None
        while True:
            query = (
                f"?limit={limit}"
                + (f"&folder={folder}" if folder else "")
                + (f"&after={after}" if after else "")
            )
            status, page = self.call("GET", "/v1/secrets" + query, token=token)
            assert status == 200, page
            ids += [item["id"] for item in page["items"]]
            after = page["next"]
            if after is None:
                return ids


def test_listing_follows_the_callers_list_grants(server: Server) -> None:
    org = Org(server)
    shown = [org.create("a/x", f"s{i}") for i in range(5)]
    hidden = org.create("a/x/hidden", "h")
    single = org.create("a/y", "one")
    elsewhere = [org.create("b", f"t{i}") for i in range(3)]
    near_miss = org.create("a/x-evil", "n")  # a sibling whose name starts like the granted folder
    org.grant(org.service_id, scope=f"{org.name}/a/x", operations=["list"])
    org.grant(org.service_id, scope=f"{org.name}/a/x/hidden", no_access=True)
    org.grant(org.service_id, secret_id=single, operations=["list"])
    org.grant(org.service_id, secret_id=elsewhere[0], operations=["read_value"])  # not `list`

    assert sorted(org.listed(org.service)) == sorted([*shown, single])
    assert sorted(org.listed(org.service, limit=2)) == sorted([*shown, single])  # by pages
    assert sorted(org.listed(org.service, f"{org.name}/a")) == sorted([*shown, single])
    assert org.listed(org.service, f"{org.name}/a/y") == [single]
    assert org.listed(org.service, f"{org.name}/b") == []
    assert org.listed(org.service, f"{org.name}/a/x/hidden") == []
    assert hidden not in org.listed(org.service) and near_miss not in org.listed(org.service)
    # The admin's folder grant covers everything, including the hidden one and the near miss.
    assert set(org.listed(org.admin, org.name)) == {*shown, hidden, single, *elsewhere, near_miss}


def test_an_ungranted_caller_lists_a_full_folder_as_an_empty_one(server: Server) -> None:
    org = Org(server)
    for i in range(30):
        org.create("full", f"f{i}")
    outsider = make_service(server, "out-" + secrets.token_hex(4))["credentials"]["access_token"]
    answers = [
        org.call("GET", f"/v1/secrets?folder={org.name}/{folder}", token=outsider)
        for folder in ("full", "empty")
    ]
    assert answers[0] == answers[1] == (200, {"items": [], "next": None})
    assert org.listed(outsider) == []


def test_show_names_who_can_use_it_through_which_grants(server: Server) -> None:
    org = Org(server)
    secret_id = org.create("pay/prod", "stripe")
    group = "readers-" + secrets.token_hex(3)
    status, body = org.call("PUT", f"/v1/groups/{group}/members/{org.service_id}")
    assert status in (200, 201, 204), body
    direct = org.grant(org.service_id, secret_id=secret_id, operations=["read_value"])
    folder = org.grant(group=group, scope=f"{org.name}/pay", operations=["list", "read_metadata"])
    closed = make_service(server, "closed-" + secrets.token_hex(4))
    org.grant(closed["principal"]["id"], scope=org.name, operations=["read_value"])
    org.grant(closed["principal"]["id"], scope=f"{org.name}/pay/prod", no_access=True)

    status, shown = org.call("GET", f"/v1/secrets/{secret_id}")
    assert status == 200, shown
    access = {entry["subject"]: entry for entry in shown["access"]}
    assert access[f"principal:{org.service_id}"]["operations"] == ["read_value"]
    assert [g["id"] for g in access[f"principal:{org.service_id}"]["grants"]] == [direct["id"]]
    assert access[f"group:{group}"]["operations"] == ["list", "read_metadata"]
    assert access[f"group:{group}"]["grants"][0] == {
        "id": folder["id"],
        "on": f"folder:{org.name}/pay",
        "operations": ["list", "read_metadata"],
        "no_access": False,
        "expires_at": None,
    }
    assert set(access[f"principal:{org.admin_id}"]["operations"]) == {
        "list",
        "read_metadata",
        "read_value",
        "update",
        "delete",
    }
    # Closed by a narrower no-access grant: it can use nothing, so it is not listed as a user.
    assert f"principal:{closed['principal']['id']}" not in access
    # A principal that may fetch but not read metadata sees neither the secret nor who uses it.
    fetcher = make_service(server, "fetcher-" + secrets.token_hex(4))
    org.grant(fetcher["principal"]["id"], secret_id=secret_id, operations=["read_value"])
    status, body = org.call("GET", f"/v1/secrets/{secret_id}", token=fetcher["credentials"]["access_token"])
    assert status in (403, 404), body
    assert "access" not in body


def test_the_owner_field_is_no_oracle_for_principal_ids(server: Server) -> None:
    org = Org(server)
    secret_id = org.create("own", "thing")
    org.grant(org.service_id, secret_id=secret_id, operations=["update"])
    other = make_service(server, "other-" + secrets.token_hex(4))["principal"]["id"]
    answers = []
    for owner in (other, "prn_" + secrets.token_hex(8)):
        status, body = org.call(
            "PATCH", f"/v1/secrets/{secret_id}", {"owner_principal": owner}, token=org.service
        )
        answers.append((status, body["code"]))
    assert answers == [(403, "owner_not_allowed")] * 2
    status, body = org.call(
        "PATCH", f"/v1/secrets/{secret_id}", {"owner_principal": org.service_id}, token=org.service
    )
    assert status == 200 and body["owner"] == f"principal:{org.service_id}", body
    # An admin can list principals anyway: it is told when one does not exist.
    status, body = org.call(
        "PATCH", f"/v1/secrets/{secret_id}", {"owner_principal": "prn_" + secrets.token_hex(8)}
    )
    assert (status, body["code"]) == (404, "principal_not_found")


def test_a_rotated_value_is_what_every_worker_fetches_next(server: Server) -> None:
    org = Org(server)
    secret_id = org.create("rot", "key")
    for round_no in range(16):
        value = f"value-{round_no}-" + secrets.token_hex(4)
        # Several fetches first, so both workers hold the current record and sealed row in memory.
        for _ in range(4):
            assert org.call("POST", f"/v1/secrets/{secret_id}/fetch", {})[0] == 200
        status, body = org.call("POST", f"/v1/secrets/{secret_id}/versions", {"fields": {"v": value}})
        assert status == 201, body
        for _ in range(4):
            status, body = org.call("POST", f"/v1/secrets/{secret_id}/fetch", {})
            assert status == 200 and body["values"] == {"v": value}, body
    status, body = org.call("DELETE", f"/v1/secrets/{secret_id}")
    assert status == 200, body
    for _ in range(6):
        status, body = org.call("POST", f"/v1/secrets/{secret_id}/fetch", {})
        assert (status, body["code"]) == (404, "secret_not_found")
