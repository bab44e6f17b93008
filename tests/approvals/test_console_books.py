"""The approver's page with the operator's books, in a real headless Chromium against a running
service: an address book label beside the destination ("…, from your address book"), an ERC-20 amount
in the token's units ("250 USDC (250,000,000 base units)"), a registered function named with its
arguments decoded, and a label holding markup shown as text (escaped, never markup). Each page passes
the axe-core scan at both sizes and is photographed (tests/artifacts/console/)."""

from __future__ import annotations

import secrets
from typing import Any

from eth_abi import encode
from eth_account import Account
from eth_utils import to_checksum_address

from tests.approvals import webdriver
from tests.approvals.test_api_approvals import Desk
from tests.approvals.test_console_browser import _checked, _sign_in
from tests.service_harness import Server

DANGERS = "return Array.from(document.querySelectorAll('p.danger')).map(p => p.innerText)"
TWO_ETH = "2000000000000000000"  # over the desk's 1 ETH cap: every request below waits for approval


def _address() -> str:
    return to_checksum_address("0x" + secrets.token_hex(20))


def _tx(to: str, data: bytes = b"", gas: int = 21000) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 1,
        "nonce": 0,
        "gas": gas,
        "to": to,
        "value": TWO_ETH,
        "data": "0x" + data.hex(),
        "maxFeePerGas": 30_000_000_000,
        "maxPriorityFeePerGas": 1_000_000_000,
    }


def _pending(desk: Desk, fields: dict[str, Any]) -> str:
    status, body = desk.sign(fields)
    assert status == 202, body
    return str(body["approval"]["id"])


def _put(server: Server, method: str, path: str, body: dict[str, Any]) -> Any:
    status, _, answer = server.call(method, path, body, server.installation.admin_token)
    assert status == 200, answer
    return answer


def test_the_sentence_uses_the_books(server: Server, unique_name: str, browser: webdriver.Browser) -> None:
    desk = Desk(server, unique_name)
    payroll, usdc, vault = _address(), _address(), _address()
    _put(server, "PUT", f"/v1/books/addresses/{payroll}", {"label": "payroll <i>EU</i>", "note": "monthly"})
    _put(server, "PUT", f"/v1/books/tokens/1/{usdc}", {"symbol": "USDC", "decimals": 6})
    signature = f"payout{secrets.token_hex(3)}(address,uint256)"
    (registered,) = _put(server, "POST", "/v1/books/functions", {"signature": signature})["items"]

    plain = _pending(desk, _tx(payroll))
    transfer = _pending(
        desk,
        _tx(usdc, bytes.fromhex("a9059cbb") + encode(["address", "uint256"], [payroll, 250_000_000]), 90000),
    )
    call = bytes.fromhex(registered["selector"][2:]) + encode(["address", "uint256"], [payroll, 42])
    payout = _pending(desk, _tx(vault, call, 90000))

    browser.get(f"{server.url}/console/approvals/{plain}")
    _sign_in(browser, desk.approvers[0])
    browser.wait_url(f"/console/approvals/{plain}")
    short = f"{payroll[:6]}…{payroll[-5:]}"
    assert browser.text("#summary") == (
        f"Send 2 ETH (2,000,000,000,000,000,000 wei) to {short} (payroll <i>EU</i>, from your address book) "
        "on Ethereum mainnet (chain 1) from k"
    )
    # The label's markup is text: no element was made from it.
    assert browser.script("return document.querySelector('#summary i')") is None
    assert browser.text("#fee") == "0.00063 ETH (630,000,000,000,000 wei) at most"
    _checked(browser, "books-address-label")

    browser.get(f"{server.url}/console/approvals/{transfer}")
    assert browser.text("#summary") == (
        f"Call transfer on token USDC ({usdc[:6]}…{usdc[-5:]}): 250 USDC (250,000,000 base units) to "
        f"{short} (payroll <i>EU</i>, from your address book) on Ethereum mainnet (chain 1) from k"
    )
    _checked(browser, "books-token-units")

    browser.get(f"{server.url}/console/approvals/{payout}")
    assert browser.text("#summary").endswith(f"from k, calling {signature}")
    assert browser.text("#function") == f"{signature} (registered by an operator; decoded)"
    arguments = browser.text("#arguments")
    assert f"{payroll} (payroll <i>EU</i>, from your address book)" in arguments and "42" in arguments
    _checked(browser, "books-function-decoded")

    # Each change to the books is audited, with what it names.
    browser.click("#logout")
    browser.wait_url("/console/login")
    _sign_in(browser, server.installation.admin_token)
    browser.wait_url("/console")
    for kind, target in (
        ("books.address.put", payroll.lower()),
        ("books.token.put", f"1:{usdc.lower()}"),
        ("books.function.put", "contract"),
    ):
        browser.get(f"{server.url}/console/audit?q={kind}")
        events = browser.text("#events")
        assert kind in events and target in events, (kind, events)


def test_dangers_and_a_permit_in_token_units(
    server: Server, unique_name: str, browser: webdriver.Browser
) -> None:
    """The request page in Chromium for what the sentence must not hide: an EIP-7702 authorisation
    signed on its own (whose account becomes whose code, on any chain), a type-4 transaction carrying a
    delegation, an EIP-2612 permit of a token from the token book in its units, and an unlimited permit;
    each danger is named, labels come from the address book, and each page passes the axe scan."""
    delegate, usdc, spender = _address(), _address(), _address()
    desk = Desk(
        server,
        unique_name,
        rules=[
            {"id": "big", "kind": "value_cap", "effect": "require_approval", "max_value": "10"},
            {"id": "delegates", "kind": "delegate_allowlist", "effect": "require_approval",
             "delegates": [delegate]},
            {"id": "dapps", "kind": "typed_data_domain_allowlist", "effect": "require_approval",
             "domains": [{"name": "Known"}]},
        ],
    )  # fmt: skip
    admin = server.installation.admin_token
    status, _, me = server.call("GET", "/v1/whoami", token=desk.requester)
    assert status == 200, me
    status, _, grant = server.call(
        "POST",
        "/v1/grants",
        {"principal_id": me["principal_id"], "key_id": desk.key["id"], "operations": ["sign_authorization"]},
        admin,
    )
    assert status == 201, grant
    _put(server, "PUT", f"/v1/books/addresses/{delegate}", {"label": "batcher"})
    _put(server, "PUT", f"/v1/books/tokens/1/{usdc}", {"symbol": "USDC", "decimals": 6})

    status, _, body = server.call(
        "POST",
        f"/v1/keys/{desk.key['id']}/sign/authorization",
        {"chain_id": 0, "delegate": delegate, "nonce": 3},
        desk.requester,
    )
    assert status == 202, body
    authorisation = body["approval"]["id"]
    signed = Account.create().sign_authorization({"chainId": 1, "address": delegate, "nonce": 0})
    type4 = {
        **_tx(spender),
        "type": 4,
        "gas": 60000,
        "authorizationList": [
            {"chainId": 1, "address": delegate, "nonce": 0, "yParity": signed.y_parity,
             "r": hex(signed.r), "s": hex(signed.s)},
        ],
    }  # fmt: skip
    carried = _pending(desk, type4)

    def permit(value: int) -> str:
        typed = {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ],
            },
            "primaryType": "Permit",
            "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": usdc},
            "message": {
                "owner": desk.key["address"],
                "spender": spender,
                "value": value,
                "nonce": 0,
                "deadline": 2**40,
            },
        }
        status, _, body = server.call(
            "POST", f"/v1/keys/{desk.key['id']}/sign/typed-data", {"typed_data": typed}, desk.requester
        )
        assert status == 202, body
        return str(body["approval"]["id"])

    bounded, unlimited = permit(250_000_000), permit(2**256 - 1)
    key_address = f"{desk.key['address'][:6]}…{desk.key['address'][-5:]}"
    short = f"{delegate[:6]}…{delegate[-5:]}"
    spender_short = f"{spender[:6]}…{spender[-5:]}"

    browser.get(f"{server.url}/console/approvals/{authorisation}")
    _sign_in(browser, desk.approvers[0])
    browser.wait_url(f"/console/approvals/{authorisation}")
    assert browser.text("#summary") == (
        f"Delegate account {key_address} to the code of {short} (batcher, from your address book) on any "
        "chain (EIP-7702 authorisation, account nonce 3) with k"
    )
    dangers = browser.script(DANGERS)
    everywhere = " on every chain (chain id 0)"
    assert dangers == [
        f"Dangerous: EIP-7702 delegation: this account's code becomes {delegate}'s{everywhere}"
    ]
    _checked(browser, "danger-eip7702-authorisation")

    browser.get(f"{server.url}/console/approvals/{carried}")
    dangers = browser.script(DANGERS)
    assert dangers == [f"Dangerous: EIP-7702 delegation: this account's code becomes {delegate}'s"]
    _checked(browser, "danger-eip7702-transaction")

    browser.get(f"{server.url}/console/approvals/{bounded}")
    assert browser.text("#summary") == (
        f"Sign a permit letting {spender_short} spend 250 USDC (250,000,000 base units) of token "
        f"USDC ({usdc[:6]}…{usdc[-5:]}) with k"
    )
    assert browser.find_all("p.danger") == []
    assert "USD Coin" in browser.text("#typed") and "verifyingContract" in browser.text("#typed")
    _checked(browser, "permit-token-units")

    browser.get(f"{server.url}/console/approvals/{unlimited}")
    assert "spend an unlimited amount of token USDC" in browser.text("#summary")
    dangers = browser.script(DANGERS)
    assert dangers == [f"Dangerous: Unlimited permit: {spender} may move every token of this kind"]
    _checked(browser, "danger-unlimited-permit")
