"""The approver's page with the operator's books, in a real headless Chromium against a running
service: an address book label beside the destination ("…, from your address book"), an ERC-20 amount
in the token's units ("250 USDC (250,000,000 base units)"), a registered function named with its
arguments decoded, and a label holding markup shown as text (escaped, never markup). Each page passes
the axe-core scan at both sizes and is photographed (tests/artifacts/console/)."""

from __future__ import annotations

import secrets
from typing import Any

from eth_abi import encode
from eth_utils import to_checksum_address

from tests.approvals import webdriver
from tests.approvals.test_api_approvals import Desk
from tests.approvals.test_console_browser import _checked, _sign_in
from tests.service_harness import Server

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
