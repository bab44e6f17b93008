"""The approvers' web console: server-rendered pages, no JavaScript, at ``/console``.

- Sign-in: an approver pastes an access token; it is checked like any bearer token and opens a
  server-side session (``signer.services.console_sessions``): the cookie carries the session's random
  secret, never the token (``HttpOnly``, ``SameSite=Strict``, ``Path=/console``, ``Secure`` when served
  over TLS or when ``console_cookie_secure`` says a TLS-terminating proxy is in front). Every page
  re-checks the session (idle and absolute expiry) and the token it was opened with, so revoking the
  token or disabling the principal ends the session at once; signing out deletes the session.
- CSRF: every state-changing form carries the session's CSRF token (an HMAC of the session id under the
  service's token key), compared in constant time; the sign-in form uses a double-submit cookie.
  SameSite=Strict already keeps other sites' forms from carrying the cookie: the token is the second
  lock.
- Clickjacking and injection: every response says ``X-Frame-Options: DENY`` and a CSP with
  ``frame-ancestors 'none'`` and ``default-src 'none'`` (no script runs even if markup slipped through);
  every value is HTML-escaped where it is written (``_e``).
- What is shown is the request's decoded view (never a secret value: the approval model stores none).

Handlers stay thin: they parse the form, call the approvals service, render.
"""

from __future__ import annotations

import hmac
import json
import secrets
from html import escape
from typing import Any

from aiohttp import web

from signer.errors import SignerError
from signer.http.state import SERVICES, SETTINGS
from signer.services.console_sessions import ConsoleSession
from signer.services.context import RequestContext

console_routes = web.RouteTableDef()

COOKIE = "signer_console"
SESSION = web.RequestKey("console_session", ConsoleSession)
LOGIN_COOKIE = "signer_console_login"
_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _page(
    title: str, body: str, status: int = 200, *, signed_in: str | None = None, csrf: str = ""
) -> web.Response:
    who = (
        f'<form method="post" action="/console/logout"><span id="who">{_e(signed_in)}</span> '
        f'<input type="hidden" name="csrf" value="{_e(csrf)}"><button id="logout">Sign out</button></form>'
        if signed_in
        else ""
    )
    html = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_e(title)} - signer approvals</title></head><body>"
        f"<header><a href='/console'>Approvals</a> {who}</header><main><h1>{_e(title)}</h1>{body}</main>"
        "</body></html>"
    )
    return web.Response(status=status, text=html, content_type="text/html", charset="utf-8", headers=_HEADERS)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={**_HEADERS, "Location": location})


async def _session(request: web.Request) -> RequestContext | None:
    session = await request.app[SERVICES].console_sessions.resume(
        request.cookies.get(COOKIE), request["request_id"]
    )
    if session is None:
        return None
    request[SESSION] = session
    return session.ctx


def _csrf(request: web.Request, ctx: RequestContext) -> str:
    return request[SESSION].csrf


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[SETTINGS].console_cookie_secure


def _csrf_ok(request: web.Request, ctx: RequestContext, form: Any) -> bool:
    return hmac.compare_digest(str(form.get("csrf", "")), _csrf(request, ctx))


# -- sign-in --------------------------------------------------------------------------------------


@console_routes.get("/console/login")
async def login_form(request: web.Request) -> web.Response:
    nonce = secrets.token_urlsafe(24)
    body = (
        "<form method='post' action='/console/login'>"
        f"<input type='hidden' name='csrf' value='{_e(nonce)}'>"
        "<label>Approver token <input type='password' name='token' id='token' autocomplete='off'></label> "
        "<button id='signin'>Sign in</button></form>"
    )
    response = _page("Sign in", body)
    response.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="Strict", path="/console", secure=_secure(request)
    )
    return response


@console_routes.post("/console/login")
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(str(form.get("csrf", "")), expected):
        return _page("Sign in", "<p>The sign-in form expired: load it again.</p>", 403)
    token = str(form.get("token", "")).strip()
    try:
        cookie, _ = await request.app[SERVICES].console_sessions.sign_in(token, request["request_id"])
    except SignerError:
        return _page(
            "Sign in", "<p>That is not a valid approver token.</p><a href='/console/login'>Retry</a>", 401
        )
    response = _redirect("/console")
    response.set_cookie(
        COOKIE, cookie, httponly=True, samesite="Strict", path="/console", secure=_secure(request)
    )
    response.del_cookie(LOGIN_COOKIE, path="/console")
    return response


@console_routes.post("/console/logout")
async def logout(request: web.Request) -> web.Response:
    ctx = await _session(request)
    if ctx is not None:
        if not _csrf_ok(request, ctx, await request.post()):
            return _page("Sign out", "<p>Refused: the form did not come from this console.</p>", 403)
        await request.app[SERVICES].console_sessions.sign_out(request[SESSION])
    response = _redirect("/console/login")
    response.del_cookie(COOKIE, path="/console")
    return response


# -- pages ----------------------------------------------------------------------------------------


def _row(item: dict[str, Any]) -> str:
    view = item.get("view", {})
    what = view.get("value_eth")
    if view.get("scheme") == "secret_read":
        # A read: which secret, version and fields (never a value: the request holds none).
        summary = f"read {view.get('folder')}/{view.get('name')} v{view.get('version')}"
    elif what is not None:
        summary = f"{what} ETH to {view.get('to')}"
    else:
        summary = view.get("primary_type") or item["kind"]
    progress = ", ".join(f"{g}: {n}" for g, n in item.get("progress", {}).items())
    return (
        f"<tr><td><a class='approval' href='/console/approvals/{_e(item['id'])}'>{_e(item['id'])}</a></td>"
        f"<td>{_e(item['kind'])}</td><td>{_e(summary)}</td><td class='state'>{_e(item['state'])}</td>"
        f"<td>{_e(progress)}</td><td>{_e(item['expires_at'])}</td></tr>"
    )


@console_routes.get("/console")
async def index(request: web.Request) -> web.Response:
    ctx = await _session(request)
    if ctx is None:
        return _redirect("/console/login")
    approvals = request.app[SERVICES].approvals
    items = await approvals.list_requests(ctx, limit=200)
    pending = [i for i in items if i["state"] == "pending"]
    history = [i for i in items if i["state"] != "pending"]
    head = "<tr><th>id</th><th>kind</th><th>what</th><th>state</th><th>approvals</th><th>expires</th></tr>"
    body = (
        f"<h2>Pending</h2><table id='pending'>{head}{''.join(_row(i) for i in pending)}</table>"
        f"<h2>History</h2><table id='history'>{head}{''.join(_row(i) for i in history)}</table>"
    )
    return _page("Approvals", body, signed_in=ctx.caller.name, csrf=_csrf(request, ctx))


def _fields(view: dict[str, Any]) -> str:
    """Every decoded field as a definition list, nested values as escaped JSON."""
    rows = []
    for name in sorted(view):
        value = view[name]
        shown = value if isinstance(value, str | int | bool) or value is None else json.dumps(value, indent=1)
        rows.append(f"<dt>{_e(name)}</dt><dd id='f-{_e(name)}'><pre>{_e(shown)}</pre></dd>")
    return "<dl>" + "".join(rows) + "</dl>"


@console_routes.get("/console/approvals/{approval_id}")
async def detail(request: web.Request) -> web.Response:
    ctx = await _session(request)
    if ctx is None:
        return _redirect("/console/login")
    csrf = _csrf(request, ctx)
    try:
        item = await request.app[SERVICES].approvals.show(ctx, request.match_info["approval_id"])
    except SignerError as exc:
        return _page(
            "Not available", f"<p>{_e(exc.message)}</p>", exc.status, signed_in=ctx.caller.name, csrf=csrf
        )
    votes = "".join(
        f"<li class='vote'>{_e(v['approver_name'])}: {_e(v['decision'])} at {_e(v['at'])}"
        + (
            ""
            if v["counted"]
            else f" <span class='not-counted' data-code='{_e(v['not_counted']['code'])}'>"
            f"(not counted: {_e(v['not_counted']['reason'])})</span>"
        )
        + "</li>"
        for v in item.get("votes", [])
    )
    requirements = ", ".join(f"{r['quorum']} of {r['group']}" for r in item["requirements"])
    actions = ""
    if item["state"] == "pending":
        actions = "".join(
            f"<form method='post' action='/console/approvals/{_e(item['id'])}/{decision}'>"
            f"<input type='hidden' name='csrf' value='{_e(csrf)}'>"
            f"<input type='hidden' name='digest' value='{_e(item['payload_digest'])}'>"
            f"<button id='{decision}'>{decision.capitalize()}</button></form>"
            for decision in ("approve", "reject")
        )
    body = (
        f"<p>State: <strong id='state'>{_e(item['state'])}</strong>; needs {_e(requirements)}; "
        f"expires {_e(item['expires_at'])}</p>"
        f"<p>Payload digest: <code id='digest'>{_e(item['payload_digest'])}</code></p>"
        f"<h2>Request</h2>{_fields(item['view'])}<h2>Votes</h2><ul id='votes'>{votes}</ul>{actions}"
    )
    return _page(f"Request {item['id']}", body, signed_in=ctx.caller.name, csrf=csrf)


async def _vote(request: web.Request, decision: str) -> web.Response:
    ctx = await _session(request)
    if ctx is None:
        return _redirect("/console/login")
    form = await request.post()
    if not _csrf_ok(request, ctx, form):
        return _page("Refused", "<p>Refused: the form did not come from this console.</p>", 403)
    approval_id = request.match_info["approval_id"]
    approvals = request.app[SERVICES].approvals
    try:
        if decision == "approve":
            await approvals.approve(ctx, approval_id, str(form.get("digest", "")))
        else:
            await approvals.reject(ctx, approval_id, str(form.get("digest", "")))
    except SignerError as exc:
        message = f"<p id='error'>{_e(exc.code)}: {_e(exc.message)}</p>"
        return _page("Not recorded", message, exc.status, signed_in=ctx.caller.name, csrf=_csrf(request, ctx))
    # The marker tells the approver (and a browser test) that this page follows their vote.
    return _redirect(f"/console/approvals/{approval_id}?voted={decision}")


@console_routes.post("/console/approvals/{approval_id}/approve")
async def approve(request: web.Request) -> web.Response:
    return await _vote(request, "approve")


@console_routes.post("/console/approvals/{approval_id}/reject")
async def reject(request: web.Request) -> web.Response:
    return await _vote(request, "reject")
