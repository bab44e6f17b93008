"""L-01 against the running service: many concurrent clients, every signature verified, every one audited.

A server with two worker processes takes ~3,000 sign requests from 64 concurrent aiohttp clients, mixing
every payload it signs (EIP-1559, legacy EIP-155, EIP-2930, EIP-7702, EIP-191 messages, EIP-712 typed
data) over several keys. Nothing may fail: no 5xx, no refusal, every signature recovers (eth-account) to
the key's address over the very payload we sent, and afterwards the audit export holds exactly one
``allowed`` signing event per request id we sent and verifies offline with ``signer audit verify``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.service_harness import Installation, attach_policy, grant, make_key, make_service, unlock_policy
from tests.system.support import (
    ALL_OPS,
    RECIPIENT,
    check_signature,
    cli_audit_verify,
    export_audit,
    mixed_workload,
    run_load,
    sign_outcomes,
    wait_all_workers_ready,
)

REQUESTS = 3000
CLIENTS = 64


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_concurrent_mixed_signing_all_valid_and_audited_once(
    own_installation: Installation, launch, tmp_path: Path
) -> None:
    server = launch(own_installation, workers=2)
    wait_all_workers_ready(server, 2)
    service = make_service(server, "load-relayer")
    token = service["credentials"]["access_token"]
    keys = [make_key(server, "secp256k1", f"load-{n}") for n in range(4)]
    for key in keys:
        grant(server, service["principal"]["id"], key["id"], ALL_OPS)
    # The workload includes EIP-7702 delegations, which are denied unless a policy allows the delegate.
    attach_policy(server, unlock_policy("unlock-delegates", [RECIPIENT]), scope="default")
    specs = mixed_workload(keys, REQUESTS, "l01")

    started = time.perf_counter()
    outcomes = asyncio.run(run_load(server.url, token, specs, CLIENTS))
    elapsed = time.perf_counter() - started
    # A measurement for the report (pytest -s shows it), never an assertion.
    print(f"\nL-01: {REQUESTS} signatures, {CLIENTS} clients, 2 workers: {REQUESTS / elapsed:.0f}/s")

    assert len(outcomes) == REQUESTS
    statuses = Counter(o.status for o in outcomes)
    assert statuses == {200: REQUESTS}, (statuses, next(o.text for o in outcomes if o.status != 200))
    for outcome in outcomes:
        assert outcome.request_id == outcome.spec.request_id
        check_signature(outcome.spec, outcome.body)
    assert Counter(o.spec.kind for o in outcomes) == Counter(s.kind for s in specs)

    status, _, body = server.call("GET", "/readyz")
    assert status == 200 and body["checks"] == {"hsm": "up", "database": "up"}
    assert server.process.poll() is None

    lines = export_audit(server)
    recorded = sign_outcomes(lines)
    sent = {spec.request_id for spec in specs}
    assert {rid for rid in recorded if rid.startswith("l01-")} == sent
    assert all(recorded[rid] == ["allowed"] for rid in sent), "a request was audited more than once"
    code, report = cli_audit_verify(lines, tmp_path, own_installation.env)
    assert code == 0 and report == {"ok": True, "checked": len(lines)}, report
