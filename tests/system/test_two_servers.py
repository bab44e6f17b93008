"""Two ``signer serve`` processes on one data directory (one SoftHSM token) and one PostgreSQL database.

This is the "replicas behind a load balancer" shape on one machine: two separate commands, two ports,
shared state. Requests signed concurrently through both must all verify and land in ONE gapless audit
chain that verifies offline; a key created through A signs through B at once; a token revoked through A
is refused by B on its very next request, although B had it cached (the facts epoch moved).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from tests.service_harness import (
    attach_policy,
    grant,
    init_installation,
    make_key,
    make_service,
    unlock_policy,
)
from tests.system.support import (
    ALL_OPS,
    RECIPIENT,
    check_signature,
    cli_audit_verify,
    export_audit,
    mixed_workload,
    run_load,
    sign_outcomes,
)


async def both(a_url: str, b_url: str, token: str, specs_a, specs_b):
    return await asyncio.gather(run_load(a_url, token, specs_a, 16), run_load(b_url, token, specs_b, 16))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_servers_share_token_database_and_one_audit_chain(tmp_path: Path, pg_url: str, launch) -> None:
    installation = init_installation(tmp_path / "data", pg_url)
    a = launch(installation)
    b = launch(installation)

    service = make_service(a, "replicated-relayer")
    token = service["credentials"]["access_token"]
    keys = [make_key(a, "secp256k1", "made-on-a"), make_key(b, "secp256k1", "made-on-b")]
    for key in keys:
        grant(a, service["principal"]["id"], key["id"], ALL_OPS)
    # The workload includes EIP-7702 delegations, which are denied unless a policy allows the delegate.
    attach_policy(a, unlock_policy("unlock-delegates", [RECIPIENT]), scope="default")

    # Made on one server, used on the other, with no restart and no wait in between.
    for server, key in ((b, keys[0]), (a, keys[1])):
        status, _, body = server.call(
            "POST", f"/v1/keys/{key['id']}/sign/message", {"message": "cross", "encoding": "utf8"}, token
        )
        assert status == 200, body
        assert body["signer"] == key["address"]

    specs = mixed_workload(keys, 1200, "two")
    outcomes_a, outcomes_b = asyncio.run(both(a.url, b.url, token, specs[0::2], specs[1::2]))
    outcomes = outcomes_a + outcomes_b
    assert Counter(o.status for o in outcomes) == {200: len(specs)}, next(
        (o.text for o in outcomes if o.status != 200), None
    )
    for outcome in outcomes:
        check_signature(outcome.spec, outcome.body)

    # B has just used the token (it is in B's facts cache); revoke it through A.
    status, _, body = a.call(
        "DELETE", f"/v1/tokens/{service['credentials']['access_token_id']}", token=installation.admin_token
    )
    assert status == 200, body
    status, _, body = b.call(
        "POST",
        f"/v1/keys/{keys[0]['id']}/sign/message",
        {"message": "after revocation", "encoding": "utf8"},
        token,
        headers={"X-Request-Id": "revoked-on-b"},
    )
    assert status == 401 and body["code"] == "token_revoked", body
    assert "signature" not in body

    lines = export_audit(b)
    seqs = [json.loads(line)["seq"] for line in lines]
    assert seqs == list(range(1, len(lines) + 1)), "the shared audit chain has a gap or a duplicate"
    recorded = sign_outcomes(lines)
    assert all(recorded.get(spec.request_id) == ["allowed"] for spec in specs)
    assert "allowed" not in recorded.get("revoked-on-b", [])
    code, report = cli_audit_verify(lines, tmp_path, installation.env)
    assert code == 0 and report == {"ok": True, "checked": len(lines)}, report

    for server in (a, b):
        status, _, body = server.call("GET", "/readyz")
        assert status == 200, body
