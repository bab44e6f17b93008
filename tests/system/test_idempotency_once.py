"""L-04 and L-05: one ``Idempotency-Key`` reaches the HSM once, however many duplicates arrive at once.

Twenty identical requests with one key are fired together (released by a barrier) at a running server:
one worker, two workers, and (PostgreSQL) two replicas sharing one database. Every answer must be the
same signature, checked with eth-account, and the HSM must have signed exactly once, counted two
independent ways: the servers' ``signer_hsm_call_duration_seconds_count{outcome="ok"}`` (every token
call, scraped before and after) and the audit log (every signature made is audited as allowed or as
discarded). Then the claim row a dead or slow claimant leaves behind is planted in the database: a live
one makes a duplicate answer 409 ``idempotency_in_progress`` with ``Retry-After`` (or 422 for another
body) without touching the HSM, a stale one is taken over and the request executes once.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from signer.store import Writer, open_store
from tests.dbfixtures import run_sync
from tests.service_harness import Installation, Server, grant, http, init_installation, make_key, make_service
from tests.system.support import RECIPIENT, events, export_audit

DUPLICATES = 20


def tx(nonce: int) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 1,
        "nonce": nonce,
        "gas": 21000,
        "to": RECIPIENT,
        "value": 1,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }


def hsm_signatures(servers: list[Server]) -> float:
    """Token calls that answered, summed over the servers (each scrape covers all of its workers)."""
    total = 0.0
    for server in servers:
        with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith("signer_hsm_call_duration_seconds_count{") and 'outcome="ok"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def executions(server: Server, key: str) -> list[dict[str, Any]]:
    """Audit events of signatures made under ``key`` (released, or made and discarded)."""
    status, _, answer = http(
        "POST",
        server.url + "/v1/audit/hmac",
        {"field": "idempotency_key", "value": key},
        server.installation.admin_token,
    )
    assert status == 200, answer
    digest = answer["hmac"]
    return [
        e
        for e in events(export_audit(server))
        if e.get("idempotency_key_hmac") == digest
        and (e.get("outcome") == "allowed" or e.get("signature_discarded"))
    ]


class Fixture:
    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        first = servers[0]
        service = make_service(first, "idem-relayer")
        self.principal_id = service["principal"]["id"]
        self.token = service["credentials"]["access_token"]
        self.key = make_key(first, "secp256k1", "idem")
        grant(first, self.principal_id, self.key["id"], ["sign_transaction"])
        self.path = f"/v1/keys/{self.key['id']}/sign/transaction"

    def sign(self, i: int, body: dict[str, Any], idem: str) -> tuple[int, dict[str, str], Any]:
        server = self.servers[i % len(self.servers)]
        return http("POST", server.url + self.path, body, self.token, headers={"Idempotency-Key": idem})

    def duplicates(self, body: dict[str, Any], idem: str) -> list[tuple[int, dict[str, str], Any]]:
        barrier = threading.Barrier(DUPLICATES)

        def one(i: int) -> tuple[int, dict[str, str], Any]:
            barrier.wait(timeout=60)  # released together: as concurrent as the client can make them
            return self.sign(i, body, idem)

        with ThreadPoolExecutor(DUPLICATES) as pool:
            return list(pool.map(one, range(DUPLICATES)))

    def check_signed(self, answer: Any) -> None:
        raw = bytes.fromhex(answer["raw_transaction"][2:])
        assert Account.recover_transaction(raw) == self.key["address"]


def topology(
    tmp_path: Path, launch: Callable[..., Server], database_url: str | None, shape: str
) -> tuple[Installation, list[Server]]:
    installation = init_installation(tmp_path / "data", database_url)
    if shape == "replicas":
        return installation, [launch(installation), launch(installation)]
    return installation, [launch(installation, workers=2 if shape == "workers" else 1)]


def run_duplicates(installation: Installation, servers: list[Server]) -> None:
    f = Fixture(servers)
    before = hsm_signatures(servers)
    answers = f.duplicates({"transaction": tx(1)}, "order-1")
    assert {status for status, _, _ in answers} == {200}, answers
    bodies = [body for _, _, body in answers]
    assert all(body == bodies[0] for body in bodies)
    f.check_signed(bodies[0])
    assert hsm_signatures(servers) - before == 1
    assert len(executions(servers[0], "order-1")) == 1

    # The same key with another body is refused, and nothing is signed for it.
    before = hsm_signatures(servers)
    status, _, body = f.sign(0, {"transaction": tx(2)}, "order-1")
    assert status == 422 and body["code"] == "idempotency_key_reused", body
    assert "order-1" not in str(body)
    # A replay is the stored answer; a new key is a new execution.
    assert f.sign(1, {"transaction": tx(1)}, "order-1")[2] == bodies[0]
    status, _, again = f.sign(1, {"transaction": tx(1)}, "order-2")
    assert status == 200, again
    f.check_signed(again)
    assert hsm_signatures(servers) - before == 1


@pytest.mark.timeout(300)
@pytest.mark.parametrize("shape", ["one", "workers"])
def test_duplicates_execute_once_on_sqlite(tmp_path: Path, launch: Callable[..., Server], shape: str) -> None:
    installation, servers = topology(tmp_path, launch, None, shape)
    run_duplicates(installation, servers)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("shape", ["workers", "replicas"])
def test_duplicates_execute_once_on_postgresql(
    tmp_path: Path, launch: Callable[..., Server], pg_url: str, shape: str
) -> None:
    installation, servers = topology(tmp_path, launch, pg_url, shape)
    run_duplicates(installation, servers)


def plant_claim(url: str, principal_id: str, key: str, digest: str, claimed_at: datetime) -> None:
    """The row a claimant leaves behind if it dies (or is still working) after claiming ``key``."""

    async def plant() -> None:
        store = await open_store(url, pool_size=1)
        try:

            async def unit(writer: Writer) -> None:
                taken = await writer.idempotency.claim(
                    principal_id, key, digest, "planted-claim", claimed_at, claimed_at - timedelta(days=1)
                )
                assert taken is None

            await store.submit(unit)
        finally:
            await store.close()

    run_sync(plant)


def stored_digest(url: str, principal_id: str, key: str) -> str:
    async def read() -> str:
        store = await open_store(url, pool_size=1)
        try:
            async with store.read() as reader:
                record = await reader.idempotency.get(principal_id, key)
        finally:
            await store.close()
        assert record is not None and record.claim is None
        return record.request_digest

    return run_sync(read)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_claims_in_progress_wait_and_stale_claims_expire(
    tmp_path: Path, launch: Callable[..., Server], request: pytest.FixtureRequest, backend: str
) -> None:
    pg = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    installation = init_installation(tmp_path / "data", pg)
    url = pg or f"sqlite+aiosqlite:///{(installation.data_dir / 'signer.db').resolve()}"
    # A short request deadline: a duplicate's wait (a fraction of it) is up quickly.
    server = launch(installation, env={"SIGNER_REQUEST_DEADLINE_SECONDS": "2"})
    f = Fixture([server])
    body = {"transaction": tx(7)}
    assert f.sign(0, body, "probe")[0] == 200
    digest = stored_digest(url, f.principal_id, "probe")  # what any key naming this request stores

    now = datetime.now(UTC)
    plant_claim(url, f.principal_id, "held", digest, now)
    plant_claim(url, f.principal_id, "held-other", "0" * 64, now)
    plant_claim(url, f.principal_id, "orphan", digest, now - timedelta(days=1))
    before = hsm_signatures([server])

    # Another request holds the key: the duplicate waits, then hears "in progress", and signs nothing.
    status, headers, answer = f.sign(0, body, "held")
    assert status == 409 and answer["code"] == "idempotency_in_progress", answer
    assert re.fullmatch(r"[1-9][0-9]*", headers.get("Retry-After", "")), headers
    # A key held for another request is refused as reused, in progress or not.
    status, _, answer = f.sign(0, body, "held-other")
    assert status == 422 and answer["code"] == "idempotency_key_reused", answer
    assert hsm_signatures([server]) == before
    assert not executions(server, "held") and not executions(server, "held-other")

    # A request that fails stores nothing and frees its key at once: the corrected request executes.
    status, _, answer = f.sign(0, {"transaction": {**tx(7), "nonce": -1}}, "fixed")
    assert status == 400, answer
    status, _, signed = f.sign(0, body, "fixed")
    assert status == 200, signed
    f.check_signed(signed)

    # A claimant that died long ago does not block its key: the claim is taken over, executed once.
    status, _, signed = f.sign(0, body, "orphan")
    assert status == 200, signed
    f.check_signed(signed)
    assert f.sign(0, body, "orphan")[2] == signed
    assert hsm_signatures([server]) - before == 2
    assert len(executions(server, "orphan")) == 1 and len(executions(server, "fixed")) == 1
