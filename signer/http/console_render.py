"""The console's one home for HTML: Jinja2 templates (autoescaped: every value is text unless a template
says otherwise, and none does), the stylesheet and the little JavaScript served from the app, and the
headers every console response carries.

- Static files live in ``console_static/`` and are served at ``/console/static/<name>``; each page links
  them with Subresource Integrity, and the Content-Security-Policy allows the script by its sha384 hash
  only (no inline script, no ``eval``, nothing from another origin), styles from this origin only.
- ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'`` refuse framing (clickjacking);
  ``form-action 'self'`` keeps forms on this origin; ``connect-src 'none'``: the script talks to nobody.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

_PACKAGE = resources.files("signer.http")


def _static(name: str) -> tuple[bytes, str]:
    data = (_PACKAGE / "console_static" / name).read_bytes()
    return data, "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


STATIC = {
    "console.css": (*_static("console.css"), "text/css"),
    "console.js": (*_static("console.js"), "text/javascript"),
}
INTEGRITY = {name: value[1] for name, value in STATIC.items()}

CSP = (
    "default-src 'none'; "
    f"script-src '{INTEGRITY['console.js']}'; "
    "style-src 'self'; img-src 'self'; connect-src 'none'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("signer.http", "console_templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def page(template: str, status: int = 200, **context: Any) -> web.Response:
    """Render a template into a response with the console's headers."""
    context.setdefault("signed_in", None)
    context.setdefault("csrf", "")
    context.setdefault("operator", False)
    html = _ENV.get_template(template).render(integrity=INTEGRITY, **context)
    return web.Response(status=status, text=html, content_type="text/html", charset="utf-8", headers=HEADERS)


def message(title: str, text: str, status: int, **context: Any) -> web.Response:
    return page("message.html", status, title=title, text=text, **context)


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def static(name: str) -> web.Response:
    found = STATIC.get(name)
    if found is None:
        raise web.HTTPNotFound(headers=HEADERS)
    data, _, kind = found
    return web.Response(body=data, content_type=kind, charset="utf-8", headers=HEADERS)
