"""The console's wording (``signer.http.console_present``) for each kind of request, without a browser:
the one sentence, the dangers (EIP-7702 delegations, unlimited approvals and permits), the fee and the
reasons, with exact amounts."""

from __future__ import annotations

from typing import Any

from signer.http import console_present as present

MAX = str(2**256 - 1)
SPENDER = "0x1111111111111111111111111111111111111111"
TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


def _tx(**view: Any) -> dict[str, Any]:
    base = {
        "scheme": "transaction",
        "key_label": "hot-1",
        "chainId": "1",
        "to": TOKEN,
        "value": "0",
        "value_eth": "0",
        "maxGasCost": "630000000000000",
        "max_gas_cost_eth": "0.00063",
        "selector": None,
        "token_call": None,
        "contractCreation": False,
    }
    return {"id": "apr_1", "key_id": "key_1", "view": {**base, **view}}


def test_a_plain_send_in_eth_and_grouped_wei() -> None:
    item = _tx(value="1500000000000000000", value_eth="1.5", to="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    assert present.summary(item) == (
        "Send 1.5 ETH (1,500,000,000,000,000,000 wei) to 0x5aAe…BeAed on Ethereum mainnet (chain 1) "
        "from hot-1"
    )
    assert present.fee(item) == "0.00063 ETH (630,000,000,000,000 wei) at most"
    assert present.dangers(item) == []
    assert present.summary(_tx(chainId="99999", value_eth="0")).endswith("on chain 99999 from hot-1")


def test_an_unlimited_token_approval_is_dangerous() -> None:
    call = {
        "method": "approve",
        "signature": "approve(address,uint256)",
        "recipient": SPENDER,
        "amount": MAX,
        "unbounded": True,
    }
    item = _tx(selector="0x095ea7b3", token_call=call)
    assert present.summary(item) == (
        "Allow 0x1111…11111 to spend an unlimited amount of token 0xA0b8…6eB48 on Ethereum mainnet (chain 1) "
        "from hot-1"
    )
    assert present.function(item) == "approve(address,uint256)"
    assert present.dangers(item) == [f"Unlimited approval: {SPENDER} may move every token of this kind"]
    bounded = _tx(token_call={**call, "method": "transfer", "amount": "2500000", "unbounded": False})
    assert "2,500,000 units" in present.summary(bounded) and present.dangers(bounded) == []
    assert present.function(_tx(selector="0xdeadbeef")) == "selector 0xdeadbeef (not decoded)"


def test_a_delegation_and_an_unlimited_permit_are_dangerous() -> None:
    delegated = _tx(delegates=[SPENDER])
    assert present.dangers(delegated) == [f"EIP-7702 delegation: this account's code becomes {SPENDER}'s"]
    permit = {"token": TOKEN, "spender": SPENDER, "amount": MAX, "unbounded": True}
    item = {
        "key_id": "key_1",
        "view": {
            "scheme": "eip712",
            "key_label": "hot-1",
            "primary_type": "Permit",
            "domain": {"name": "USD Coin", "chainId": "1"},
            "permits": [permit],
        },
    }
    assert present.summary(item) == (
        "Sign a permit letting 0x1111…11111 spend an unlimited amount of token 0xA0b8…6eB48 with hot-1"
    )
    assert present.dangers(item) == [f"Unlimited permit: {SPENDER} may move every token of this kind"]


def test_an_eip7702_authorisation_says_whose_code_and_is_dangerous() -> None:
    """An authorisation signed on its own (sign_authorization): the sentence names the account, the
    delegate and the chain (any chain for 0), labels from the address book, and the danger."""
    view = {
        "scheme": "eip7702_authorization",
        "key_label": "hot-1",
        "chain_id": "1",
        "any_chain": False,
        "delegate": SPENDER,
        "nonce": "3",
        "authority": TOKEN,
    }
    item = {"key_id": "key_1", "view": view}
    assert present.summary(item) == (
        "Delegate account 0xA0b8…6eB48 to the code of 0x1111…11111 on Ethereum mainnet (chain 1) "
        "(EIP-7702 authorisation, account nonce 3) with hot-1"
    )
    assert present.dangers(item) == [f"EIP-7702 delegation: this account's code becomes {SPENDER}'s"]
    anywhere = {"key_id": "key_1", "view": {**view, "chain_id": "0", "any_chain": True}}
    notes = {"addresses": {SPENDER: {"label": "batcher", "note": ""}}, "tokens": {}, "function": None}
    assert present.summary(anywhere, notes) == (
        "Delegate account 0xA0b8…6eB48 to the code of 0x1111…11111 (batcher, from your address book) on "
        "any chain (EIP-7702 authorisation, account nonce 3) with hot-1"
    )
    assert present.dangers(anywhere) == [
        f"EIP-7702 delegation: this account's code becomes {SPENDER}'s on every chain (chain id 0)"
    ]


def test_a_secret_read_and_the_reasons() -> None:
    item = {
        "view": {
            "scheme": "secret_read",
            "folder": "prod",
            "name": "db",
            "version": 3,
            "fields": ["password"],
            "requested_by": {"name": "ci"},
            "reasons": [{"message": "reads need two", "rule_id": "r1", "policy": "p@2"}],
        },
        "requirements": [{"group": "ops", "quorum": 2}],
        "progress": {"ops": 1},
    }
    assert present.summary(item) == "Release version 3 of secret prod/db (password) to ci"
    assert present.reasons(item) == ["reads need two (rule r1 of policy p@2)"]
    assert present.requirements(item) == ["1 of 2 approvals from ops"]
    assert present.time_left(3720) == "1 h 2 min left" and present.time_left(0) == "expired"
    assert present.table({"a": [1, {"b": None}]}) == [("a", [("0", "1"), ("1", [("b", "")])])]


def test_token_units_and_labels_from_the_books() -> None:
    from signer.http.console_present import NO_NOTES, labelled, summary, units

    assert units("250000000", 6) == "250"
    assert units("1500001", 6) == "1.500001"
    assert units("1234567000000000000000", 18) == "1,234.567"
    assert units("7", 0) == "7"
    to = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    notes = {
        "addresses": {to.lower(): {"label": "payroll", "note": ""}},
        "tokens": {to.lower(): {"symbol": "USDC", "decimals": 6}},
        "function": None,
    }
    assert labelled(to, notes) == "0x5aAe…BeAed (payroll, from your address book)"
    assert labelled(to, NO_NOTES) == "0x5aAe…BeAed"
    item = {
        "key_id": "key_1",
        "view": {
            "scheme": "transaction",
            "chainId": "1",
            "to": to,
            "token_call": {"method": "transfer", "amount": "250000000", "recipient": to},
        },
    }
    assert summary(item, notes) == (
        "Call transfer on token USDC (0x5aAe…BeAed): 250 USDC (250,000,000 base units) to "
        "0x5aAe…BeAed (payroll, from your address book) on Ethereum mainnet (chain 1) from key_1"
    )
    assert "250,000,000 units" in summary(item)  # an unknown token stays in raw units


def test_a_key_transition_says_what_it_does_and_warns_when_it_cannot_be_undone() -> None:
    view = {
        "scheme": "key_lifecycle",
        "action": "destroy",
        "key_id": "key_1",
        "key_label": "hot wallet",
        "key_state": "deactivated",
        "state_after": "destroyed",
        "reason": "retired",
        "irreversible": True,
        "destroys_private_key": True,
        "requested_by": {"name": "ops-admin"},
    }
    assert present.summary({"view": view}) == (
        "Destroy key hot wallet (key_1, deactivated to destroyed), asked by ops-admin, because: retired"
    )
    assert present.dangers({"view": view}) == [
        "Irreversible: the private key is destroyed in the token and can never sign again"
    ]
    suspend = {**view, "action": "suspend", "state_after": "suspended", "reason": None}
    suspend.update(irreversible=False, destroys_private_key=False)
    assert present.summary({"view": suspend}).endswith("asked by ops-admin")
    assert present.dangers({"view": suspend}) == []
