"""The approvers' web console at ``/console``: server-rendered pages (``console_render``: Jinja2,
autoescaped), a stylesheet and one small script served from the app.

- Sign-in: an approver pastes an access token; it is checked like any bearer token and opens a
  server-side session (``signer.services.console_sessions``): the cookie carries the session's random
  secret, never the token (``HttpOnly``, ``SameSite=Strict``, ``Path=/console``, ``Secure`` when served
  over TLS or when ``console_cookie_secure`` says a TLS-terminating proxy is in front). Every page
  re-checks the session (idle and absolute expiry) and the token it was opened with, so revoking the
  token or disabling the principal ends the session at once; signing out deletes the session. A link
  to a request (a notification) that finds no session goes through sign-in and back to the request.
- CSRF: every state-changing form carries the session's CSRF token (an HMAC of the session id under the
  service's token key), compared in constant time; the sign-in form uses a double-submit cookie.
  SameSite=Strict already keeps other sites' forms from carrying the cookie: the token is the second
  lock.
- Clickjacking and injection: ``X-Frame-Options: DENY``, a CSP with ``frame-ancestors 'none'``,
  ``default-src 'none'`` and the one script allowed by its hash (``console_render``).
- The request page (``signer.services.approval_desk`` around ``ApprovalsService.show``) says in one
  sentence what will happen (``console_present``, with the operator's books: address names, token
  units, registered functions), then the decision; each row of the list says the same sentence (the
  books read once for the whole page); a vote may carry a signature
  made in the browser (Ed25519 by WebCrypto, or secp256k1 by an injected wallet), verified by the
  approvals service exactly as for the API. Never a secret value: the approval model stores none.

Handlers stay thin: they parse the form, call one service, render.
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Any

from aiohttp import web

from signer.errors import SignerError
from signer.http import console_present as present
from signer.http import console_render as render
from signer.http.state import SERVICES, SETTINGS
from signer.identity import Role
from signer.services.approval_desk import ApprovalDesk
from signer.services.console_sessions import ConsoleSession
from signer.services.context import RequestContext

console_routes = web.RouteTableDef()

COOKIE = "signer_console"
SESSION = web.RequestKey("console_session", ConsoleSession)
LOGIN_COOKIE = "signer_console_login"
FILTERS = (("mine", "To vote"), ("pending", "Pending"), ("decided", "Decided"), ("all", "All"))
_CAPTIONS = {
    "mine": ("Requests waiting for your vote", "Nothing is waiting for your vote."),
    "pending": ("Pending requests", "No request is pending."),
    "decided": ("Decided requests", "No request has been decided yet."),
    "all": ("All requests", "No requests."),
}
# Where sign-in may send the browser back to: a console page of this origin, nothing else.
_NEXT = re.compile(r"/console(/approvals/apr_[0-9a-f]{1,64}|/(keys|secrets|grants|groups|policies|audit))?")
FORGED = "Refused: the form did not come from this console."


async def session(request: web.Request) -> RequestContext | None:
    session = await request.app[SERVICES].console_sessions.resume(
        request.cookies.get(COOKIE), request["request_id"]
    )
    if session is None:
        return None
    request[SESSION] = session
    return session.ctx


def _desk(request: web.Request) -> ApprovalDesk:
    desk = request.app[SERVICES].approval_desk
    assert desk is not None, "the console needs the approval desk service"
    return desk


def who(request: web.Request, ctx: RequestContext) -> dict[str, Any]:
    """What every signed-in page shows in its bar: the name, the sign-out form's CSRF token, and the
    operator pages' links for admins and auditors."""
    return {
        "signed_in": ctx.caller.name,
        "csrf": request[SESSION].csrf,
        "operator": ctx.caller.role in (Role.ADMIN, Role.AUDITOR),
    }


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[SETTINGS].console_cookie_secure


def csrf_ok(request: web.Request, form: Any) -> bool:
    return hmac.compare_digest(str(form.get("csrf", "")), request[SESSION].csrf)


def to_login(request: web.Request) -> web.Response:
    """No session: sign in first, then come back here (a notification's link opens the request)."""
    path = request.path
    back = path if path != "/console" and _NEXT.fullmatch(path) else None
    return render.redirect("/console/login" + (f"?next={back}" if back else ""))


# -- sign-in --------------------------------------------------------------------------------------


@console_routes.get("/console/login")
async def login_form(request: web.Request) -> web.Response:
    nonce = secrets.token_urlsafe(24)
    wanted = request.query.get("next", "")
    response = render.page(
        "login.html", title="Sign in", nonce=nonce, next=wanted if _NEXT.fullmatch(wanted) else "/console"
    )
    response.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="Strict", path="/console", secure=_secure(request)
    )
    return response


@console_routes.post("/console/login")
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(str(form.get("csrf", "")), expected):
        return render.message(
            "Sign in", "The sign-in form expired: load it again.", 403, back="/console/login"
        )
    token = str(form.get("token", "")).strip()
    try:
        cookie, _ = await request.app[SERVICES].console_sessions.sign_in(token, request["request_id"])
    except SignerError:
        return render.message("Sign in", "That is not a valid approver token.", 401, back="/console/login")
    wanted = str(form.get("next", ""))
    response = render.redirect(wanted if _NEXT.fullmatch(wanted) else "/console")
    response.set_cookie(
        COOKIE, cookie, httponly=True, samesite="Strict", path="/console", secure=_secure(request)
    )
    response.del_cookie(LOGIN_COOKIE, path="/console")
    return response


@console_routes.post("/console/logout")
async def logout(request: web.Request) -> web.Response:
    ctx = await session(request)
    if ctx is not None:
        if not csrf_ok(request, await request.post()):
            return render.message("Sign out", FORGED, 403)
        await request.app[SERVICES].console_sessions.sign_out(request[SESSION])
    response = render.redirect("/console/login")
    response.del_cookie(COOKIE, path="/console")
    return response


@console_routes.get("/console/static/{name}")
async def static(request: web.Request) -> web.Response:
    return render.static(request.match_info["name"])


# -- pages ----------------------------------------------------------------------------------------


def _listed(item: dict[str, Any], notes: present.Notes) -> dict[str, Any]:
    return {
        "id": item["id"],
        "state": item["state"],
        "summary": present.summary(item, notes),
        "dangers": present.dangers(item),
        "requirements": present.requirements(item),
        "time_left": present.time_left(item.get("seconds_left")),
    }


@console_routes.get("/console")
async def index(request: web.Request) -> web.Response:
    ctx = await session(request)
    if ctx is None:
        return to_login(request)
    default = "mine" if ctx.caller.role is Role.APPROVER else "pending"
    show = request.query.get("show", default)
    if show not in _CAPTIONS:
        show = default
    items = await _desk(request).listing(ctx, show)
    # The books for every row at once (one read of each book per page, however many rows).
    books = request.app[SERVICES].books
    views = [i.get("view") or {} for i in items]
    notes = await books.notes_for_many(views) if books is not None else [present.NO_NOTES] * len(items)
    caption, empty = _CAPTIONS[show]
    return render.page(
        "index.html",
        title="Approvals",
        show=show,
        filters=FILTERS,
        caption=caption,
        empty=empty,
        items=[_listed(i, n) for i, n in zip(items, notes, strict=True)],
        **who(request, ctx),
    )


@console_routes.get("/console/approvals/{approval_id}")
async def detail(request: web.Request) -> web.Response:
    ctx = await session(request)
    if ctx is None:
        return to_login(request)
    try:
        page = await _desk(request).page(ctx, request.match_info["approval_id"])
    except SignerError as exc:
        return render.message("Not available", exc.message, exc.status, **who(request, ctx))
    voted = request.query.get("voted")
    books = request.app[SERVICES].books
    notes = await books.notes_for(page["item"].get("view") or {}) if books is not None else present.NO_NOTES
    return render.page(
        "request.html",
        title=f"Request {page['item']['id']}",
        voted=voted if voted in ("approve", "reject") else None,
        **present.present(page, notes),
        **who(request, ctx),
    )


async def _vote(request: web.Request, decision: str) -> web.Response:
    ctx = await session(request)
    if ctx is None:
        return render.redirect("/console/login")
    form = await request.post()
    if not csrf_ok(request, form):
        return render.message("Refused", FORGED, 403)
    approval_id = request.match_info["approval_id"]
    approvals = request.app[SERVICES].approvals
    digest = str(form.get("digest", ""))
    signature = str(form.get("signature", "")) or None
    try:
        if decision == "approve":
            await approvals.approve(ctx, approval_id, digest, signature=signature)
        else:
            await approvals.reject(ctx, approval_id, digest, signature=signature)
    except SignerError as exc:
        return render.message(
            "Not recorded",
            f"{exc.code}: {exc.message}",
            exc.status,
            back=f"/console/approvals/{approval_id}",
            **who(request, ctx),
        )
    # The marker tells the approver (and a browser test) that this page follows their vote.
    return render.redirect(f"/console/approvals/{approval_id}?voted={decision}")


@console_routes.post("/console/approvals/{approval_id}/approve")
async def approve(request: web.Request) -> web.Response:
    return await _vote(request, "approve")


@console_routes.post("/console/approvals/{approval_id}/reject")
async def reject(request: web.Request) -> web.Response:
    return await _vote(request, "reject")
