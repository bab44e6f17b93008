"""Issue 10's red-team gaps (b) and (c) through a running server (real SoftHSM; SQLite and PostgreSQL).

(b) A ``recipient_allowlist`` alone refuses EIP-712 data whose recipient it cannot determine (no permit
decodes from it: a governance delegation, an order) with ``recipient_not_determined``, whatever else is
attached; listing the domain's verifying contract is how such data is let through, and a permit's
spender is judged as before. (c) A refused typed-data request names the caller's structs, members and
types by position, never by name, through the sign endpoint and the JSON-RPC one alike.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, init_installation, start_server
from tests.system.test_token_calls import BOB, CAROL, Desk, permit

GOVERNOR = "0xc0Da02939E1441F497fd74F78cE7Decb17B66529"
MARK = "Zq9x"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_typedgaps"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("typedgaps")) / "data", database_url)
        running = start_server(installation)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def desk(server: Server) -> Desk:
    return Desk(server, f"gaps-{secrets.token_hex(4)}")


def delegation(verifying_contract: str | None) -> dict[str, Any]:
    """A governance vote delegation (Compound's ``Delegation``): no permit, yet it hands over votes."""
    domain_types = [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}]
    domain: dict[str, Any] = {"name": "Compound", "chainId": 1}
    if verifying_contract is not None:
        domain_types.append({"name": "verifyingContract", "type": "address"})
        domain["verifyingContract"] = verifying_contract
    return {
        "types": {
            "EIP712Domain": domain_types,
            "Delegation": [
                {"name": "delegatee", "type": "address"},
                {"name": "nonce", "type": "uint256"},
                {"name": "expiry", "type": "uint256"},
            ],
        },
        "primaryType": "Delegation",
        "domain": domain,
        "message": {"delegatee": CAROL, "nonce": 0, "expiry": 2**40},
    }


def codes(body: Any) -> list[str]:
    return [r["code"] for r in body["reasons"]]


def test_a_recipient_allowlist_alone_refuses_typed_data_whose_recipient_it_cannot_read(desk: Desk) -> None:
    desk.policy({"id": "payees", "kind": "recipient_allowlist", "effect": "deny", "addresses": [BOB]})
    for typed in (delegation(GOVERNOR), delegation(None)):
        status, body = desk.sign_typed(typed)
        assert (status, codes(body)) == (403, ["recipient_not_determined"]), body
    # A permit's spender is what the list judges: BOB is listed.
    assert desk.sign_typed(permit(5))[0] == 200


def test_listing_the_verifying_contract_lets_its_typed_data_through(desk: Desk) -> None:
    desk.policy(
        {"id": "payees", "kind": "recipient_allowlist", "effect": "deny", "addresses": [BOB, GOVERNOR]}
    )
    assert desk.sign_typed(delegation(GOVERNOR))[0] == 200
    status, body = desk.sign_typed(delegation(None))
    assert (status, codes(body)) == (403, ["recipient_not_determined"]), body


def marked() -> dict[str, Any]:
    typed = copy.deepcopy(delegation(GOVERNOR))
    typed["types"][f"Ballot{MARK}"] = typed["types"].pop("Delegation")
    typed["types"][f"Ballot{MARK}"][0]["name"] = f"delegatee{MARK}"
    typed["primaryType"] = f"Ballot{MARK}"
    typed["message"] = {f"delegatee{MARK}": CAROL, "nonce": 0, "expiry": 2**40}
    return typed


def test_a_refused_typed_data_request_names_positions_not_the_callers_names(desk: Desk) -> None:
    assert desk.sign_typed(marked())[0] == 200  # the base case is valid (no policy on this key)
    broken = []
    undefined = marked()
    undefined["types"][f"Ballot{MARK}"][1]["type"] = f"Nonce{MARK}"
    broken.append((undefined, "types[1][1].type"))
    missing = marked()
    missing["message"].pop(f"delegatee{MARK}")
    broken.append((missing, "message[0]"))
    extra = marked()
    extra["message"][f"cc{MARK}"] = 1
    broken.append((extra, "message"))
    for typed, field in broken:
        status, body = desk.sign_typed(typed)
        assert (status, body["code"], body.get("field")) == (400, "invalid_typed_data", field), body
        assert MARK not in json.dumps(body), body
        status, _, answer = desk.server.call(
            "POST",
            "/v1/rpc",
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_signTypedData_v4",
                "params": [desk.key["address"], typed],
            },
            desk.token,
        )
        assert "error" in answer and MARK not in json.dumps(answer), answer
