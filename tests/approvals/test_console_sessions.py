"""Console sessions: server-side, stored hashed, bound to the principal and to the token used to sign in.

In process (real SoftHSM, SQLite and PostgreSQL, a real HTTP server on 127.0.0.1 serving the console's
routes through the service's middleware) with the session clock in the test's hands, so idle and
absolute expiry are tested without sleeping; then against the running ``signer serve``: the cookie is
not the token, sign-out forgets the session, revoking the token or disabling the principal ends it.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from signer.app import request_context
from signer.config import Settings
from signer.http.console import COOKIE, console_routes
from signer.http.state import SERVICES, SETTINGS, Services
from signer.http.webhook_transport import AiohttpTransport
from signer.services.approval_desk import ApprovalDesk
from signer.services.audit_log import AuditLogService
from signer.services.console_sessions import ConsoleSessions
from signer.services.health import HealthService
from signer.services.secret_kind import Sealer
from signer.services.secret_resolve import SecretResolver
from signer.services.secret_versions import SecretVersionsService
from signer.services.secrets import SecretsService
from signer.services.webhooks import WebhookService
from tests.approvals.support import Person, World
from tests.service_harness import Server

IDLE = timedelta(minutes=15)
MAX_AGE = timedelta(hours=8)


@dataclass
class Page:
    status: int
    location: str
    text: str
    set_cookies: list[str]


class Console:
    """A browser without a cookie jar: the test says which cookie each request carries."""

    def __init__(self, base: str, http_session: aiohttp.ClientSession) -> None:
        self.base = base
        self.http = http_session

    async def call(
        self, method: str, path: str, cookie: str = "", form: dict[str, str] | None = None
    ) -> Page:
        headers = {"Cookie": cookie} if cookie else {}
        async with self.http.request(
            method, self.base + path, headers=headers, data=form, allow_redirects=False
        ) as response:
            return Page(
                response.status,
                response.headers.get("Location", ""),
                await response.text(),
                response.headers.getall("Set-Cookie", []),
            )

    async def sign_in(self, token: str) -> tuple[str, str]:
        """Returns (the session cookie's value, its whole Set-Cookie header)."""
        form_page = await self.call("GET", "/console/login")
        nonce = re.search(r'name="csrf" value="([^"]+)"', form_page.text).group(1)
        login_cookie = form_page.set_cookies[0].split(";")[0]
        done = await self.call("POST", "/console/login", login_cookie, {"csrf": nonce, "token": token})
        assert done.status == 303 and done.location == "/console", done
        header = next(c for c in done.set_cookies if c.startswith(f"{COOKIE}="))
        return header.split(";")[0].split("=", 1)[1], header

    async def index(self, value: str) -> Page:
        return await self.call("GET", "/console", f"{COOKIE}={value}")

    async def signed_in(self, value: str) -> bool:
        page = await self.index(value)
        if page.status == 303:
            assert page.location == "/console/login"
            return False
        assert page.status == 200, page
        return True

    async def csrf(self, value: str) -> str:
        page = await self.index(value)
        return re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text).group(1)

    async def sign_out(self, value: str, csrf: str) -> Page:
        return await self.call("POST", "/console/logout", f"{COOKIE}={value}", {"csrf": csrf})


async def _serve(world: World, tmp_path: Path, *, secure: bool = False) -> AsyncIterator[Console]:
    sessions = ConsoleSessions(world.store, world.auth, idle=IDLE, max_age=MAX_AGE, clock=world.clock)
    transport = AiohttpTransport()
    app = web.Application(middlewares=[request_context])
    app[SETTINGS] = Settings(data_dir=tmp_path, console_cookie_secure=secure)
    secrets = SecretsService(world.store, world.pipeline, Sealer(world.hsm), max_value_bytes=1024)
    app[SERVICES] = Services(
        auth=world.auth,
        admin=world.admin,
        keys=world.keys,
        signing=world.signing,
        health=HealthService(world.store, world.hsm),
        audit=AuditLogService(world.store),
        approvals=world.approvals,
        policies=world.policies,
        webhooks=WebhookService(world.store, world.auth, transport),
        console_sessions=sessions,
        secrets=secrets,
        secret_refs=SecretResolver(world.store, secrets),
        approval_desk=ApprovalDesk(world.store, world.approvals, clock=world.clock),
        secret_versions=SecretVersionsService(world.store, secrets),
    )
    app.add_routes(console_routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http_session:
            yield Console(f"http://127.0.0.1:{port}", http_session)
    finally:
        await runner.cleanup()
        await transport.close()


@pytest.fixture
async def console(world: World, tmp_path: Path) -> AsyncIterator[Console]:
    async for made in _serve(world, tmp_path):
        yield made


async def _audit(world: World) -> list[dict]:
    async with world.store.read() as reader:
        return [json.loads(e.event) for e in await reader.audit.events()]


def _token_id(token: str) -> str:
    return token.split("_", 1)[1].split(".", 1)[0]


async def test_the_cookie_is_a_session_not_the_token(world: World, console: Console) -> None:
    alice = await world.person()
    value, header = await console.sign_in(alice.token)
    assert value != alice.token and alice.token not in header and _token_id(alice.token) not in header
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")[1:]}
    assert "httponly" in attributes and attributes["samesite"] == "SameSite=Strict"
    assert attributes["path"] == "Path=/console" and "secure" not in attributes  # plain HTTP
    assert await console.signed_in(value)
    # The token itself is not a session; nor is a cookie of the right shape that the server never made.
    assert not await console.signed_in(alice.token)
    assert not await console.signed_in("A" * 43)

    # Stored hashed: the row holds a 32-byte keyed digest, not the cookie; the audit names the session
    # by its public id and holds neither the cookie nor the token.
    digest = world.auth.derived_secret(f"console-session\0{value}")
    async with world.store.read() as reader:
        row = await reader.console_sessions.get(digest)
    assert row is not None and row.digest != value.encode() and len(row.digest) == 32
    assert row.principal_id == alice.id and row.token_id == _token_id(alice.token)
    assert row.expires_at == row.created_at + MAX_AGE
    events = await _audit(world)
    sign_ins = [e for e in events if e["kind"] == "console.sign_in"]
    assert [e["session_id"] for e in sign_ins] == [row.id] and sign_ins[0]["actor"][
        "principal_id"
    ] == alice.id
    text = json.dumps(events)
    assert value not in text and alice.token not in text

    # A service token opens no session (and no row, no audit event).
    service = await world.person("service")
    form_page = await console.call("GET", "/console/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', form_page.text).group(1)
    refused = await console.call(
        "POST",
        "/console/login",
        form_page.set_cookies[0].split(";")[0],
        {"csrf": nonce, "token": service.token},
    )
    assert refused.status == 401 and not any(c.startswith(f"{COOKIE}=") for c in refused.set_cookies)
    assert len([e for e in await _audit(world) if e["kind"] == "console.sign_in"]) == 1


async def test_sign_out_forgets_the_session(world: World, console: Console) -> None:
    alice = await world.person()
    value, _ = await console.sign_in(alice.token)
    other, _ = await console.sign_in(alice.token)  # a second browser of the same approver
    csrf = await console.csrf(value)
    assert csrf != await console.csrf(other)  # each session its own CSRF token
    # A sign-out form without this session's CSRF token (or with another session's) does nothing.
    assert (await console.sign_out(value, "")).status == 403
    assert (await console.sign_out(value, await console.csrf(other))).status == 403
    assert await console.signed_in(value)

    done = await console.sign_out(value, csrf)
    assert done.status == 303 and done.location == "/console/login"
    assert any(c.startswith(f'{COOKIE}=""') or c.startswith(f"{COOKIE}=;") for c in done.set_cookies)
    # Replaying the old cookie finds nothing: the server forgot the session, not only the browser.
    assert not await console.signed_in(value)
    async with world.store.read() as reader:
        assert (
            await reader.console_sessions.get(world.auth.derived_secret(f"console-session\0{value}")) is None
        )
    assert await console.signed_in(other)  # the other session is its own
    outs = [e for e in await _audit(world) if e["kind"] == "console.sign_out"]
    assert len(outs) == 1 and outs[0]["actor"]["principal_id"] == alice.id


async def test_idle_expiry(world: World, console: Console) -> None:
    alice = await world.person()
    value, _ = await console.sign_in(alice.token)
    for _ in range(3):
        world.clock.jump(seconds=IDLE.total_seconds() - 1)
        assert await console.signed_in(value)  # each page restarts the idle time
    world.clock.jump(seconds=IDLE.total_seconds())
    assert not await console.signed_in(value)
    world.clock.jump(seconds=-2 * IDLE.total_seconds())  # a clock set back revives nothing
    assert not await console.signed_in(value)


async def test_absolute_expiry(world: World, console: Console) -> None:
    alice = await world.person()
    value, _ = await console.sign_in(alice.token)
    step = timedelta(minutes=14)
    elapsed = timedelta(0)
    while elapsed + step < MAX_AGE:
        world.clock.jump(seconds=step.total_seconds())
        elapsed += step
        assert await console.signed_in(value), elapsed  # busy, never idle
    world.clock.jump(seconds=(MAX_AGE - elapsed).total_seconds())
    assert not await console.signed_in(value)
    # A new sign-in is a new session; the old cookie stays dead.
    fresh, _ = await console.sign_in(alice.token)
    assert fresh != value and await console.signed_in(fresh) and not await console.signed_in(value)


async def test_revoking_the_token_or_disabling_the_principal_ends_the_session(
    world: World, console: Console
) -> None:
    alice = await world.person()
    second: Person = await world.new_token(alice)
    value, _ = await console.sign_in(alice.token)
    by_second, _ = await console.sign_in(second.token)
    # Bound to the token it was opened with: revoking another token of the same approver changes nothing.
    await world.auth.revoke(world.admin_person.ctx, _token_id(second.token))
    assert not await console.signed_in(by_second)
    assert await console.signed_in(value)
    await world.auth.revoke(world.admin_person.ctx, _token_id(alice.token))
    assert not await console.signed_in(value)

    bob = await world.person()
    value, _ = await console.sign_in(bob.token)
    await world.admin.set_principal_disabled(world.admin_person.ctx, bob.id, True)
    assert not await console.signed_in(value)
    await world.admin.set_principal_disabled(world.admin_person.ctx, bob.id, False)
    assert not await console.signed_in(value)  # ended, not suspended


async def test_secure_when_a_tls_proxy_is_configured(world: World, tmp_path: Path) -> None:
    async for console in _serve(world, tmp_path, secure=True):
        alice = await world.person()
        form_page = await console.call("GET", "/console/login")
        assert "Secure" in form_page.set_cookies[0]
        _, header = await console.sign_in(alice.token)
        assert "Secure" in header and "HttpOnly" in header and "SameSite=Strict" in header


# -- against the running server ---------------------------------------------------------------------


def _post_form(
    server: Server, path: str, fields: dict[str, str], cookie: str
) -> tuple[int, dict[str, str], list[str]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(
            "POST",
            path,
            urllib.parse.urlencode(fields),
            {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
        )
        response = connection.getresponse()
        response.read()
        cookies = [v for k, v in response.getheaders() if k == "Set-Cookie"]
        return response.status, dict(response.getheaders()), cookies
    finally:
        connection.close()


def _get(server: Server, path: str, cookie: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        body = response.read().decode()
        login_cookie = response.getheader("Set-Cookie") or ""
        return response.status, response.getheader("Location") or "", body + "\n" + login_cookie
    finally:
        connection.close()


def _server_sign_in(server: Server, token: str) -> tuple[str, str]:
    _, _, page = _get(server, "/console/login", "")
    nonce = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    login_cookie = re.search(r"(signer_console_login=[^;]+)", page).group(1)
    status, headers, cookies = _post_form(
        server, "/console/login", {"csrf": nonce, "token": token}, login_cookie
    )
    assert status == 303, (status, headers)
    header = next(c for c in cookies if c.startswith(f"{COOKIE}="))
    return header.split(";")[0], header


def _server_signed_in(server: Server, cookie: str) -> bool:
    status, location, _ = _get(server, "/console", cookie)
    assert status in (200, 303)
    return status == 200 or location != "/console/login"


def test_running_server_sessions(server: Server, unique_name: str) -> None:
    admin = server.installation.admin_token
    status, _, made = server.call(
        "POST", "/v1/principals", {"name": f"{unique_name}-ap", "role": "approver"}, admin
    )
    assert status == 201, made
    token, token_id = made["credentials"]["access_token"], made["credentials"]["access_token_id"]

    cookie, header = _server_sign_in(server, token)
    assert token not in header and token_id not in header and "HttpOnly" in header
    assert "SameSite=Strict" in header and "Path=/console" in header
    assert _server_signed_in(server, cookie)
    assert not _server_signed_in(server, f"{COOKIE}={token}")  # the token is not a session

    # Sign out, then replay the old cookie: refused.
    _, _, page = _get(server, "/console", cookie)
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)
    status, headers, _ = _post_form(server, "/console/logout", {"csrf": csrf}, cookie)
    assert status == 303 and headers["Location"] == "/console/login"
    assert not _server_signed_in(server, cookie)

    # Revoking the token ends a live session at once.
    cookie, _ = _server_sign_in(server, token)
    assert _server_signed_in(server, cookie)
    assert server.call("DELETE", f"/v1/tokens/{token_id}", token=admin)[0] == 200
    assert not _server_signed_in(server, cookie)

    # The log's last 1,000 events (the server is shared: its first 1,000 may all be other tests').
    _, headers, _ = server.call("GET", "/v1/audit/events?limit=1", token=admin)
    tail = max(0, int(headers["X-Audit-Head"]) - 1000)
    status, _, events = server.call("GET", f"/v1/audit/events?after={tail}&limit=1000", token=admin)
    assert status == 200
    text = json.dumps(events)
    assert "console.sign_in" in text and "console.sign_out" in text
    assert token not in text and cookie.split("=", 1)[1] not in text
