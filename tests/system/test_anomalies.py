"""Unusual access (issue 13) through a running server, on SQLite and PostgreSQL.

A service signs from 127.0.0.1 (its first address, learnt quietly), then from 127.0.0.2 (a client
socket bound to that loopback address): the second is flagged ``new_source``; with an ``anomaly``
rule denying new sources it is refused (403 ``policy_denied``, reason ``unusual_access``) while the
known address still signs. The flag is one ``anomaly.detected`` audit event (no value), one count of
``signer_anomalies_total{signal="new_source"}`` and one POST to the alerts webhook, HMAC signed with
the key in ``alerts_webhook_secret_file``. A restarted server still knows the first address.

With two workers and a receiver that refuses its first calls, each alert arrives exactly once per id
after the retries (``signer_alerts_pending`` back at 0); an alert pending when the server stops is
delivered by the restarted server.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
from pathlib import Path
from typing import Any

import pytest

from tests.service_harness import Server, attach_policy, grant, init_installation, make_key, make_service
from tests.system.support import HANG_GUARD, events, export_audit, wait_until
from tests.system.test_webhook_rotation import Receiver


class Refusing(Receiver):
    """A receiver that answers 503 while ``refuse`` is above 0 (counting down), then 204; ``accepted``
    counts the accepted calls per ``X-Signer-Event-Id``."""

    def __init__(self, refuse: int) -> None:
        super().__init__()
        self.refuse = refuse
        self.accepted: dict[str, int] = {}
        outer = self
        handler = self.http.RequestHandlerClass

        class Handler(handler):  # type: ignore[misc,valid-type]
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.calls.append(({k: v for k, v in self.headers.items()}, body))
                if outer.refuse != 0:
                    outer.refuse -= 1
                    self.send_response(503)
                else:
                    event_id = self.headers["X-Signer-Event-Id"]
                    outer.accepted[event_id] = outer.accepted.get(event_id, 0) + 1
                    self.send_response(204)
                self.end_headers()

        self.http.RequestHandlerClass = Handler


MESSAGE = {"message": "hello", "encoding": "utf8"}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("pg_url") if request.param == "postgres" else None


def sign_from(server: Server, source: str, key_id: str, token: str) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=HANG_GUARD, source_address=(source, 0)
    )
    try:
        connection.request(
            "POST",
            f"/v1/keys/{key_id}/sign/message",
            json.dumps(MESSAGE),
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def flags(server: Server) -> list[dict[str, Any]]:
    return [e for e in events(export_audit(server)) if e["kind"] == "anomaly.detected"]


def gauge(server: Server, prefix: str) -> float:
    status, _, text = server.call("GET", "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(prefix + " ") or line.startswith(prefix + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def counted(server: Server, signal: str) -> float:
    return gauge(server, 'signer_anomalies_total{signal="' + signal + '"}')


def test_a_new_source_is_flagged_audited_alerted_and_denied_by_a_rule(
    tmp_path: Path, launch, database_url: str | None
) -> None:
    installation = init_installation(tmp_path / "data", database_url)
    secret_file = tmp_path / "alerts.key"
    secret_file.write_text("alerts-test-key\n", encoding="utf-8")
    with Receiver() as receiver:
        env = {
            "SIGNER_ALERTS_WEBHOOK_URL": receiver.url,
            "SIGNER_ALERTS_WEBHOOK_SECRET_FILE": str(secret_file),
            "SIGNER_WEBHOOK_ALLOWED_DESTINATIONS": "127.0.0.1/32",
            "SIGNER_USAGE_FLUSH_SECONDS": "0.05",
        }
        server: Server = launch(installation, env=env)
        service = make_service(server, "relayer-anomaly")
        token = service["credentials"]["access_token"]
        key = make_key(server)
        grant(server, service["principal"]["id"], key["id"], ["sign_message"])

        assert sign_from(server, "127.0.0.1", key["id"], token)[0] == 200
        assert sign_from(server, "127.0.0.1", key["id"], token)[0] == 200
        status, body = sign_from(server, "127.0.0.2", key["id"], token)
        assert status == 200, body  # no rule: the flag changes nothing
        wait_until(lambda: len(receiver.calls) >= 1, 30, "the alert")
        headers, raw = receiver.calls[0]
        alert = json.loads(raw)
        assert (alert["signal"], alert["source"], alert["outcome"]) == ("new_source", "127.0.0.2", "allowed")
        assert alert["principal_id"] == service["principal"]["id"]
        expected = hmac.new(
            b"alerts-test-key", headers["X-Signer-Timestamp"].encode() + b"." + raw, hashlib.sha256
        ).hexdigest()
        assert headers["X-Signer-Signature"] == "sha256=" + expected
        found = wait_until(lambda: flags(server) or None, 30, "the audit event")
        assert [(f["signal"], f["source"], f["actor"]["principal_id"]) for f in found] == [
            ("new_source", "127.0.0.2", service["principal"]["id"])
        ]
        assert "signature" not in json.dumps(found)
        assert counted(server, "new_source") == 1

        # A rule denies new sources: 127.0.0.3 is refused, the known addresses still sign.
        attach_policy(
            server,
            {
                "id": "odd",
                "rules": [{"id": "new", "kind": "anomaly", "effect": "deny", "signals": ["new_source"]}],
            },
            key_id=key["id"],
        )
        status, body = sign_from(server, "127.0.0.3", key["id"], token)
        assert (status, body["code"]) == (403, "policy_denied"), body
        assert [r["code"] for r in body["reasons"]] == ["unusual_access"]
        assert sign_from(server, "127.0.0.2", key["id"], token)[0] == 200
        wait_until(lambda: len(flags(server)) == 2, 30, "the second flag")
        server.stop()

        # After a restart the learnt addresses are still known (persisted), the denied one is not.
        server = launch(installation, env=env)
        assert sign_from(server, "127.0.0.1", key["id"], token)[0] == 200
        assert sign_from(server, "127.0.0.2", key["id"], token)[0] == 200
        assert sign_from(server, "127.0.0.3", key["id"], token)[0] == 403


def test_alerts_are_retried_delivered_once_and_survive_a_restart(
    tmp_path: Path, launch, database_url: str | None
) -> None:
    installation = init_installation(tmp_path / "data", database_url)
    with Refusing(refuse=2) as receiver:
        env = {
            "SIGNER_ALERTS_WEBHOOK_URL": receiver.url,
            "SIGNER_WEBHOOK_ALLOWED_DESTINATIONS": "127.0.0.1/32",
            "SIGNER_USAGE_FLUSH_SECONDS": "0.05",
        }
        server: Server = launch(installation, env=env, workers=2)
        service = make_service(server, "relayer-alerts")
        token = service["credentials"]["access_token"]
        key = make_key(server)
        grant(server, service["principal"]["id"], key["id"], ["sign_message"])
        assert sign_from(server, "127.0.0.1", key["id"], token)[0] == 200
        assert sign_from(server, "127.0.0.1", key["id"], token)[0] == 200
        # Two new addresses: two alerts; the receiver refuses the first two calls.
        assert sign_from(server, "127.0.0.2", key["id"], token)[0] == 200
        assert sign_from(server, "127.0.0.3", key["id"], token)[0] == 200
        wait_until(lambda: len(receiver.accepted) == 2, 60, "both alerts, after the retries")
        assert sorted(receiver.accepted.values()) == [1, 1]
        assert len(receiver.calls) >= 4
        wait_until(lambda: gauge(server, "signer_alerts_pending") == 0 or None, 30, "no alert pending")
        server.stop()

        # Refused while the server runs, the next alert is still pending when it stops...
        receiver.refuse = -1
        server = launch(installation, env=env)
        assert sign_from(server, "127.0.0.4", key["id"], token)[0] == 200
        wait_until(lambda: len(receiver.calls) >= 5, 30, "a refused call")
        server.stop()
        assert len(receiver.accepted) == 2
        # ...and delivered by the restarted server.
        receiver.refuse = 0
        server = launch(installation, env=env)
        wait_until(lambda: len(receiver.accepted) == 3, 60, "the pending alert, after the restart")
        assert sorted(receiver.accepted.values()) == [1, 1, 1]
        assert {json.loads(body)["source"] for _, body in receiver.calls} == {
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
        }


def test_an_alert_given_up_is_on_the_operator_checklist(
    tmp_path: Path, launch, database_url: str | None
) -> None:
    """A receiver that refuses every call and a one-second expiry: the alert is given up, and the
    checklist's ``undelivered_alerts`` (and ``GET /v1/alerts``) name it; before any alert the item is
    empty."""
    installation = init_installation(tmp_path / "data", database_url)
    admin = installation.admin_token
    with Refusing(refuse=-1) as receiver:
        env = {
            "SIGNER_ALERTS_WEBHOOK_URL": receiver.url,
            "SIGNER_WEBHOOK_ALLOWED_DESTINATIONS": "127.0.0.1/32",
            "SIGNER_ALERTS_WEBHOOK_EXPIRY_SECONDS": "1",
            "SIGNER_USAGE_FLUSH_SECONDS": "0.05",
        }
        server: Server = launch(installation, env=env)
        service = make_service(server, "relayer-undelivered")
        token = service["credentials"]["access_token"]
        key = make_key(server)
        grant(server, service["principal"]["id"], key["id"], ["sign_message"])

        def undelivered() -> list[dict[str, Any]]:
            status, _, checklist = server.call("GET", "/v1/checklist", token=admin)
            assert status == 200, checklist
            return next(i for i in checklist["items"] if i["id"] == "undelivered_alerts")["entries"]

        assert sign_from(server, "127.0.0.1", key["id"], token)[0] == 200  # the first address: no flag
        assert undelivered() == []
        assert sign_from(server, "127.0.0.2", key["id"], token)[0] == 200
        (entry,) = wait_until(
            lambda: [e for e in undelivered() if e["state"] == "given_up"],
            60,
            "the refused alert to be given up",
        )
        assert (entry["signal"], entry["principal_id"], entry["last_error"]) == (
            "new_source",
            service["principal"]["id"],
            "expired",
        )
        assert entry["attempts"] >= 1 and receiver.calls and not receiver.accepted
        status, _, alerts = server.call("GET", "/v1/alerts", token=admin)
        assert status == 200, alerts
        assert [(a["id"], a["state"]) for a in alerts["alerts"]] == [(entry["alert_id"], "given_up")]
