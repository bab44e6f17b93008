"""The console's pages for operators and auditors (admin and auditor sessions): keys, secrets, grants,
groups, policies with their versions and shadow reports, and the audit log with search and its
verification status. Read-only views over what the API already offers, through the same services (each
checks the caller's role itself, so an approver's session gets the API's 403 here too); nothing here
shows a secret value, a PIN or private key material, because no service returns one.

Each handler: resume the session (``console.session``), call one service, lay the result out as tables
(``records.html``) or nested tables (``record.html``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from signer.errors import NotFound, SignerError
from signer.http import console_present as present
from signer.http import console_render as render
from signer.http.console import FORGED, csrf_ok, session, to_login, who
from signer.http.state import SERVICES
from signer.identity import Role
from signer.services.context import RequestContext
from signer.services.operator_views import OperatorViews

operator_routes = web.RouteTableDef()
_GRANT_ID = re.compile(r"grt_[0-9a-f]{1,64}")

Cell = dict[str, str | None]


def _cell(value: Any, href: str | None = None) -> Cell:
    if isinstance(value, dict | list):
        text = json.dumps(value, separators=(", ", ": "), sort_keys=True) if value else ""
    elif value is None:
        text = ""
    else:
        text = str(value)
    return {"text": text, "href": href}


def _section(
    ident: str, title: str, columns: Iterable[str], rows: Iterable[list[Cell]], empty: str
) -> dict[str, Any]:
    return {"id": ident, "title": title, "columns": list(columns), "rows": list(rows), "empty": empty}


def _views(request: web.Request) -> OperatorViews:
    views = request.app[SERVICES].operator_views
    assert views is not None, "the operator pages need the operator views service"
    return views


async def _page(
    request: web.Request, build: Callable[[RequestContext], Awaitable[tuple[str, dict[str, Any]]]]
) -> web.Response:
    """Resume the session, build the page's context, render it; a service's refusal is its message."""
    ctx = await session(request)
    if ctx is None:
        return to_login(request)
    try:
        template, context = await build(ctx)
    except SignerError as exc:
        return render.message("Not available", exc.message, exc.status, **who(request, ctx))
    return render.page(template, **context, **who(request, ctx))


def _records(title: str, *sections: dict[str, Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    for name in ("search", "intro", "more", "search_action"):
        extra.setdefault(name, None)
    return "records.html", {"title": title, "sections": list(sections), **extra}


def _record(title: str, *sections: tuple[str, str, Any]) -> tuple[str, dict[str, Any]]:
    laid = [
        {"id": ident, "title": heading, "rows": present.table(value) if value else [], "empty": "None."}
        for ident, heading, value in sections
    ]
    return "record.html", {"title": title, "sections": laid}


# -- keys -----------------------------------------------------------------------------------------


@operator_routes.get("/console/keys")
async def keys(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        listed = await request.app[SERVICES].keys.list_keys(ctx, limit=500)
        rows = [
            [
                _cell(k["id"], f"/console/keys/{k['id']}"),
                _cell(k["label"]),
                _cell(k["state"]),
                _cell(k["curve"]),
                _cell(k["address"]),
                _cell(k["scope"]),
            ]
            for k in listed["items"]
        ]
        columns = ("Key", "Label", "State", "Curve", "Address", "Scope")
        return _records("Keys", _section("keys", "Keys", columns, rows, "No keys."))

    return await _page(request, build)


@operator_routes.get("/console/keys/{key_id}")
async def key(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        page = await _views(request).key(ctx, request.match_info["key_id"])
        shown = page["key"]
        attributes = shown.pop("attributes", {})
        # Its lifecycle state in the title: a compromised key must not be mistaken for a usable one.
        mark = "COMPROMISED: " if shown.get("compromised") else ""
        return _record(
            f"Key {shown['label']} ({mark}{shown['state'].replace('_', ' ')})",
            ("key", "Key", shown),
            ("attributes", f"Token attributes (read from the {shown.get('attributes_source')})", attributes),
            ("grants", "Grants on this key", page["grants"]),
            ("attachments", "Attached policies (this key's and every key's)", page["attachments"]),
        )

    return await _page(request, build)


# -- secrets --------------------------------------------------------------------------------------


@operator_routes.get("/console/secrets")
async def secrets(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        listed = await request.app[SERVICES].secrets.list(ctx, None, limit=500)
        may_delete = ctx.caller.role is Role.ADMIN
        rows = [
            [
                _cell(f"{s.get('folder')}/{s.get('name')}", f"/console/secrets/{s['id']}"),
                _cell(s.get("category")),
                _cell(s.get("current_version")),
                _cell(", ".join(s.get("consumers") or [])),
                _cell(s.get("last_fetched_at") or "never"),
                _cell("Delete…", f"/console/secrets/{s['id']}/delete") if may_delete else _cell(""),
            ]
            for s in listed["items"]
        ]
        columns = ("Secret", "Category", "Current version", "Consumers", "Last fetched", "Action")
        return _records(
            "Secrets",
            _section("secrets", "Secrets (metadata only)", columns, rows, "No secrets you may list."),
        )

    return await _page(request, build)


@operator_routes.get("/console/secrets/{secret_id}")
async def secret(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        shown = await request.app[SERVICES].secrets.show(ctx, request.match_info["secret_id"])
        versions = shown.pop("versions", [])
        access = shown.pop("access", {})
        template, context = _record(
            f"Secret {shown.get('folder')}/{shown.get('name')}",
            ("secret", "Metadata", shown),
            ("versions", "Versions (never their values)", versions),
            ("access", "Who can use it, and when it was last fetched", access),
        )
        # Rotation (console_rotation): the link, for an admin, to its impact review and form.
        rotate = ctx.caller.role is Role.ADMIN and shown.get("backend") == "sealed"
        context["partials"] = [*context.get("partials", []), "secret_actions.html"]
        context["rotate_href"] = f"/console/secrets/{shown['id']}/rotate" if rotate else None
        # Disabling or enabling it (secret_state.html): the state, and for an admin the link to the
        # impact review and its confirmation.
        context["partials"] = [*context.get("partials", []), "secret_state.html"]
        context["secret_state"] = _state_link(ctx, shown)
        return template, context

    return await _page(request, build)


# -- grants and groups ----------------------------------------------------------------------------


@operator_routes.get("/console/grants")
async def grants(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        listed = await request.app[SERVICES].admin.list_grants(ctx, None)
        may_revoke = ctx.caller.role is Role.ADMIN
        rows = [
            [
                _cell(g["id"]),
                _cell(g["principal_id"] or (f"group {g['group']}" if g["group"] else "")),
                _cell(f"{g['resource_type']} {g['resource_id']}"),
                _cell(", ".join(g["operations"])),
                _cell(g["expires_at"] or "never"),
                _cell("revoked" if g["revoked"] else "active"),
                _cell("Revoke…", f"/console/grants/{g['id']}/revoke")
                if may_revoke and not g["revoked"]
                else _cell(""),
                _cell("Disable principal…", f"/console/principals/{g['principal_id']}/disable")
                if may_revoke and g["principal_id"]
                else _cell(""),
            ]
            for g in listed
        ]
        columns = ("Grant", "To", "On", "Operations", "Expires", "State", "Action", "Principal")
        revoked = request.query.get("revoked", "")
        intro = f"Grant {revoked} is revoked." if _GRANT_ID.fullmatch(revoked) else None
        return _records("Grants", _section("grants", "Grants", columns, rows, "No grants."), intro=intro)

    return await _page(request, build)


# -- actions behind an impact review and a confirmation --------------------------------------------


_ACTIONS: dict[str, dict[str, str]] = {
    "revoke_grant": {
        "title": "Revoke grant",
        "path": "/console/grants/{id}/revoke",
        "consequence": "revoking this grant stops every operation it allows at once; it cannot be undone "
        "(a new grant is needed). The revocation is audited with this report.",
        "button": "Revoke grant",
        "cancel": "/console/grants",
    },
    "disable_principal": {
        "title": "Disable principal",
        "path": "/console/principals/{id}/disable",
        "consequence": "disabling this principal refuses every request it makes at once, through any of "
        "its tokens; an admin can enable it again. The change is audited with this report.",
        "button": "Disable principal",
        "cancel": "/console/grants",
    },
    "disable_secret": {
        "title": "Disable secret",
        "path": "/console/secrets/{id}/disable",
        "consequence": "disabling this secret refuses every read of every version at once (409 "
        "secret_disabled), through any backend; its grants, metadata and versions stay, and it can be "
        "enabled again. The change is audited with this report.",
        "button": "Disable secret",
        "cancel": "/console/secrets/{id}",
        "reason": "asked",
    },
    "enable_secret": {
        "title": "Enable secret",
        "path": "/console/secrets/{id}/enable",
        "consequence": "enabling this secret lets everyone its grants allow read it again at once. The "
        "change is audited with this report.",
        "button": "Enable secret",
        "cancel": "/console/secrets/{id}",
        "reason": "asked",
    },
    "delete_secret": {
        "title": "Delete secret",
        "path": "/console/secrets/{id}/delete",
        "consequence": "deleting this secret removes it and every sealed version; it cannot be undone. "
        "The deletion is audited with this report.",
        "button": "Delete secret",
        "cancel": "/console/secrets/{id}",
    },
}


def _impact(request: web.Request) -> Any:
    service = request.app[SERVICES].impact
    if service is None:
        raise NotFound("impact review is not available", code="not_found")
    return service


def _days(request: web.Request) -> int:
    text = request.query.get("days", "")
    return int(text) if text.isdigit() and int(text) <= 3660 else 30


async def _review_page(request: web.Request, action: str, target_id: str) -> web.Response:
    """The confirmation: the dry-run impact report (who loses access, what was used and stops, what
    becomes unused), then the action behind a form carrying the session's CSRF token."""
    shown = _ACTIONS[action]

    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        report = await _impact(request).review(ctx, action, target_id, _days(request))
        summary = report.get("summary", {})
        details = {k: v for k, v in report.items() if k != "summary"}
        return "confirm.html", {
            "title": f"{shown['title']} {target_id}",
            "consequence": shown["consequence"],
            "subject_title": "Impact review (a dry run: nothing has changed yet)",
            "subject": present.table({k: "none" if v in ([], {}) else v for k, v in summary.items()}),
            "details": present.table(details),
            "action": shown["path"].format(id=target_id),
            "button": shown["button"],
            "cancel": shown["cancel"].format(id=target_id),
            "may_act": ctx.caller.role is Role.ADMIN,
            "reason_field": shown.get("reason") == "asked",
        }

    return await _page(request, build)


async def _confirmed(
    request: web.Request, act: Callable[[RequestContext], Awaitable[Any]], done: str
) -> web.Response:
    ctx = await session(request)
    if ctx is None:
        return render.redirect("/console/login")
    if not csrf_ok(request, await request.post()):
        return render.message("Refused", FORGED, 403)
    try:
        await act(ctx)
    except SignerError as exc:
        return render.message("Not done", f"{exc.code}: {exc.message}", exc.status, **who(request, ctx))
    return render.redirect(done)


@operator_routes.get("/console/grants/{grant_id}/revoke")
async def revoke_grant_form(request: web.Request) -> web.Response:
    return await _review_page(request, "revoke_grant", request.match_info["grant_id"])


@operator_routes.post("/console/grants/{grant_id}/revoke")
async def revoke_grant(request: web.Request) -> web.Response:
    grant_id = request.match_info["grant_id"]
    done = f"/console/grants?revoked={grant_id}" if _GRANT_ID.fullmatch(grant_id) else "/console/grants"
    return await _confirmed(
        request, lambda ctx: request.app[SERVICES].admin.revoke_grant(ctx, grant_id), done
    )


@operator_routes.get("/console/principals/{principal_id}/disable")
async def disable_principal_form(request: web.Request) -> web.Response:
    return await _review_page(request, "disable_principal", request.match_info["principal_id"])


@operator_routes.post("/console/principals/{principal_id}/disable")
async def disable_principal(request: web.Request) -> web.Response:
    principal_id = request.match_info["principal_id"]
    return await _confirmed(
        request,
        lambda ctx: request.app[SERVICES].admin.set_principal_disabled(ctx, principal_id, True),
        "/console/grants?disabled=1",
    )


@operator_routes.get("/console/secrets/{secret_id}/delete")
async def delete_secret_form(request: web.Request) -> web.Response:
    return await _review_page(request, "delete_secret", request.match_info["secret_id"])


@operator_routes.post("/console/secrets/{secret_id}/delete")
async def delete_secret(request: web.Request) -> web.Response:
    secret_id = request.match_info["secret_id"]
    return await _confirmed(
        request,
        lambda ctx: request.app[SERVICES].secrets.delete(ctx, secret_id),
        "/console/secrets?deleted=1",
    )


_SECRET_ID = re.compile(r"sec_[0-9a-f]{1,64}")


def _state_link(ctx: RequestContext, shown: dict[str, Any]) -> dict[str, Any]:
    """What the secret page says of the whole secret's state, and an admin's link to change it."""
    disabled = shown.get("state") == "disabled"
    link = None
    if ctx.caller.role is Role.ADMIN and _SECRET_ID.fullmatch(str(shown.get("id"))):
        action = "enable" if disabled else "disable"
        link = {"href": f"/console/secrets/{shown['id']}/{action}", "text": f"{action.capitalize()}…"}
    return {"disabled": disabled, "reason": shown.get("state_reason"), "link": link}


async def _set_secret_state(request: web.Request, state: str) -> web.Response:
    """The confirmed form: the state, with the reason typed there (none when left empty)."""
    secret_id = request.match_info["secret_id"]
    done = f"/console/secrets/{secret_id}" if _SECRET_ID.fullmatch(secret_id) else "/console/secrets"

    async def act(ctx: RequestContext) -> Any:
        reason = (await request.post()).get("reason")
        return await request.app[SERVICES].secrets.set_state(
            ctx, secret_id, state, reason=reason if isinstance(reason, str) and reason else None
        )

    return await _confirmed(request, act, done)


@operator_routes.get("/console/secrets/{secret_id}/disable")
async def disable_secret_form(request: web.Request) -> web.Response:
    return await _review_page(request, "disable_secret", request.match_info["secret_id"])


@operator_routes.post("/console/secrets/{secret_id}/disable")
async def disable_secret(request: web.Request) -> web.Response:
    return await _set_secret_state(request, "disabled")


@operator_routes.get("/console/secrets/{secret_id}/enable")
async def enable_secret_form(request: web.Request) -> web.Response:
    return await _review_page(request, "enable_secret", request.match_info["secret_id"])


@operator_routes.post("/console/secrets/{secret_id}/enable")
async def enable_secret(request: web.Request) -> web.Response:
    return await _set_secret_state(request, "active")


# -- the operator checklist -----------------------------------------------------------------------


@operator_routes.get("/console/checklist")
async def checklist(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        service = request.app[SERVICES].checklist
        if service is None:
            raise NotFound("the checklist is not available", code="not_found")
        listed = await service.checklist(ctx, days=_days(request), limit=100)
        items = [
            {
                "id": item["id"],
                "what": item["what"],
                "why": item["why"],
                "action": item["action"],
                "count": item["count"],
                "entries": present.table(item["entries"]) if item["entries"] else [],
            }
            for item in listed["items"]
        ]
        return "checklist.html", {
            "title": "Operator checklist",
            "as_of": listed.get("as_of"),
            "items": items,
        }

    return await _page(request, build)


@operator_routes.get("/console/groups")
async def groups(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        listed = await request.app[SERVICES].policies.list_groups(ctx)
        rows = [[_cell(g["group"]), _cell(", ".join(g["members"]))] for g in listed]
        return _records("Groups", _section("groups", "Groups", ("Group", "Members"), rows, "No groups."))

    return await _page(request, build)


# -- policies -------------------------------------------------------------------------------------


@operator_routes.get("/console/policies")
async def policies(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        page = await _views(request).policies(ctx)
        rows = [
            [
                _cell(p["policy_id"], f"/console/policies/{p['policy_id']}"),
                _cell(p.get("version")),
                _cell(p.get("created_at")),
            ]
            for p in page["policies"]
        ]
        attached = [
            [
                _cell(a["id"], f"/console/attachments/{a['id']}/shadow" if a["mode"] == "shadow" else None),
                _cell(f"{a['policy_id']}@{a['version']}"),
                _cell(a["key_id"] or "every key"),
                _cell(a["mode"]),
                _cell(a["created_at"]),
            ]
            for a in page["attachments"]
        ]
        return _records(
            "Policies",
            _section(
                "policies", "Policies (latest versions)", ("Policy", "Version", "Created"), rows, "None."
            ),
            _section(
                "attachments",
                "Attachments (a shadow one links to its report)",
                ("Attachment", "Policy", "Key", "Mode", "Attached"),
                attached,
                "None.",
            ),
        )

    return await _page(request, build)


@operator_routes.get("/console/policies/{policy_id}")
async def policy(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        shown = await request.app[SERVICES].policies.get_policy(ctx, request.match_info["policy_id"])
        return _record(f"Policy {shown['policy_id']}", ("versions", "Versions", shown["versions"]))

    return await _page(request, build)


@operator_routes.get("/console/attachments/{attachment_id}/shadow")
async def shadow(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        report = await request.app[SERVICES].policies.shadow_report(ctx, request.match_info["attachment_id"])
        return _record("Shadow report", ("report", "What the shadow policy would have decided", report))

    return await _page(request, build)


# -- audit ----------------------------------------------------------------------------------------


def _target(resource: Any) -> str:
    if isinstance(resource, dict):
        return f"{resource.get('type', '')} {resource.get('id', '')}".strip()
    return "" if resource is None else str(resource)


def _before(request: web.Request) -> int | None:
    text = request.query.get("before", "")
    return int(text) if text.isdigit() and len(text) < 19 else None


@operator_routes.get("/console/audit")
async def audit(request: web.Request) -> web.Response:
    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        search = request.query.get("q", "")[:200]
        page = await _views(request).audit(ctx, before=_before(request), search=search)
        rows = []
        for line in page["events"]:
            event = line.get("event") or {}
            actor = event.get("actor") or {}
            rows.append(
                [
                    _cell(line.get("seq")),
                    _cell(line.get("at")),
                    _cell(line.get("kind")),
                    _cell(f"{actor.get('name', '')} ({actor.get('role', '')})" if actor else "the service"),
                    _cell(event.get("outcome")),
                    _cell(_target(event.get("resource"))),
                ]
            )
        columns = ("Seq", "At", "Kind", "Actor", "Outcome", "Target")
        query = {"before": page["start"], **({"q": search} if search else {})}
        more = f"/console/audit?{urlencode(query)}" if page["start"] > 0 else None
        return _records(
            "Audit log",
            _section(
                "events",
                f"Events {page['start'] + 1} to {page['end']} of {page['head']}",
                columns,
                rows,
                "No event matches.",
            ),
            intro=f"Verification: {page['verification']}. Check an export offline with signer audit verify.",
            search=search,
            search_action="/console/audit",
            more=more,
        )

    return await _page(request, build)
