"""Issue 10 section 6 through a running server: a webhook key rotation with an overlap sends both
signatures (newest first) and, with no overlap, only the new one.

``signer serve`` runs with ``webhook_allowed_destinations = 127.0.0.1/32`` and delivers to a real HTTP
receiver on loopback; events come from sign requests that a ``require_approval`` rule turns into pending
approvals. The receiver checks every signature the way a consumer does (split on commas, HMAC-SHA256
over ``<timestamp>.<body>`` with each key it holds). SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.service_harness import Server, attach_policy, grant, init_installation, make_key, make_service
from tests.system.support import HANG_GUARD, wait_until

TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


class Receiver:
    """A loopback HTTP endpoint that records every POST (headers and body) and answers 204."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        received = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(HANG_GUARD)


def mac(secret: str, headers: dict[str, str], body: bytes) -> str:
    message = headers["X-Signer-Timestamp"].encode() + b"." + body
    return "sha256=" + hmac.new(bytes.fromhex(secret), message, hashlib.sha256).hexdigest()


def signatures(headers: dict[str, str]) -> list[str]:
    return [part.strip() for part in headers["X-Signer-Signature"].split(",")]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("pg_url") if request.param == "postgres" else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as hook:
        yield hook


def test_rotation_sends_both_signatures_during_the_overlap_then_only_the_new_one(
    tmp_path: Path, launch, database_url: str | None, receiver: Receiver
) -> None:
    installation = init_installation(tmp_path / "data", database_url)
    server: Server = launch(installation, env={"SIGNER_WEBHOOK_ALLOWED_DESTINATIONS": "127.0.0.1/32"})
    admin = installation.admin_token
    service = make_service(server, "relayer")
    key = make_key(server, "secp256k1", "hooked")
    grant(server, service["principal"]["id"], key["id"], ["sign_transaction"])
    attach_policy(
        server,
        {
            "id": "big",
            "rules": [
                {
                    "id": "big",
                    "kind": "value_cap",
                    "effect": "require_approval",
                    "max_value": "0",
                    "approval": {"quorum": 1, "group": "treasury", "expires_in_seconds": 3600},
                }
            ],
        },
        key_id=key["id"],
    )
    status, _, body = server.call("PUT", "/v1/groups/treasury/webhook", {"url": receiver.url}, admin)
    assert status == 200, body
    old = body["secret"]
    nonces = iter(range(1000))

    def next_delivery() -> tuple[dict[str, str], bytes]:
        before = len(receiver.calls)
        tx = {"type": 2, "chainId": 1, "nonce": next(nonces), "gas": 21000, "to": TO, "value": "1"}
        tx |= {"maxFeePerGas": "2", "maxPriorityFeePerGas": "1"}
        status, _, body = server.call(
            "POST",
            f"/v1/keys/{key['id']}/sign/transaction",
            {"transaction": tx},
            service["credentials"]["access_token"],
        )
        assert status == 202, body
        wait_until(lambda: len(receiver.calls) > before, HANG_GUARD, "the webhook delivery")
        return receiver.calls[before]

    headers, delivered = next_delivery()
    assert signatures(headers) == [mac(old, headers, delivered)]

    status, _, body = server.call(
        "POST", "/v1/groups/treasury/webhook/rotate-secret", {"overlap_seconds": 3600}, admin
    )
    assert status == 200 and body["previous_secret_until"], body
    new = body["secret"]
    assert new != old
    headers, delivered = next_delivery()
    assert signatures(headers) == [mac(new, headers, delivered), mac(old, headers, delivered)]

    # No overlap: the previous key stops at once.
    status, _, body = server.call(
        "POST", "/v1/groups/treasury/webhook/rotate-secret", {"overlap_seconds": 0}, admin
    )
    assert status == 200, body
    newest = body["secret"]
    headers, delivered = next_delivery()
    assert signatures(headers) == [mac(newest, headers, delivered)]
    for secret in (old, new, newest):
        assert secret not in server.log_text()
