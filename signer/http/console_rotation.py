"""Rotating a secret from the operator's console: the impact review, the new value, the result.

``/console/secrets/<id>/rotate`` shows what a rotation changes before anything does (the impact
service's dry run for ``rotate_secret``, said in words by ``effects``: who gets the new value, who
fetched it lately and which version, the declared and the pinned consumers, the overlap window and
what then happens to the old version), then the form: a new value generated from the secret's own rule
(a generated secret) or typed into password inputs (``autocomplete=off``; never put back in any page,
not even after a refusal), optionally staged (read by number only until promoted), behind the
session's CSRF token. The form carries the revision the page was read at and the rotation is
check-and-set on it (``IfMatch``): a rotation or change made meanwhile refuses it with a clear message
instead of replacing the other one's value unseen. The POST answers with a redirect (the value is not
in the browser's history); the result page (``/rotated?version=N``) shows the new version and when the
old one stops being readable, and a staged one can be promoted from there (check-and-set again).

The action is ``SecretsService.set_value``, the API's own rotation: the same ``secret.rotate`` event
carrying the impact report, computed in the rotation's transaction. Handlers stay thin: parse the form,
call one service, render.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from signer.errors import NotFound, SignerError
from signer.http import console_present as present
from signer.http import console_render as render
from signer.http.console import FORGED, csrf_ok, session, to_login, who
from signer.http.state import SERVICES
from signer.identity import Role
from signer.services.context import RequestContext
from signer.services.secret_etag import IfMatch

rotation_routes = web.RouteTableDef()

_NUMBER = re.compile(r"[0-9]{1,12}")
_FIELD = "value."
CHANGED = (
    "Not rotated: the secret changed after you opened this page (another rotation or change was made "
    "meanwhile), so nothing was written and the other change stands. Review the impact again and "
    "rotate from the secret as it is now."
)


def duration(seconds: int) -> str:
    """``90061`` -> ``1 day 1 h 1 min`` (whole minutes; seconds only below a minute)."""
    if seconds < 60:
        return f"{seconds} s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    parts += [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes else []
    return " ".join(parts)


def _times(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _subjects(entries: list[dict[str, Any]], operation: str) -> list[str]:
    return [
        f"{e['subject']} (through {', '.join(e['through'])})"
        for e in entries
        if operation in e.get("operations", [])
    ]


def _follows(pins: dict[str, int], workload: str) -> str:
    return f"pinned to version {pins[workload]}" if workload in pins else "follows the current version"


def effects(report: dict[str, Any], secret: dict[str, Any]) -> list[tuple[str, str]]:
    """The rotation's impact in words, one (heading, sentence) per concern; plain data in and out."""
    resource = (report.get("resources") or [{}])[0]
    versions = report.get("versions") or {}
    current = versions.get("current", secret.get("current_version"))
    upcoming = versions.get("next", (current or 0) + 1)
    days = report.get("days")
    readers = _subjects(resource.get("keep") or [], "read_value")
    fetched = resource.get("fetched") or []
    consumers = resource.get("consumers") or []
    pins = secret.get("pins") or {}
    overlap = secret.get("overlap_seconds")
    out = [
        ("New version", f"Version {upcoming} replaces version {current} as the one fetches get."),
        (
            "Who gets the new value",
            "At their next fetch: " + "; ".join(readers)
            if readers
            else "Nobody holds read_value on this secret now.",
        ),
        (
            f"Fetched in the last {days} days",
            "; ".join(
                f"{f.get('workload') or 'no workload named'} as {f['principal_id']}: "
                f"{_times(f['fetches'], 'fetch', 'fetches')}, last at {f['last_at']} "
                f"(version {f.get('last_version') or 'current'})"
                for f in fetched
            )
            + (
                f" (the {len(fetched)} most frequent of {resource['fetchers_total']})"
                if resource.get("fetchers_total", 0) > len(fetched)
                else ""
            )
            if fetched
            else f"Nobody fetched it in the last {days} days.",
        ),
        (
            "Declared consumers",
            "; ".join(f"{c['name']} ({_follows(pins, c['name'])})" for c in consumers)
            if consumers
            else "None declared.",
        ),
        (
            "Pinned consumers",
            "; ".join(
                f"{workload} stays on version {number} until its pin changes"
                for workload, number in sorted(pins.items())
            )
            if pins
            else "None: every consumer follows the current version.",
        ),
        (
            "Overlap window",
            f"{duration(overlap)}: version {current} stays readable that long after the rotation (after "
            "the promotion, when staged), then the service disables it (audited as "
            "secret.version_disabled, reason overlap_ended)."
            if overlap
            else f"None set: version {current} stays enabled (readable by its number and through a pin) "
            "until someone disables it.",
        ),
    ]
    older = report.get("older_grants") or []
    if older:
        out.append(
            (
                "Grants used only for older versions",
                "; ".join(f"{g['grant_id']} ({g['principal_id']}): {g['advice']}" for g in older),
            )
        )
    references = resource.get("references") or []
    if references:
        out.append(
            (
                "References resolved to it",
                "; ".join(f"{r['reference']} ({r['principal_id']}, {r['uses']} uses)" for r in references),
            )
        )
    return out


def _rule_words(rule: dict[str, Any]) -> str:
    """A generation rule as text, its kind first: ``kind hex, bytes 16, field value``."""
    ordered = sorted(rule.items(), key=lambda item: (item[0] != "kind", item[0]))
    return ", ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in ordered)


def _days(request: web.Request) -> int:
    text = request.query.get("days", "")
    return int(text) if text.isdigit() and int(text) <= 3660 else 30


async def _page(
    request: web.Request, title: str, build: Callable[[RequestContext], Awaitable[tuple[str, dict[str, Any]]]]
) -> web.Response:
    ctx = await session(request)
    if ctx is None:
        return to_login(request)
    try:
        template, context = await build(ctx)
    except SignerError as exc:
        return render.message(title, exc.message, exc.status, **who(request, ctx))
    return render.page(template, **context, **who(request, ctx))


@rotation_routes.get("/console/secrets/{secret_id}/rotate")
async def rotate_form(request: web.Request) -> web.Response:
    secret_id = request.match_info["secret_id"]

    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        services = request.app[SERVICES]
        if services.impact is None:
            raise NotFound("impact review is not available", code="not_found")
        shown = await services.secrets.show(ctx, secret_id)
        report = await services.impact.review(ctx, "rotate_secret", secret_id, _days(request))
        versions = shown.get("versions") or []
        current = next((v for v in versions if v["version"] == shown["current_version"]), None)
        summary = report.get("summary", {})
        details = {k: v for k, v in report.items() if k != "summary"}
        rule = shown.get("generation")
        held = shown.get("backend") == "sealed"
        name = f"{shown.get('folder')}/{shown.get('name')}"
        return "rotate.html", {
            "title": f"Rotate secret {name}",
            "secret_id": shown["id"],
            "consequence": "rotating gives every reader a new value at its next fetch (unless staged); "
            "the old version follows the overlap window below. The rotation is audited with this report.",
            "effects": effects(report, shown),
            "subject": present.table({k: "none" if v in ([], {}) else v for k, v in summary.items()}),
            "details": present.table(details),
            "rule": _rule_words(rule) if isinstance(rule, dict) else None,
            "fields": (current or {}).get("fields") or [],
            "current_version": shown["current_version"],
            "revision": shown["revision"],
            "held": held,
            "may_act": ctx.caller.role is Role.ADMIN and held,
        }

    return await _page(request, "Not available", build)


@rotation_routes.post("/console/secrets/{secret_id}/rotate")
async def rotate(request: web.Request) -> web.Response:
    ctx = await session(request)
    if ctx is None:
        return render.redirect("/console/login")
    form = await request.post()
    if not csrf_ok(request, form):
        return render.message("Refused", FORGED, 403)
    secret_id = request.match_info["secret_id"]
    back = {"back": f"/console/secrets/{secret_id}/rotate"}
    revision = str(form.get("revision", ""))
    mode = str(form.get("mode", ""))
    if not _NUMBER.fullmatch(revision) or mode not in ("generate", "fields"):
        return render.message(
            "Not rotated", "The form was incomplete: load it again.", 400, **back, **who(request, ctx)
        )
    # The new values go from the form to the service and nowhere else: no page, log or message.
    fields = (
        {str(k)[len(_FIELD) :]: str(v) for k, v in form.items() if str(k).startswith(_FIELD)}
        if mode == "fields"
        else None
    )
    try:
        shown = await request.app[SERVICES].secrets.set_value(
            ctx,
            secret_id,
            fields,
            from_rule=mode == "generate",
            stage=form.get("stage") == "1",
            if_match=IfMatch(revision=int(revision)),
        )
    except SignerError as exc:
        text = CHANGED if exc.code == "if_match_failed" else f"{exc.code}: {exc.message}"
        return render.message("Not rotated", text, exc.status, **back, **who(request, ctx))
    newest = max(v["version"] for v in shown["versions"])
    return render.redirect(f"/console/secrets/{shown['id']}/rotated?version={newest}")


@rotation_routes.get("/console/secrets/{secret_id}/rotated")
async def rotated(request: web.Request) -> web.Response:
    secret_id = request.match_info["secret_id"]
    wanted = request.query.get("version", "")

    async def build(ctx: RequestContext) -> tuple[str, dict[str, Any]]:
        shown = await request.app[SERVICES].secrets.show(ctx, secret_id)
        versions = shown.get("versions") or []
        made = next((v for v in versions if _NUMBER.fullmatch(wanted) and v["version"] == int(wanted)), None)
        if made is None:
            raise NotFound("no such version of the secret", code="secret_version_not_found")
        current = shown["current_version"]
        previous = [v for v in versions if v["state"] == "previous"]
        staged = made["state"] == "staged"
        if staged:
            outcome = (
                f"Version {made['version']} is staged: fetches still get version {current}. Read it by "
                "its number to test it, then promote it below."
            )
        elif made["version"] == current:
            outcome = f"Version {made['version']} is current: every fetch gets it from now on."
        else:
            outcome = f"Version {made['version']} is {made['state']}; version {current} is current."
        old = [
            (
                f"Overlap end (version {v['version']})",
                f"{v['readable_until']}: version {v['version']} stays readable until then, then the "
                "service disables it",
            )
            for v in previous
        ]
        overlap = shown.get("overlap_seconds")
        if staged:
            old.append(
                (
                    "Overlap",
                    f"starts when version {made['version']} is promoted: version {current} then stays "
                    f"readable for {duration(overlap)}"
                    if overlap
                    else f"none set: version {current} stays enabled after the promotion until disabled",
                )
            )
        elif not previous:
            old.append(("Overlap", "none running: older versions stay as the secret's page shows them"))
        pins = shown.get("pins") or {}
        return "rotated.html", {
            "title": f"Rotated secret {shown.get('folder')}/{shown.get('name')}",
            "secret_id": shown["id"],
            "version": made["version"],
            "outcome": outcome,
            "promoted": request.query.get("promoted") == "1" and not staged,
            "facts": [
                ("New version", str(made["version"])),
                ("State", made["state"]),
                ("Made at", str(made["created_at"])),
                ("Made by", str(made["created_by"])),
                *old,
                *[(f"Pinned: {w}", f"stays on version {n}") for w, n in sorted(pins.items())],
            ],
            "staged": staged,
            "revision": shown["revision"],
            "may_act": ctx.caller.role is Role.ADMIN,
        }

    return await _page(request, "Not available", build)


@rotation_routes.post("/console/secrets/{secret_id}/versions/{version}/promote")
async def promote(request: web.Request) -> web.Response:
    ctx = await session(request)
    if ctx is None:
        return render.redirect("/console/login")
    form = await request.post()
    if not csrf_ok(request, form):
        return render.message("Refused", FORGED, 403)
    secret_id = request.match_info["secret_id"]
    version = request.match_info["version"]
    revision = str(form.get("revision", ""))
    back = {"back": f"/console/secrets/{secret_id}"}
    if not _NUMBER.fullmatch(version) or not _NUMBER.fullmatch(revision):
        return render.message(
            "Not promoted", "The form was incomplete: load it again.", 400, **back, **who(request, ctx)
        )
    try:
        await request.app[SERVICES].secret_versions.promote(
            ctx, secret_id, int(version), IfMatch(revision=int(revision))
        )
    except SignerError as exc:
        text = (
            "Not promoted: the secret changed after you opened this page; nothing was written. Load it again."
            if exc.code == "if_match_failed"
            else f"{exc.code}: {exc.message}"
        )
        return render.message("Not promoted", text, exc.status, **back, **who(request, ctx))
    return render.redirect(f"/console/secrets/{secret_id}/rotated?version={int(version)}&promoted=1")
