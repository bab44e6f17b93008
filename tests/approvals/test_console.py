"""The approvers' web console, end to end in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``scripts/setup --test``): sign in with an approver token, see the
pending request decoded (hostile strings shown as text, never run), approve, see the history. Plus
the protections checked at the HTTP level: frame-busting headers and CSP, cookie attributes, CSRF."""

from __future__ import annotations

import http.client as httpclient
import re
import urllib.parse

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from tests.approvals import webdriver
from tests.approvals.test_api_approvals import Desk
from tests.approvals.test_console_browser import ARTIFACTS
from tests.service_harness import Server, http

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"
TYPED = {
    "types": {
        "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}],
        "Order": [{"name": "note", "type": "string"}, {"name": "amount", "type": "uint256"}],
    },
    "primaryType": "Order",
    "domain": {"name": "Evil " + HOSTILE, "chainId": 1},
    "message": {"note": HOSTILE, "amount": 42},
}


@pytest.fixture
def typed_desk(server: Server, unique_name: str) -> Desk:
    rule = {
        "id": "unknown-dapps",
        "kind": "typed_data_domain_allowlist",
        "effect": "require_approval",
        "domains": [{"name": "Known"}],
    }
    return Desk(server, unique_name, rules=[rule])


def _pending(desk: Desk, server: Server) -> tuple[str, str]:
    status, _, body = server.call(
        "POST", f"/v1/keys/{desk.key['id']}/sign/typed-data", {"typed_data": TYPED}, desk.requester
    )
    assert status == 202, body
    return body["approval"]["id"], body["payload_digest"]


def test_console_in_chromium(typed_desk: Desk, server: Server, browser: webdriver.Browser) -> None:
    approval_id, digest = _pending(typed_desk, server)

    browser.get(server.url + "/console")
    assert browser.url.endswith("/console/login")
    browser.type("#token", typed_desk.approvers[0])
    browser.click("#signin")
    browser.wait_url("/console")
    assert approval_id in browser.text("#requests")
    cookie = next(c for c in browser.cookies() if c["name"] == "signer_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

    browser.click(f"a[href='/console/approvals/{approval_id}']")
    browser.wait_url(f"/console/approvals/{approval_id}")
    # The hostile strings are on the page as text in the EIP-712 table; nothing became markup or ran.
    typed = browser.text("#typed")
    assert typed.count(HOSTILE) == 2 and "chainId 1" in typed
    assert browser.text("#summary") == (
        f'Sign typed data Order for an application calling itself "Evil {HOSTILE}" on Ethereum mainnet '
        "(chain 1) with k"
    )
    # The only script is the console's own; no element came from the hostile strings.
    assert browser.script("return document.querySelectorAll('img').length") == 0
    assert browser.script("return Array.from(document.scripts).map(s => s.src)") == [
        server.url + "/console/static/console.js"
    ]
    assert browser.text("#digest") == digest
    print("screenshot:", browser.screenshot(ARTIFACTS / "typed-data.png"))
    assert typed_desk.approvers[0] not in browser.source()

    browser.click("#approve")
    browser.wait_url(f"/console/approvals/{approval_id}?voted=approve")
    assert "approve" in browser.text("#votes")
    assert browser.text("#state") == "pending"
    assert "approve" in browser.text("#votes")

    status, body = typed_desk.vote(1, approval_id, digest)
    assert status == 200 and body["state"] == "signed", body
    browser.get(server.url + "/console?show=decided")
    assert approval_id in browser.text("#requests") and "signed" in browser.text("#requests")

    status, _, result = server.call("GET", f"/v1/approvals/{approval_id}/result", token=typed_desk.requester)
    assert status == 200, result
    signature = bytes.fromhex(result["result"]["signature"][2:])
    signable = encode_typed_data(full_message=TYPED)
    assert Account.recover_message(signable, signature=signature) == typed_desk.key["address"]


def test_console_headers_cookies_and_csrf(typed_desk: Desk, server: Server) -> None:
    approval_id, digest = _pending(typed_desk, server)
    status, headers, page = http("GET", server.url + "/console/login")
    assert status == 200
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    nonce = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    login_cookie = headers["Set-Cookie"].split(";")[0]

    def form(path: str, fields: dict[str, str], cookie: str) -> tuple[int, dict[str, str], str]:
        raw = urllib.parse.urlencode(fields).encode()
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
        return http("POST", server.url + path, raw=raw, headers=hdrs)

    # Without the login cookie's nonce the sign-in form is refused (login CSRF).
    assert form("/console/login", {"csrf": nonce, "token": typed_desk.approvers[0]}, "")[0] == 403
    # A service token is not an approver token.
    assert form("/console/login", {"csrf": nonce, "token": typed_desk.requester}, login_cookie)[0] == 401
    connection = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = urllib.parse.urlencode({"csrf": nonce, "token": typed_desk.approvers[0]})
    connection.request(
        "POST",
        "/console/login",
        body,
        {"Content-Type": "application/x-www-form-urlencoded", "Cookie": login_cookie},
    )
    response = connection.getresponse()
    assert response.status == 303
    set_cookie = [
        v for k, v in response.getheaders() if k == "Set-Cookie" and v.startswith("signer_console=")
    ]
    assert set_cookie and "HttpOnly" in set_cookie[0] and "SameSite=Strict" in set_cookie[0]
    session = set_cookie[0].split(";")[0]
    connection.close()

    # A forged form (right cookie, no or wrong CSRF token) records nothing.
    for token in ("", "0" * 64):
        status, _, page = form(
            f"/console/approvals/{approval_id}/approve", {"csrf": token, "digest": digest}, session
        )
        assert status == 403
    status, _, shown = server.call("GET", f"/v1/approvals/{approval_id}", token=typed_desk.approvers[1])
    assert shown["votes"] == []
    # With the session's CSRF token the same form counts.
    _, _, detail = http("GET", server.url + f"/console/approvals/{approval_id}", headers={"Cookie": session})
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', detail).group(1)
    status, headers, _ = form(
        f"/console/approvals/{approval_id}/approve", {"csrf": csrf, "digest": digest}, session
    )
    assert status in (200, 303)
    status, _, shown = server.call("GET", f"/v1/approvals/{approval_id}", token=typed_desk.approvers[1])
    assert [v["decision"] for v in shown["votes"]] == ["approve"]
