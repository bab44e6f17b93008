"""The approvers' console as an approver uses it, in a real headless Chromium against a running service:
a notification's link opens the request through sign-in; the page says in one sentence what will happen;
a vote signed in the page (Ed25519 by WebCrypto, secp256k1 by an injected wallet's personal_sign) is
verified by the service and kept with its signature; a wrong key or a forged form records nothing; the
filters; an axe-core scan (tests/js/node_modules/axe-core) finds no serious or critical violation at
1,200 px nor on a phone-sized window; screenshots go to tests/artifacts/console/ for a reviewer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.approvals import webdriver
from tests.approvals.test_api_approvals import Desk
from tests.service_harness import Server

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
TX = {
    "type": 2,
    "chainId": 1,
    "nonce": 0,
    "gas": 21000,
    "to": TO,
    "value": "1500000000000000000",
    "maxFeePerGas": 30_000_000_000,
    "maxPriorityFeePerGas": 1_000_000_000,
}


def _shot(browser: webdriver.Browser, name: str) -> None:
    path = browser.screenshot(ARTIFACTS / f"{name}.png")
    print(f"screenshot: {path}")


def _axe(browser: webdriver.Browser) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations on the current page (the source injected by WebDriver:
    the page's CSP allows no script but its own, and WebDriver's evaluation is not the page's)."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run scripts/setup --test (npm ci in tests/js)")
    browser.script(AXE.read_text() + "\nreturn true;")
    found = browser.script_async(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then("
        "  r => done(JSON.stringify({passes: r.passes.length, violations: r.violations.map(v => ("
        "    {id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))})),"
        "  e => done(JSON.stringify("
        "    {passes: 0, violations: [{id: 'axe', impact: 'critical', help: String(e)}]})));"
    )
    report = json.loads(found)
    assert report["passes"] > 10, report  # the scan ran its rules on this page
    return [v for v in report["violations"] if v["impact"] in ("serious", "critical")]


def _checked(browser: webdriver.Browser, name: str) -> None:
    """Both window sizes: no serious violation, and a screenshot of each."""
    for width, height, label in ((1200, 900, "desktop"), (390, 844, "phone")):
        browser.window_size(width, height)
        assert _axe(browser) == [], f"{name} at {width}px"
        # Nothing wider than the window: the page reads without sideways scrolling.
        assert browser.script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        _shot(browser, f"{name}-{label}")
    browser.window_size(1200, 900)


def _sign_in(browser: webdriver.Browser, token: str) -> None:
    assert "/console/login" in browser.url
    browser.type("#token", token)
    browser.click("#signin")


def _register(server: Server, token: str, scheme: str, public_key: str) -> None:
    status, _, body = server.call(
        "PUT", "/v1/approvers/me/key", {"scheme": scheme, "public_key": public_key}, token
    )
    assert status == 200, body


def _pending(desk: Desk) -> tuple[str, str]:
    status, body = desk.sign(TX)
    assert status == 202, body
    return body["approval"]["id"], body["payload_digest"]


def _votes(server: Server, desk: Desk, approval_id: str) -> list[dict[str, Any]]:
    status, _, shown = server.call("GET", f"/v1/approvals/{approval_id}", token=desk.approvers[2])
    assert status == 200, shown
    return list(shown["votes"])


def test_request_page_and_a_vote_signed_with_webcrypto(
    server: Server, unique_name: str, browser: webdriver.Browser
) -> None:
    desk = Desk(server, unique_name)
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    _register(server, desk.approvers[0], "ed25519", public)
    approval_id, digest = _pending(desk)
    other_id, other_digest = _pending(desk)

    # The link a notification carries opens the request once signed in.
    browser.get(f"{server.url}/console/approvals/{approval_id}")
    _sign_in(browser, desk.approvers[0])
    browser.wait_url(f"/console/approvals/{approval_id}")
    assert browser.text("#summary") == (
        "Send 1.5 ETH (1,500,000,000,000,000,000 wei) to 0x5aAe…BeAed on Ethereum mainnet (chain 1) from k"
    )
    assert browser.text("#fee") == "0.00063 ETH (630,000,000,000,000 wei) at most"
    assert "exceeds the per-transaction cap" in browser.text("#reasons") and "rule big" in browser.text(
        "#reasons"
    )
    assert browser.text("#requested-by") == unique_name
    assert browser.text("#needs") == f"0 of 2 approvals from {desk.group}"
    assert "min left" in browser.text("#time-left")
    # Everyone else in the group can still vote; the signed-in approver too, until they do.
    assert browser.text("#still-to-vote") == (
        f"{desk.group}: {unique_name[:50]}-a0, {unique_name[:50]}-a1, {unique_name[:50]}-a2"
    )
    assert browser.text("#digest") == digest
    assert browser.script("return document.getElementById('raw').open") is False
    _checked(browser, "request")

    # A forged form (the CSRF value changed in the page) is refused and records nothing.
    browser.script("document.querySelector('form.vote[data-decision=reject] input[name=csrf]').value = 'x'")
    browser.script("document.getElementById('sign-vote').checked = false")
    browser.click("#reject")
    browser.wait_url(f"/console/approvals/{approval_id}/reject")
    assert "did not come from this console" in browser.text("#error")
    assert _votes(server, desk, approval_id) == []

    # The wrong private key: the page signs, the service refuses the signature, nothing is stored.
    browser.get(f"{server.url}/console/approvals/{other_id}")
    wrong = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    browser.type("#ed25519-seed", wrong)
    browser.click("#approve")
    browser.wait_url(f"/console/approvals/{other_id}/approve")
    assert browser.text("#error").startswith("approval_signature_invalid")
    assert _votes(server, desk, other_id) == []
    # Not a key at all: the page says so and sends nothing.
    browser.get(f"{server.url}/console/approvals/{other_id}")
    browser.type("#ed25519-seed", "not hex")
    browser.click("#approve")
    assert "64 hex digits" in browser.text("#sign-status")
    assert browser.url.endswith(f"/console/approvals/{other_id}")

    # The right key: signed in the page with WebCrypto, verified by the service, kept with the vote.
    browser.get(f"{server.url}/console/approvals/{approval_id}")
    browser.type("#ed25519-seed", seed)
    browser.click("#approve")
    browser.wait_url(f"/console/approvals/{approval_id}?voted=approve")
    assert "signed, ed25519" in browser.text("#votes")
    [vote] = _votes(server, desk, approval_id)
    assert vote["signature_scheme"] == "ed25519" and vote["counted"]
    message = f"signer-approval:v1:{approval_id}:approve:{digest}".encode()
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(
        bytes.fromhex(vote["signature"]), message
    )
    assert seed not in browser.source()
    assert browser.text("#no-vote") == "You voted: approve."
    _shot(browser, "request-voted")

    # The filters: voted on -> no longer "to vote"; still pending; decided once the quorum signs it.
    browser.get(f"{server.url}/console")
    assert approval_id not in browser.text("#requests") and other_id in browser.text("#requests")
    browser.get(f"{server.url}/console?show=pending")
    assert approval_id in browser.text("#requests")
    status, body = desk.vote(1, approval_id, digest)
    assert status == 200 and body["state"] == "signed", body
    status, body = desk.vote(1, other_id, other_digest, "reject")
    assert status == 200 and body["state"] == "rejected", body
    browser.get(f"{server.url}/console?show=decided")
    decided = browser.text("#requests")
    assert approval_id in decided and other_id in decided and "signed" in decided and "rejected" in decided
    _checked(browser, "history")
    browser.get(f"{server.url}/console")
    assert browser.text("#empty") == "Nothing is waiting for your vote."


def test_a_vote_signed_by_an_injected_wallet(
    server: Server, unique_name: str, browser: webdriver.Browser
) -> None:
    """secp256k1 through ``window.ethereum``: the page asks the wallet for personal_sign over the same
    bytes the CLI signs; the wallet here is a page script holding a test key (eth_account made the
    signature the wallet returns, so a page that asked for other bytes would be refused)."""
    desk = Desk(server, unique_name)
    account = Account.create()
    public = account._key_obj.public_key.to_bytes().hex()
    _register(server, desk.approvers[1], "secp256k1", "04" + public)
    approval_id, digest = _pending(desk)
    expected = f"signer-approval:v1:{approval_id}:reject:{digest}"
    signature = Account.sign_message(encode_defunct(text=expected), account.key).signature.hex()

    browser.get(f"{server.url}/console/login")
    _checked(browser, "login")
    _sign_in(browser, desk.approvers[1])
    browser.wait_url("/console")
    browser.click(f"a[href='/console/approvals/{approval_id}']")
    browser.wait_url(f"/console/approvals/{approval_id}")
    browser.script(
        "window.asked = [];"
        "window.ethereum = {request: async (call) => {"
        "  window.asked.push(call);"
        f"  if (call.method === 'eth_requestAccounts') return ['{account.address}'];"
        "  const text = new TextDecoder().decode(new Uint8Array(call.params[0].slice(2).match(/../g)"
        "    .map(h => parseInt(h, 16))));"
        f"  if (text !== '{expected}') throw new Error('asked to sign other bytes: ' + text);"
        f"  return '0x{signature.removeprefix('0x')}';"
        "}};"
    )
    browser.click("#reject")
    browser.wait_url(f"/console/approvals/{approval_id}?voted=reject")
    assert browser.text("#state") == "rejected"
    [vote] = _votes(server, desk, approval_id)
    assert vote["signature_scheme"] == "secp256k1" and vote["decision"] == "reject"
    assert vote["signature"] == signature.removeprefix("0x").lower()


def _tab_to(browser: webdriver.Browser, element_id: str, most: int = 40) -> list[dict[str, Any]]:
    """Tab until ``element_id`` has the focus; every stop on the way is visibly focused and named."""
    stops = []
    for _ in range(most):
        browser.keys(webdriver.TAB)
        stop = browser.focused()
        stops.append(stop)
        assert stop["outline"] != "none", f"no visible focus on {stop}"
        assert stop["text"] or stop["label"], f"a focus stop without a name: {stop}"
        if stop["id"] == element_id:
            return stops
    raise AssertionError(f"#{element_id} never took the focus: {stops}")


def test_keyboard_alone_signs_in_and_casts_a_signed_vote(
    server: Server, unique_name: str, browser: webdriver.Browser
) -> None:
    """No mouse: the first Tab reaches the skip link, which moves the focus to the page's content;
    every focus stop is outlined and named; the sign-in form submits with Enter; the vote's key field
    and the Approve button are reached with Tab and the signed vote goes with Enter."""
    desk = Desk(server, unique_name)
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    _register(server, desk.approvers[0], "ed25519", public)
    approval_id, _ = _pending(desk)

    browser.get(f"{server.url}/console/approvals/{approval_id}")
    assert "/console/login" in browser.url
    stops = _tab_to(browser, "token")
    assert stops[0]["text"] == "Skip to content" and stops[-1]["label"] == "Approver access token"
    browser.keys(desk.approvers[0], webdriver.ENTER)
    browser.wait_url(f"/console/approvals/{approval_id}")

    browser.keys(webdriver.TAB)
    assert browser.focused()["text"] == "Skip to content"
    browser.keys(webdriver.ENTER)
    assert browser.focused()["id"] == "main"  # past the navigation, at the request itself
    stops = _tab_to(browser, "ed25519-seed")
    assert [s["id"] for s in stops] == ["sign-vote", "ed25519-seed"]  # nothing before the decision
    browser.keys(seed, webdriver.TAB)
    assert browser.focused()["id"] == "approve"
    browser.keys(webdriver.ENTER)
    browser.wait_url(f"/console/approvals/{approval_id}?voted=approve")
    [vote] = _votes(server, desk, approval_id)
    assert (vote["decision"], vote["signature_scheme"], vote["counted"]) == ("approve", "ed25519", True)
    assert seed not in browser.source()
