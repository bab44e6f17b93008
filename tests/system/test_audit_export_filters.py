"""Filtered audit exports through a running server (D, U-05): JSONL and CSV, only for auditors and
admins, filtered by time, actor, resource, action and outcome, and each export itself audited."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.service_harness import Installation, Server, make_service
from tests.system.support import export_audit


def test_exports_are_filtered_streamed_and_audited(
    own_installation: Installation, launch: Callable[..., Server]
) -> None:
    server = launch(own_installation)
    admin = own_installation.admin_token
    auditor = make_service(server, "unused")  # a service principal: refused below
    status, _, created = server.call("POST", "/v1/principals", {"name": "aud", "role": "auditor"}, admin)
    assert status == 201, created
    auditor_token = created["credentials"]["access_token"]
    admin_id = own_installation.admin["principal"]["id"]
    for n in range(3):
        make_service(server, f"svc-{n}")
    # A refused admin call (a duplicate name) is a request.refused event with outcome refused.
    status, _, _ = server.call("POST", "/v1/principals", {"name": "svc-0", "role": "service"}, admin)
    assert status == 409

    def get(path: str, token: str = auditor_token) -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    status, _, body = get("/v1/audit/export", auditor["credentials"]["access_token"])
    assert status == 403 and json.loads(body)["code"] == "role_required"

    status, headers, body = get(f"/v1/audit/export?actor={admin_id}&outcome=refused")
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in body.splitlines()]
    events = [json.loads(r["event"]) for r in records]
    assert events and all(
        e["outcome"] == "refused" and e["actor"]["principal_id"] == admin_id for e in events
    )
    assert {e["kind"] for e in events} == {"request.refused"}

    status, _, body = get("/v1/audit/export?action=principal.create&resource_type=principal")
    assert status == 200
    kinds = {json.loads(json.loads(line)["event"])["kind"] for line in body.splitlines()}
    assert kinds == {"principal.create"}, kinds

    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, _, body = get(f"/v1/audit/export?since={future}")
    assert status == 200 and body == ""
    status, _, body = get("/v1/audit/export?since=yesterday")
    assert status == 400 and json.loads(body)["code"] == "invalid_timestamp"

    status, headers, body = get(f"/v1/audit/export/csv?actor={admin_id}")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert rows and all(row["actor_id"] == admin_id for row in rows)
    assert any(row["outcome"] == "refused" and row["error_code"] == "principal_exists" for row in rows)

    # Every export is in the log it exports, with its filters; the service's attempt is refused there too.
    exports = [json.loads(json.loads(line)["event"]) for line in export_audit(server)]
    recorded = [e for e in exports if e["kind"] == "audit.export" and "filters" in e]
    assert {json.dumps(e["filters"], sort_keys=True) for e in recorded} >= {
        json.dumps({"actor": admin_id, "outcome": "refused"}, sort_keys=True),
        json.dumps({"since": future.replace("Z", ".000000Z")}, sort_keys=True),
    }
    assert any(e["format"] == "csv" for e in recorded)
