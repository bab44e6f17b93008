"""Requests are canonical when built, and the service's decoded objects fit them without adaptation:
these build real transactions and typed data with ``signer.eth`` and judge them."""

from __future__ import annotations

import pytest

from policy import (
    Delegation,
    Effect,
    PolicyInputError,
    PolicyRequest,
    TokenMovement,
    TransactionView,
    TypedDataDomain,
    evaluate,
)
from signer.eth import parse_transaction, typed_data_digest
from tests.policy.support import ALICE, BOB, NOW, TOKEN, full_facts, policy_set, request, rule, tx

RECIPIENT = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"
TOKEN_CONTRACT = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


def _transfer_calldata(recipient: str, amount: int) -> str:
    return "0xa9059cbb" + "00" * 12 + recipient[2:].lower() + amount.to_bytes(32, "big").hex()


def _fields(**overrides):
    body = {
        "type": 2,
        "chainId": 1,
        "nonce": 0,
        "gas": 60_000,
        "to": TOKEN_CONTRACT,
        "value": "0",
        "data": _transfer_calldata(RECIPIENT, 2500),
        "maxFeePerGas": "0x77359400",
        "maxPriorityFeePerGas": "0x3b9aca00",
    }
    body.update(overrides)
    return parse_transaction(body).fields


def test_a_decoded_erc20_transfer_becomes_a_token_movement():
    view = TransactionView.from_decoded(_fields())
    assert view.token == TokenMovement("transfer", TOKEN_CONTRACT.lower(), RECIPIENT.lower(), 2500)
    assert (view.selector, view.data_length, view.fee_cap, view.max_gas_cost) == (
        "0xa9059cbb",
        68,
        2 * 10**9,
        60_000 * 2 * 10**9,
    )
    assert [(a.asset, a.value) for a in view.amounts] == [(TOKEN_CONTRACT.lower(), 2500)]
    assert view.beneficiary == RECIPIENT.lower()


def test_decoded_token_amounts_count_against_token_limits():
    req = request(transaction=TransactionView.from_decoded(_fields()))
    cap = rule("usdc", "value_cap", max_value="2499", asset=TOKEN_CONTRACT)
    policies = policy_set(cap)
    decision = evaluate(req, policies, full_facts(req, policies), now=NOW)
    assert [r.code for r in decision.reasons] == ["value_cap_exceeded"]


def test_a_decoded_7702_authorisation_becomes_a_delegation():
    delegate = "0x0000000000000000000000000000000000000001"
    fields = _fields(
        type=4,
        data="0x",
        to=RECIPIENT,
        authorizationList=[{"chainId": 0, "address": delegate, "nonce": 0, "yParity": 0, "r": 1, "s": 1}],
    )
    view = TransactionView.from_decoded(fields)
    assert view.delegations == (Delegation(0, delegate),)
    req = request(transaction=view)
    policies = policy_set()
    assert [r.code for r in evaluate(req, policies, full_facts(req, policies), now=NOW).reasons] == [
        "delegate_not_allowed"
    ]


def test_a_contract_creation_has_no_token_movement():
    view = TransactionView.from_decoded(_fields(to=None))
    assert view.to is None and view.token is None and view.beneficiary is None


def test_a_typed_data_domain_comes_from_the_validated_digest():
    typed = typed_data_digest(
        {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Ping": [{"name": "n", "type": "uint256"}],
            },
            "primaryType": "Ping",
            "domain": {"name": "Permit2", "chainId": 1, "verifyingContract": TOKEN_CONTRACT},
            "message": {"n": 1},
        }
    )
    domain = TypedDataDomain.from_domain(typed.domain)
    assert domain == TypedDataDomain("Permit2", None, 1, TOKEN_CONTRACT.lower())
    req = request("sign_typed_data", domain=domain)
    policies = policy_set(
        rule(
            "d",
            "typed_data_domain_allowlist",
            domains=[{"name": "Permit2", "verifying_contract": TOKEN_CONTRACT}],
        )
    )
    assert evaluate(req, policies, full_facts(req, policies), now=NOW).effect is Effect.ALLOW


@pytest.mark.parametrize(
    "build",
    [
        lambda: tx(value=-1),
        lambda: tx(value=2**256),
        lambda: tx(value=True),
        lambda: tx(to="0x1234"),
        lambda: tx(selector="0xa9059cbb", data_length=3),
        lambda: tx(selector="a9059cbb", data_length=4),
        lambda: tx(to=ALICE, token=TokenMovement("transfer", TOKEN, BOB, 1)),  # token is not `to`
        lambda: TokenMovement("mint", TOKEN, BOB, 1),
        lambda: Delegation(-1, ALICE),
        lambda: PolicyRequest("p1", "sign_transaction", "k1", "acme"),  # no transaction
        lambda: PolicyRequest("p1", "sign_message", "k1", "acme", transaction=tx()),
        lambda: PolicyRequest("p1", "sign_typed_data", "k1", "acme"),
        lambda: PolicyRequest("p1", "sign_message", "k1", "Acme"),
        lambda: PolicyRequest("p1", "sign_message", "k1", "acme", resource_type="secret"),
        lambda: PolicyRequest("p1", "read_secret", "s1", "acme"),  # a secret read names a secret
        lambda: PolicyRequest("", "sign_message", "k1", "acme"),
    ],
)
def test_malformed_requests_are_refused_when_built(build):
    with pytest.raises(PolicyInputError):
        build()


def test_values_are_canonical_once_built():
    view = tx(to=ALICE.upper().replace("0X", "0x"), selector="0xA9059CBB", data_length=4)
    assert view.to == ALICE and view.selector == "0xa9059cbb"


def test_an_unknown_operation_is_denied_with_a_reason():
    req = PolicyRequest("p1", "launch_missiles", "k1", "acme")
    decision = evaluate(req, policy_set(), full_facts(req, policy_set()), now=NOW)
    assert [r.code for r in decision.reasons] == ["unknown_operation"]


def test_a_decoded_approval_for_all_is_an_unbounded_grant_to_the_operator():
    operator = "0x" + "0e" * 20
    data = "0xa22cb465" + "00" * 12 + operator[2:] + "00" * 31 + "01"
    view = TransactionView.from_decoded(_fields(data=data))
    assert view.token is not None
    assert (view.token.method, view.token.recipient, view.token.amount) == (
        "setApprovalForAll",
        operator,
        2**256 - 1,
    )
    assert view.beneficiary == operator and operator in view.addresses
    req = request(transaction=view)
    policies = policy_set(rule("nft", "value_cap", max_value="1", asset=TOKEN_CONTRACT))
    assert [r.code for r in evaluate(req, policies, full_facts(req, policies), now=NOW).reasons] == [
        "value_cap_exceeded"
    ]


def test_permits_come_only_with_typed_data_and_are_counted_there():
    permit = TokenMovement("permit", TOKEN, BOB, 7, ALICE)
    domain = TypedDataDomain(name="T", chain_id=1, verifying_contract=TOKEN)
    req = request("sign_typed_data", domain=domain, permits=[permit])
    assert req.totals == {TOKEN: 7} and [(a.asset, a.value) for a in req.amounts] == [(TOKEN, 7)]
    assert set(req.permit_addresses) == {TOKEN, BOB, ALICE}
    with pytest.raises(PolicyInputError):
        request("sign_transaction", permits=[permit])
    with pytest.raises(PolicyInputError):
        request("sign_typed_data", domain=domain, permits=[TokenMovement("transfer", TOKEN, BOB, 7)])
