"""Rotating a secret from the console, and the approvers' list in the books' words, in a real headless
Chromium against a running service (real SoftHSM token, SQLite file):

- a provided secret: the secret page's "Rotate…" opens the impact review (who gets the new value, who
  fetched it, the declared and the pinned consumers, the overlap window), a forged confirmation changes
  nothing, the real one makes version 2 and shows it with the end of version 1's overlap; the value
  fetched through the API afterwards is the one typed, and it is in no console response (the pages
  visited, a forged post's refusal, a stale form's refusal), no audit event and no log line; the
  rotation's ``secret.rotate`` event carries the impact report like the API's;
- a generated secret: a form opened before a rotation made through the API is refused with a clear
  message (check-and-set on the revision the form was read at), never a lost update; a staged rotation
  leaves the current version alone until it is promoted from the result page;
- the approvers' list: each row says the request page's sentence with the books applied (an address
  book label, a token's units) and marks an unlimited approval as dangerous;
- the list reads the books in the same few statements whatever the number of rows (no N+1).

Each new page passes the axe-core scan at 1,200 and 390 px and is photographed (tests/artifacts/console/).
"""

from __future__ import annotations

import json
import secrets as random
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from eth_abi import encode
from eth_utils import to_checksum_address
from sqlalchemy import event

from signer.eth.functions import selector_of
from signer.http.console_rotation import duration, effects
from signer.services.books import BookService
from signer.store import AddressEntry, FunctionEntry, Store, TokenEntry
from tests.approvals import webdriver
from tests.approvals.test_api_approvals import Desk
from tests.approvals.test_console_browser import _checked, _shot, _sign_in
from tests.service_harness import Server, http


def _call(server: Server, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, _, answer = server.call(method, path, body, server.installation.admin_token)
    assert status == expect, (path, answer)
    return answer


def _seed(server: Server) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """A folder the admin holds every secret operation on, a provided secret fetched once by
    ``deployer`` and pinned for ``billing``, and a generated one."""
    folder = f"rot-{random.token_hex(4)}"
    admin_id = server.installation.admin["principal"]["id"]
    operations = ["create", "read_metadata", "list", "update", "read_value"]
    _call(
        server,
        "POST",
        "/v1/grants",
        {"principal_id": admin_id, "operations": operations, "scope": folder},
        201,
    )
    first = "first-" + random.token_hex(16)
    provided = _call(
        server,
        "POST",
        "/v1/secrets",
        {
            "folder": folder,
            "name": "deploy-token",
            "owner_principal": admin_id,
            "category": "api_key",
            "consumers": ["deployer", "billing"],
            "fields": {"TOKEN": first, "user": "svc-" + random.token_hex(4)},
        },
        201,
    )
    _call(server, "PATCH", f"/v1/secrets/{provided['id']}", {"pins": {"billing": 1}, "overlap_seconds": 3600})
    fetched = _call(server, "POST", f"/v1/secrets/{provided['id']}/fetch", {"workload": "deployer"})
    assert fetched["values"]["TOKEN"] == first
    generated = _call(
        server,
        "POST",
        "/v1/secrets",
        {
            "folder": folder,
            "name": "db-password",
            "owner_principal": admin_id,
            "category": "database",
            "generate": {"kind": "hex", "bytes": 16},
        },
        201,
    )
    return folder, provided, generated, first


def _console_post(server: Server, cookie: str, path: str, form: dict[str, str]) -> tuple[int, str]:
    """A form posted with the browser's session cookie, outside the browser: the raw response."""
    status, _, body = http(
        "POST",
        server.url + path,
        raw=urllib.parse.urlencode(form).encode(),
        headers={"Cookie": f"signer_console={cookie}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    return status, body if isinstance(body, str) else json.dumps(body)


def _events(server: Server, kind: str, secret_id: str) -> list[dict[str, Any]]:
    status, _, text = server.call(
        "GET", "/v1/audit/events?limit=10000", token=server.installation.admin_token
    )
    assert status == 200
    found = []
    for line in text.splitlines():
        record = json.loads(line)
        body = json.loads(record["event"])
        if record.get("kind") == kind and (body.get("resource") or {}).get("id") == secret_id:
            found.append(body)
    return found


def test_rotating_a_provided_secret(server: Server, browser: webdriver.Browser) -> None:
    folder, provided, _, first = _seed(server)
    secret_id = provided["id"]
    new_token, new_user = "rotated-" + random.token_hex(16), "user-" + random.token_hex(12)
    pages: list[str] = []

    browser.get(f"{server.url}/console/login")
    _sign_in(browser, server.installation.admin_token)
    browser.wait_url("/console")
    browser.get(f"{server.url}/console/secrets/{secret_id}")
    browser.click("#rotate-link")
    browser.wait_url(f"/console/secrets/{secret_id}/rotate")
    effects = browser.text("#effects")
    assert "Version 2 replaces version 1" in effects
    assert "deployer as" in effects and ": 1 fetch, last at" in effects  # who fetched it, as whom, how often
    assert "billing (pinned to version 1)" in effects and "deployer (follows the current version)" in effects
    assert "billing stays on version 1 until its pin changes" in effects
    assert "1 h: version 1 stays readable that long" in effects
    assert "audited with this report" in browser.text("#consequence")
    assert browser.find_all("input[name='value.TOKEN'][type=password][autocomplete=off]")
    assert browser.find_all("input[name='value.user'][type=password]")
    assert first not in browser.source()
    _checked(browser, "rotate-provided")
    browser.script("document.querySelector('#rotate').scrollIntoView()")
    _shot(browser, "rotate-provided-form")
    pages.append(browser.source())

    # A forged confirmation (CSRF token replaced) writes nothing.
    browser.type("input[name='value.TOKEN']", new_token)
    browser.type("input[name='value.user']", new_user)
    browser.script("document.querySelector('#rotate input[name=csrf]').value = 'forged'")
    browser.click("#confirm")
    browser.wait_for("#error")
    assert "did not come from this console" in browser.text("#error")
    pages.append(browser.source())
    assert _call(server, "GET", f"/v1/secrets/{secret_id}")["current_version"] == 1

    # The real one: a redirect to the result, version 2 current, version 1 readable for the overlap.
    browser.get(f"{server.url}/console/secrets/{secret_id}/rotate")
    revision = browser.script("return document.querySelector('#rotate input[name=revision]').value")
    browser.type("input[name='value.TOKEN']", new_token)
    browser.type("input[name='value.user']", new_user)
    browser.click("#confirm")
    browser.wait_url(f"/console/secrets/{secret_id}/rotated?version=2")
    assert "Version 2 is current" in browser.text("#outcome")
    facts = browser.text("#facts")
    assert "Overlap end (version 1)" in facts and "stays readable until then" in facts
    assert "Pinned: billing" in facts
    _checked(browser, "rotated-provided")
    pages.append(browser.source())

    # The value typed is the one fetched; version 1 still reads (the overlap), by number.
    fetched = _call(server, "POST", f"/v1/secrets/{secret_id}/fetch", {"workload": "deployer"})
    assert fetched["version"] == 2 and fetched["values"] == {"TOKEN": new_token, "user": new_user}
    old = _call(server, "POST", f"/v1/secrets/{secret_id}/fetch", {"workload": "deployer", "version": 1})
    assert old["values"]["TOKEN"] == first

    # Outside the browser, with the same session: a forged post and a stale form (the revision the
    # page was read at, now gone) are refused, nothing is written, and neither answer holds the value.
    cookie = next(c["value"] for c in browser.cookies() if c["name"] == "signer_console")
    canary = "never-" + random.token_hex(16)
    form = {"revision": str(revision), "mode": "fields", "value.TOKEN": canary, "value.user": canary}
    status, forged = _console_post(
        server, cookie, f"/console/secrets/{secret_id}/rotate", {**form, "csrf": "x"}
    )
    assert status == 403 and "did not come from this console" in forged
    csrf = browser.script("return document.querySelector('form.who input[name=csrf]').value")
    status, stale = _console_post(
        server, cookie, f"/console/secrets/{secret_id}/rotate", {**form, "csrf": csrf}
    )
    assert status == 409 and "changed after you opened this page" in stale, stale
    pages += [forged, stale]
    assert _call(server, "GET", f"/v1/secrets/{secret_id}")["current_version"] == 2

    # The rotation's event is the API's: secret.rotate with the impact report; no value anywhere.
    (rotated,) = _events(server, "secret.rotate", secret_id)
    assert rotated["version"] == 2 and rotated["generated"] is False and rotated["staged"] is False
    assert rotated["impact"]["action"] == "rotate_secret"
    assert "principal:" + server.installation.admin["principal"]["id"] in json.dumps(rotated["impact"])
    browser.get(f"{server.url}/console/audit?q=secret.rotate")
    assert secret_id in browser.text("#events")
    pages.append(browser.source())
    _, _, log = server.call("GET", "/v1/audit/events?limit=10000", token=server.installation.admin_token)
    for value in (new_token, new_user, canary):
        for page in pages:
            assert value not in page
        assert value not in log and value not in server.log_text()
    assert folder in pages[0]


def test_rotating_a_generated_secret_concurrently_and_staged(
    server: Server, browser: webdriver.Browser
) -> None:
    _, _, generated, _ = _seed(server)
    secret_id = generated["id"]
    start = _call(server, "POST", f"/v1/secrets/{secret_id}/fetch", {})["values"]["value"]

    browser.get(f"{server.url}/console/login")
    _sign_in(browser, server.installation.admin_token)
    browser.wait_url("/console")
    browser.get(f"{server.url}/console/secrets/{secret_id}/rotate")
    assert "from the secret's rule (kind hex, bytes 16, field value)" in browser.text("#rotate fieldset")
    assert browser.script("return document.querySelector('#mode-generate').checked") is True
    assert "None set: version 1 stays enabled" in browser.text("#effects")
    _checked(browser, "rotate-generated")

    # Someone rotates through the API while the page is open: the form is refused, not applied on top.
    _call(server, "POST", f"/v1/secrets/{secret_id}/versions", {"from_rule": True}, 201)
    browser.click("#confirm")
    browser.wait_for("#error")
    assert "changed after you opened this page" in browser.text("#error")
    shown = _call(server, "GET", f"/v1/secrets/{secret_id}")
    assert shown["current_version"] == 2 and len(shown["versions"]) == 2
    by_api = _call(server, "POST", f"/v1/secrets/{secret_id}/fetch", {})["values"]["value"]
    _checked(browser, "rotate-refused-concurrent")

    # Staged: version 3 is made but fetches keep getting version 2 until it is promoted.
    browser.get(f"{server.url}/console/secrets/{secret_id}/rotate")
    assert "Version 3 replaces version 2" in browser.text("#effects")
    browser.click("#stage")
    browser.click("#confirm")
    browser.wait_url(f"/console/secrets/{secret_id}/rotated?version=3")
    assert "Version 3 is staged: fetches still get version 2" in browser.text("#outcome")
    assert "none set: version 2 stays enabled after the promotion" in browser.text("#facts")
    _checked(browser, "rotated-staged")
    assert _call(server, "POST", f"/v1/secrets/{secret_id}/fetch", {})["values"]["value"] == by_api
    staged = _call(server, "POST", f"/v1/secrets/{secret_id}/fetch", {"version": 3})["values"]["value"]
    assert len({start, by_api, staged}) == 3
    assert staged not in browser.source()
    browser.click("#confirm-promote")
    browser.wait_url(f"/console/secrets/{secret_id}/rotated?version=3&promoted=1")
    assert "Promoted. Version 3 is current" in browser.text("#outcome")
    assert _call(server, "POST", f"/v1/secrets/{secret_id}/fetch", {})["values"]["value"] == staged
    assert staged not in browser.source()
    events = _events(server, "secret.rotate", secret_id)
    assert [(e["version"], e["generated"], e["staged"]) for e in events] == [
        (2, True, False),
        (3, True, True),
    ]
    assert all(e["impact"]["action"] == "rotate_secret" for e in events)
    assert [e["version"] for e in _events(server, "secret.version_promoted", secret_id)] == [3]


def _address() -> str:
    return to_checksum_address("0x" + random.token_hex(20))


def _tx(to: str, data: bytes = b"", gas: int = 21000) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 1,
        "nonce": 0,
        "gas": gas,
        "to": to,
        "value": "2000000000000000000",
        "data": "0x" + data.hex(),
        "maxFeePerGas": 30_000_000_000,
        "maxPriorityFeePerGas": 1_000_000_000,
    }


def test_the_list_says_each_request_in_the_books_words(
    server: Server, unique_name: str, browser: webdriver.Browser
) -> None:
    desk = Desk(server, unique_name)
    payroll, usdc = _address(), _address()
    _call(server, "PUT", f"/v1/books/addresses/{payroll}", {"label": "payroll"})
    _call(server, "PUT", f"/v1/books/tokens/1/{usdc}", {"symbol": "USDC", "decimals": 6})
    requests = []
    for fields in (
        _tx(payroll),
        _tx(usdc, bytes.fromhex("a9059cbb") + encode(["address", "uint256"], [payroll, 250_000_000]), 90000),
        _tx(usdc, bytes.fromhex("095ea7b3") + encode(["address", "uint256"], [payroll, 2**256 - 1]), 90000),
    ):
        status, body = desk.sign(fields)
        assert status == 202, body
        requests.append(body["approval"]["id"])

    browser.get(f"{server.url}/console/login")
    _sign_in(browser, desk.approvers[0])
    browser.wait_url("/console")
    short = f"{payroll[:6]}…{payroll[-5:]}"
    token = f"USDC ({usdc[:6]}…{usdc[-5:]})"
    rows = {
        r: browser.script(
            "return [...document.querySelectorAll('#requests tr')]"
            f".find(tr => tr.textContent.includes('{r}')).querySelector('td.what').innerText"
        )
        for r in requests
    }
    assert rows[requests[0]] == (
        f"Send 2 ETH (2,000,000,000,000,000,000 wei) to {short} (payroll, from your address book) "
        "on Ethereum mainnet (chain 1) from k"
    )
    assert rows[requests[1]] == (
        f"Call transfer on token {token}: 250 USDC (250,000,000 base units) to {short} (payroll, from your "
        "address book) on Ethereum mainnet (chain 1) from k"
    )
    assert rows[requests[2]].startswith(
        f"Allow {short} (payroll, from your address book) to spend an unlimited amount of token {token}"
    )
    assert "Dangerous: Unlimited approval" in rows[requests[2]]
    assert "Dangerous" not in rows[requests[0]] + rows[requests[1]]
    _checked(browser, "list-books")


async def test_the_list_reads_the_books_once_per_page(store: Store) -> None:
    """notes_for_many: the same statements for 1 view or 40 (no query per row), and each view's notes
    are exactly what notes_for says of it alone."""
    now = datetime.now(UTC)
    labelled = [_address() for _ in range(40)]
    token = _address()
    signature = "payout(address,uint256)"
    selector = selector_of(signature)

    async def unit(writer: Any) -> None:
        for i, a in enumerate(labelled):
            await writer.books.put_address(AddressEntry(a.lower(), f"label-{i}", "", now, "prn_test"))
        await writer.books.put_token(TokenEntry(1, token.lower(), "TOK", 6, now, "prn_test"))
        await writer.books.put_function(FunctionEntry("", selector, signature, now, "prn_test"))

    await store.submit(unit)
    books = BookService(store)
    views = [
        {
            "scheme": "transaction",
            "chainId": 1,
            "to": a,
            "selector": selector,
            "data": selector + encode(["address", "uint256"], [labelled[(i + 1) % 40], i]).hex(),
        }
        for i, a in enumerate(labelled)
    ]
    views[0] = {"scheme": "transaction", "chainId": 1, "to": token, "token_call": {"recipient": labelled[5]}}

    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if any(table in statement for table in ("address_book", "token_book", "abi_functions")):
            statements.append(statement)

    engine = store._engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        one = await books.notes_for_many(views[:2])
        few = len(statements)
        statements.clear()
        many = await books.notes_for_many(views)
        assert len(statements) == few <= 4, statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert many[:2] == one
    for view, notes in zip(views, many, strict=True):
        assert notes == await books.notes_for(view)
    assert many[0]["tokens"] == {token.lower(): {"symbol": "TOK", "decimals": 6}}
    assert many[0]["addresses"][labelled[5].lower()]["label"] == "label-5"
    assert many[3]["function"]["signature"] == signature
    assert many[3]["addresses"][labelled[4].lower()]["label"] == "label-4"  # a decoded argument's label


def test_the_rotation_said_in_words() -> None:
    """console_rotation.effects: plain data in, sentences out (no browser)."""
    assert [duration(s) for s in (59, 60, 3600, 90061, 172800)] == [
        "59 s",
        "1 min",
        "1 h",
        "1 day 1 h 1 min",
        "2 days",
    ]
    report = {
        "days": 7,
        "versions": {"current": 4, "next": 5},
        "resources": [
            {
                "keep": [
                    {"subject": "group:ops", "operations": ["read_value"], "through": ["grt_1"]},
                    {"subject": "principal:auditor", "operations": ["read_metadata"], "through": ["grt_2"]},
                ],
                "fetched": [
                    {
                        "principal_id": "prn_a",
                        "workload": "api",
                        "fetches": 3,
                        "last_at": "T",
                        "last_version": 4,
                    }
                ],
                "fetchers_total": 2,
                "consumers": [{"name": "api", "status": "keeps"}, {"name": "cron", "status": "not_seen"}],
            }
        ],
        "older_grants": [{"grant_id": "grt_9", "principal_id": "prn_b", "advice": "revoke when done"}],
    }
    said = dict(effects(report, {"pins": {"cron": 3}, "overlap_seconds": None}))
    assert said["New version"] == "Version 5 replaces version 4 as the one fetches get."
    assert said["Who gets the new value"] == "At their next fetch: group:ops (through grt_1)"
    assert said["Fetched in the last 7 days"] == (
        "api as prn_a: 3 fetches, last at T (version 4) (the 1 most frequent of 2)"
    )
    assert said["Declared consumers"] == "api (follows the current version); cron (pinned to version 3)"
    assert said["Pinned consumers"] == "cron stays on version 3 until its pin changes"
    assert said["Overlap window"].startswith("None set: version 4 stays enabled")
    assert said["Grants used only for older versions"] == "grt_9 (prn_b): revoke when done"
    quiet = dict(effects({"days": 30, "resources": [{}]}, {"current_version": 1, "overlap_seconds": 86400}))
    assert quiet["Who gets the new value"] == "Nobody holds read_value on this secret now."
    assert quiet["Fetched in the last 30 days"] == "Nobody fetched it in the last 30 days."
    assert quiet["Overlap window"].startswith("1 day: version 1 stays readable that long")
