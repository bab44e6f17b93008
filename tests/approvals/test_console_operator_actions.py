"""The console's operator checklist and its actions behind an impact review, and a framing attempt, in
a real headless Chromium against a running service: the checklist page shows each item's what, why and
action; revoking a grant, disabling and enabling a secret from its page, and deleting a secret first
show the dry-run impact report, a forged confirmation changes nothing, the real one acts and is
audited; a page on another origin that frames the console gets no console in its frame (CSP
``frame-ancestors 'none'`` and ``X-Frame-Options``), while a frame of its own origin renders (the
control that shows the check can see a rendered frame). Every page passes the axe-core scan at both
sizes and is photographed (tests/artifacts/console/)."""

from __future__ import annotations

import secrets as random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from signer.services.checklist import ITEMS
from tests.approvals import webdriver
from tests.approvals.test_api_approvals import Desk
from tests.approvals.test_console_browser import _checked, _shot, _sign_in
from tests.service_harness import Server


def _grant(server: Server, grant_id: str) -> dict[str, Any]:
    status, _, listed = server.call("GET", "/v1/grants", token=server.installation.admin_token)
    assert status == 200, listed
    items = listed["items"] if isinstance(listed, dict) else listed
    return next(g for g in items if g["id"] == grant_id)


def _seed(server: Server, unique_name: str) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    admin = server.installation.admin_token
    desk = Desk(server, unique_name)
    value = "canary-" + random.token_hex(16)
    folder = f"imp-{random.token_hex(4)}"
    admin_id = server.installation.admin["principal"]["id"]
    status, _, grant = server.call(
        "POST",
        "/v1/grants",
        {
            "principal_id": admin_id,
            "operations": ["create", "read_metadata", "list", "update", "delete"],
            "scope": folder,
        },
        admin,
    )
    assert status == 201, grant
    status, _, created = server.call(
        "POST",
        "/v1/secrets",
        {
            "folder": folder,
            "name": "deploy-token",
            "owner_group": desk.group,
            "category": "api_key",
            "consumers": ["deployer"],
            "fields": {"TOKEN": value},
        },
        admin,
    )
    assert status == 201, created
    return grant, created, folder, value


def test_checklist_and_actions_behind_impact(
    server: Server, unique_name: str, browser: webdriver.Browser
) -> None:
    admin = server.installation.admin_token
    grant, created, folder, value = _seed(server, unique_name)

    # The checklist: every item with what, why and what to do; with days=0 the new secret is unfetched.
    browser.get(f"{server.url}/console/login")
    _sign_in(browser, admin)
    browser.wait_url("/console")
    browser.get(f"{server.url}/console/checklist?days=0")
    never = browser.text("#item-secrets_never_fetched")
    assert "deploy-token" in never and folder in never
    assert browser.text("#item-secrets_never_fetched .why") and browser.text(
        "#item-secrets_never_fetched .action"
    )
    assert len(browser.find_all("section.item")) == len(ITEMS)  # every item, found or not
    _checked(browser, "checklist")

    # Disabling the secret from its page: the impact review first (a dry run), a reason, the
    # confirmation; the page then says it is disabled and why; enabling it the same way.
    page = f"/console/secrets/{created['id']}"
    browser.get(server.url + page)
    assert browser.text("#secret-state").startswith("Active")
    browser.click("#state-link")
    browser.wait_url(f"{page}/disable")
    assert "dry run" in browser.text("#subject-h") and "409 secret_disabled" in browser.text("#consequence")
    assert created["id"] in browser.text("#details") and "deployer" in browser.text("#details")
    assert value not in browser.source()
    _checked(browser, "impact-disable-secret")
    assert server.call("GET", f"/v1/secrets/{created['id']}", token=admin)[2]["state"] == "active"
    browser.script("document.querySelector('form.actions input[name=csrf]').value = 'forged'")
    browser.click("#confirm")
    browser.wait_for("#error")
    assert server.call("GET", f"/v1/secrets/{created['id']}", token=admin)[2]["state"] == "active"
    browser.get(f"{server.url}{page}/disable")
    browser.type("#reason", "leaked in a build log")
    browser.click("#confirm")
    browser.wait_url(page)
    state = browser.text("#secret-state")
    assert state.startswith("Disabled") and "leaked in a build log" in state
    _checked(browser, "secret-disabled")
    shown = server.call("GET", f"/v1/secrets/{created['id']}", token=admin)[2]
    assert (shown["state"], shown["state_reason"]) == ("disabled", "leaked in a build log")
    browser.get(f"{server.url}/console/audit?q=secret.disable")
    assert created["id"] in browser.text("#events")
    browser.get(server.url + page)
    browser.click("#state-link")
    browser.wait_url(f"{page}/enable")
    assert "read it again" in browser.text("#consequence")
    browser.click("#confirm")
    browser.wait_url(page)
    assert browser.text("#secret-state").startswith("Active")
    assert server.call("GET", f"/v1/secrets/{created['id']}", token=admin)[2]["state"] == "active"

    # Deleting a secret: the report names the secret and its declared consumer; then it is gone.
    browser.get(f"{server.url}/console/secrets")
    browser.click(f"a[href='/console/secrets/{created['id']}/delete']")
    browser.wait_url(f"/console/secrets/{created['id']}/delete")
    assert created["id"] in browser.text("#details") and "deployer" in browser.text("#details")
    assert value not in browser.source()
    _checked(browser, "impact-delete-secret")
    browser.click("#confirm")
    browser.wait_url("/console/secrets?deleted=1")
    status, _, _ = server.call("GET", f"/v1/secrets/{created['id']}", token=admin)
    assert status == 404
    browser.get(f"{server.url}/console/audit?q=secret.delete")
    assert created["id"] in browser.text("#events")

    # Disabling a principal: a relayer with a grant on the folder; its report, then the confirmation.
    status, _, made = server.call(
        "POST", "/v1/principals", {"name": f"{unique_name[:40]}-relayer", "role": "service"}, admin
    )
    assert status == 201, made
    relayer = made["principal"]["id"]
    status, _, relayer_grant = server.call(
        "POST", "/v1/grants", {"principal_id": relayer, "operations": ["list"], "scope": folder}, admin
    )
    assert status == 201, relayer_grant
    browser.get(f"{server.url}/console/grants")
    browser.click(f"a[href='/console/principals/{relayer}/disable']")
    browser.wait_url(f"/console/principals/{relayer}/disable")
    assert "dry run" in browser.text("#subject-h") and relayer in browser.text("#details")
    _checked(browser, "impact-disable-principal")
    browser.click("#confirm")
    browser.wait_url("/console/grants?disabled=1")
    status, _, principals = server.call("GET", "/v1/principals", token=admin)
    assert status == 200, principals
    assert next(p for p in principals["items"] if p["id"] == relayer)["disabled"] is True
    browser.get(f"{server.url}/console/audit?q=principal")
    assert relayer in browser.text("#events")

    # Revoking a grant: the impact review first (a dry run), then the confirmation.
    browser.get(f"{server.url}/console/grants")
    browser.click(f"a[href='/console/grants/{grant['id']}/revoke']")
    browser.wait_url(f"/console/grants/{grant['id']}/revoke")
    assert "dry run" in browser.text("#subject-h")
    assert "cannot be undone" in browser.text("#consequence")
    assert browser.text("#subject") and grant["id"] in browser.text("#details")
    assert _grant(server, grant["id"])["revoked"] is False  # the review changed nothing
    _checked(browser, "impact-revoke")
    browser.script("document.querySelector('form.actions input[name=csrf]').value = 'forged'")
    browser.click("#confirm")
    browser.wait_for("#error")
    assert "did not come from this console" in browser.text("#error")
    assert _grant(server, grant["id"])["revoked"] is False
    browser.get(f"{server.url}/console/grants/{grant['id']}/revoke")
    browser.click("#confirm")
    browser.wait_url(f"/console/grants?revoked={grant['id']}")
    assert _grant(server, grant["id"])["revoked"] is True
    browser.get(f"{server.url}/console/audit?q=grant.revoke")
    assert grant["id"] in browser.text("#events")


class _Framer(BaseHTTPRequestHandler):
    console = ""

    def do_GET(self) -> None:
        if self.path == "/inner":
            body = b"<!doctype html><title>inner</title><p id='inner'>inner-ok</p>"
        else:
            body = (
                "<!doctype html><title>framer</title>"
                f"<iframe id='console' title='console' src='{self.console}/console/login'></iframe>"
                "<iframe id='own' title='own' src='/inner'></iframe>"
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def framer(server: Server) -> Iterator[str]:
    """A page on another origin (another port) that frames the console's sign-in page."""
    handler = type("Framer", (_Framer,), {"console": server.url})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _frame_text(browser: webdriver.Browser, index: int) -> tuple[str, str, bool]:
    """Inside frame ``index`` once its document has loaded: its URL, its text, whether the console's
    sign-in field is there."""
    browser.frame(index)
    try:
        deadline = time.monotonic() + 15
        while browser.script("return document.readyState") != "complete":
            assert time.monotonic() < deadline, "the frame did not load"
            time.sleep(0.05)  # polling the browser with a hard deadline
        return (
            str(browser.script("return document.location.href")),
            str(browser.script("return document.body ? document.body.innerText : ''")),
            bool(browser.script("return document.querySelector('#token') !== null")),
        )
    finally:
        browser.frame(None)


def test_framing_on_another_origin_is_refused(
    server: Server, framer: str, browser: webdriver.Browser
) -> None:
    browser.get(framer + "/")
    deadline = time.monotonic() + 15
    while browser.script("return document.readyState") != "complete":
        assert time.monotonic() < deadline, "the framing page did not load"
        time.sleep(0.05)  # polling the browser with a hard deadline
    # The control: a frame the browser may render shows its page through this same check.
    own_url, own_text, _ = _frame_text(browser, 1)
    assert own_url.endswith("/inner") and "inner-ok" in own_text
    # The console's frame: refused by the browser, so no console page and no sign-in field in it.
    url, text, has_token_field = _frame_text(browser, 0)
    assert not has_token_field
    assert "Sign in" not in text and "/console/login" not in url, (url, text)
    _shot(browser, "framing-refused")
    # The same page opened at the top level does render (the refusal is about framing alone).
    browser.get(f"{server.url}/console/login")
    assert browser.find_all("#token")
