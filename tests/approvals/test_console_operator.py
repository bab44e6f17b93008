"""The console's operator and auditor pages in a real headless Chromium against a running service: an
admin signs in and reads keys (with token attributes, grants and attached policies), secrets (metadata,
versions, consumers, never a value), grants, groups, policies with versions and a shadow report, and the
audit log with search and its verification status; an auditor reads the same; an approver's session is
refused them. Every page passes the axe-core scan at both sizes and is photographed
(tests/artifacts/console/)."""

from __future__ import annotations

import secrets as random
from typing import Any

from tests.approvals import webdriver
from tests.approvals.test_api_approvals import Desk
from tests.approvals.test_console_browser import _checked, _sign_in
from tests.service_harness import Server, attach_policy


def _grant(server: Server, grant_id: str) -> dict[str, Any]:
    status, _, listed = server.call("GET", "/v1/grants", token=server.installation.admin_token)
    assert status == 200, listed
    items = listed["items"] if isinstance(listed, dict) else listed
    return next(g for g in items if g["id"] == grant_id)


def test_operator_pages(server: Server, unique_name: str, browser: webdriver.Browser) -> None:
    admin = server.installation.admin_token
    desk = Desk(server, unique_name)
    value = "canary-" + random.token_hex(16)
    folder = f"ops-{random.token_hex(4)}"
    admin_id = server.installation.admin["principal"]["id"]
    operations = ["create", "read_metadata", "list", "read_value"]
    status, _, grant = server.call(
        "POST", "/v1/grants", {"principal_id": admin_id, "operations": operations, "scope": folder}, admin
    )
    assert status == 201, grant
    status, _, created = server.call(
        "POST",
        "/v1/secrets",
        {
            "folder": folder,
            "name": "stripe",
            "owner_group": desk.group,
            "category": "api_key",
            "consumers": ["billing-api"],
            "fields": {"STRIPE_SECRET": value},
        },
        admin,
    )
    assert status == 201, created
    # One fetch, so the pages have a last fetch to show (by whom and when; never the value).
    status, _, fetched = server.call(
        "POST", f"/v1/secrets/{created['id']}/fetch", {"workload": "billing-api"}, admin
    )
    assert status == 200, fetched
    status, _, shown = server.call("GET", f"/v1/secrets/{created['id']}", token=admin)
    assert status == 200 and shown["last_fetched_at"], shown
    shadow = attach_policy(
        server,
        {
            "id": f"s-{unique_name[:40]}",
            "rules": [{"id": "none", "kind": "value_cap", "effect": "deny", "max_value": "0"}],
        },
        key_id=desk.key["id"],
        mode="shadow",
    )

    browser.get(f"{server.url}/console/keys")
    _sign_in(browser, admin)
    browser.wait_url("/console/keys")
    assert desk.key["id"] in browser.text("#keys") and desk.key["address"] in browser.text("#keys")
    _checked(browser, "keys")

    browser.click(f"a[href='/console/keys/{desk.key['id']}']")
    browser.wait_url(f"/console/keys/{desk.key['id']}")
    assert "sign_transaction" in browser.text("#grants")
    assert f"p-{unique_name[:50]}" in browser.text("#attachments") and "shadow" in browser.text(
        "#attachments"
    )
    assert browser.text("#attributes")  # read from the token (or the registry), never a private value
    _checked(browser, "key")

    browser.get(f"{server.url}/console/secrets")
    assert f"{folder}/stripe" in browser.text("#secrets") and "billing-api" in browser.text("#secrets")
    assert shown["last_fetched_at"] in browser.text("#secrets")  # the list's "Last fetched" column
    _checked(browser, "secrets")
    browser.click(f"a[href='/console/secrets/{created['id']}']")
    browser.wait_url(f"/console/secrets/{created['id']}")
    assert "STRIPE_SECRET" in browser.text("#versions")
    metadata = browser.text("#secret")
    assert shown["last_fetched_at"] in metadata and admin_id in metadata  # when, and by whom
    assert browser.text("#access")
    assert value not in browser.source()
    _checked(browser, "secret")

    browser.get(f"{server.url}/console/grants")
    assert desk.key["id"] in browser.text("#grants")
    _checked(browser, "grants")

    # Revoking a grant: a confirmation page first; a forged confirmation changes nothing; the real one
    # revokes it and is audited.
    browser.click(f"a[href='/console/grants/{grant['id']}/revoke']")
    browser.wait_url(f"/console/grants/{grant['id']}/revoke")
    assert "cannot be undone" in browser.text("#consequence") and grant["id"] in browser.text("#details")
    _checked(browser, "confirm-revoke")
    browser.script("document.querySelector('form.actions input[name=csrf]').value = 'forged'")
    browser.click("#confirm")
    browser.wait_for("#error")
    assert "did not come from this console" in browser.text("#error")
    assert _grant(server, grant["id"])["revoked"] is False
    browser.get(f"{server.url}/console/grants/{grant['id']}/revoke")
    browser.click("#confirm")
    browser.wait_url(f"/console/grants?revoked={grant['id']}")
    assert browser.text("#intro") == f"Grant {grant['id']} is revoked."
    assert _grant(server, grant["id"])["revoked"] is True
    browser.get(f"{server.url}/console/groups")
    assert desk.group in browser.text("#groups")
    _checked(browser, "groups")

    browser.get(f"{server.url}/console/policies")
    assert shadow["id"] in browser.text("#attachments")
    _checked(browser, "policies")
    browser.click(f"a[href='/console/attachments/{shadow['id']}/shadow']")
    browser.wait_url(f"/console/attachments/{shadow['id']}/shadow")
    assert browser.text("#report")
    _checked(browser, "shadow-report")
    browser.get(f"{server.url}/console/policies/s-{unique_name[:40]}")
    assert "value_cap" in browser.text("#versions")
    _checked(browser, "policy")

    browser.get(f"{server.url}/console/audit")
    # The verification status is the newest signed checkpoint's, as the API gives it.
    status, _, checkpoint = server.call("GET", "/v1/audit/checkpoint", token=admin)
    intro = browser.text("#intro")
    if status == 200:
        assert f"Verification: the latest signed checkpoint covers events 1 to {checkpoint['size']}" in intro
    else:
        assert status == 404 and "Verification: no checkpoint has been signed yet" in intro
    assert "console.sign_in" in browser.text("#events")
    _checked(browser, "audit")
    browser.type("#q", "secret.create")
    browser.click("form.search button")
    browser.wait_url("/console/audit?q=secret.create")
    assert created["id"] in browser.text("#events")
    browser.get(f"{server.url}/console/audit?q=grant.revoke")
    assert grant["id"] in browser.text("#events") and "admin (admin)" in browser.text("#events")
    browser.get(f"{server.url}/console/audit?q=policy.attach")
    kinds = browser.script(
        "return Array.from(document.querySelectorAll('#events tbody tr td:nth-child(3)'))"
        ".map(td => td.textContent)"
    )
    assert kinds and all("policy.attach" in k for k in kinds), kinds
    assert value not in browser.source()

    # An approver's session: the same pages answer with the API's refusal, and no operator links.
    browser.click("#logout")
    browser.wait_url("/console/login")
    _sign_in(browser, desk.approvers[0])
    browser.wait_url("/console")
    assert browser.script("return document.querySelector(\"a[href='/console/keys']\")") is None
    browser.get(f"{server.url}/console/grants")
    assert browser.find_all("#grants") == [] and browser.text("#error")
