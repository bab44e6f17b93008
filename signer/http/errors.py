"""The one place where errors become HTTP: RFC 9457 problem documents with a stable ``code``.

Domain errors (``signer.errors``) carry their status and code; aiohttp's own routing errors (404, 405, 413)
are turned into the same shape; anything else becomes a generic 500 with the request id, and its details go
to the log only. The one middleware (``signer.app.request_context``) calls these functions. A problem
document never carries a stack trace, SQL, a path, a key handle or a secret.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from signer.errors import SignerError

log = logging.getLogger("signer.http")

PROBLEM_TYPE = "application/problem+json"
_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def problem(status: int, code: str, detail: str, request_id: str, **extra: Any) -> web.Response:
    body = {
        "type": f"urn:signer:error:{code}",
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "code": code,
        "detail": detail,
        "request_id": request_id,
        **extra,
    }
    headers = {"X-Request-Id": request_id}
    if status in (409, 429) and isinstance(extra.get("retry_after"), int):
        headers["Retry-After"] = str(extra["retry_after"])
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="signer"'
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE, headers=headers)


def problem_for_error(exc: SignerError, request_id: str) -> web.Response:
    if exc.status >= 500:
        log.warning("request failed", extra={"request_id": request_id, "code": exc.code})
    return problem(exc.status, exc.code, exc.message, request_id, **exc.extra)


def problem_for_http(exc: web.HTTPException, request_id: str) -> web.Response:
    """aiohttp's own 4xx/5xx (no such route, wrong method, body too large) in the same shape."""
    code = _STATUS_CODES.get(exc.status, "http_error")
    detail = {
        404: "no such route",
        405: "method not allowed on this route",
        413: "request body too large",
    }.get(exc.status, exc.reason)
    response = problem(exc.status, code, detail, request_id)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def log_unhandled(request_id: str) -> None:
    """Inside ``except``: full details to the operator's log, nothing of them to the caller."""
    log.exception("unhandled error", extra={"request_id": request_id})
