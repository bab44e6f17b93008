"""The API contract: one registry that both routes the requests and describes them.

``Api.operation(...)`` decorates a handler: it adds the aiohttp route AND records the operation's contract
(method, path, request model, response model, success status, auth, error statuses, query parameters),
so the OpenAPI document cannot drift from the code: a route exists only if it was registered here, and a
test fails if any aiohttp route is missing from the document. ``openapi(api)`` builds an OpenAPI 3.1
document from the same pydantic models that validate request bodies (JSON schema in validation mode) and
from the response models in ``signer.http.schemas`` (serialization mode); ``render_html`` turns it into a
self-contained reference page (no script, no external resource).

The request schemas state every rule a validator applies that JSON Schema can say. What it cannot say
is declared once, in ``SEMANTIC_REFUSALS`` (and written into the document's description): refusals that a
request satisfying its schema may still meet, because they depend on the payload's meaning (an EVM
transaction, EIP-712 typed data), on two fields at once, or on the server's configuration. The contract
test lets exactly these through its "schema-valid request rejected" check.


The document is built once, on first use. Per request, only two thin wrappers run around each handler:
unknown query parameters are refused, and a refusal of an authenticated state-changing call is audited
(``signer.http.refusals``), so no handler has to remember either.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Literal, TypeVar, get_args

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from signer.errors import InvalidRequest, SignerError
from signer.http.refusals import audits_refusals, record_refusal
from signer.http.schemas import Problem

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])

Auth = Literal["bearer", "none", "metrics"]

JSON = "application/json"
PROBLEM = "application/problem+json"

_TITLES = {
    200: "OK",
    201: "Created",
    400: "Malformed or invalid request (bad JSON, unknown or invalid field, Host not allowed)",
    401: "Missing, malformed, expired or revoked token",
    403: "Not allowed for this caller (role, grant or policy; `reasons` says why)",
    404: "Unknown resource (or one the caller may not see)",
    405: "Method not allowed on this path",
    409: "Conflict with the resource's state",
    413: "Request body too large",
    422: "Operation impossible for this resource",
    429: "Rate limited",
    500: "Internal error (details only in the operator's log)",
    503: "HSM, database or audit log unavailable",
    504: "Deadline exceeded",
}


@dataclass(frozen=True, slots=True)
class SemanticRefusal:
    """A 400 that a schema-valid request may still get from ``operations``: ``codes`` (problem codes),
    limited to problem ``field``s matching ``field`` when given (a regular expression), and why."""

    operations: tuple[str, ...]
    codes: frozenset[str]
    why: str
    field: str | None = None


# The eth parsers' codes for a transaction or typed data whose content is not one (signer/eth/).
_PAYLOAD_CODES = frozenset(
    {
        "invalid_transaction",
        "invalid_typed_data",
        "invalid_field",
        "missing_field",
        "unknown_field",
        "value_out_of_range",
        "invalid_hex",
        "invalid_address",
        "invalid_chain_id",
        "missing_chain_id",
    }
)

SEMANTIC_REFUSALS: tuple[SemanticRefusal, ...] = (
    SemanticRefusal(
        ("sign_transaction", "dry_run"),
        _PAYLOAD_CODES,
        "a transaction's fields, or `raw`, must make an EVM transaction (type 0, 1, 2 or 4) the eth "
        "parser accepts; the schema states only their container",
    ),
    SemanticRefusal(
        ("sign_authorization", "dry_run"),
        _PAYLOAD_CODES,
        "an authorisation's chain id is a uint256 and its nonce a uint64 (numbers, 0x hex or decimal "
        "strings), and its delegate an address with a valid EIP-55 checksum if mixed-case",
    ),
    SemanticRefusal(
        ("sign_typed_data", "dry_run"),
        _PAYLOAD_CODES,
        "`typed_data` must be EIP-712 typed data (v4) whose message matches its types",
    ),
    SemanticRefusal(
        ("create_policy",),
        frozenset({"invalid_policy"}),
        "rule ids are unique within a document",
        field=r"rules\[\d+\]\.id",
    ),
    SemanticRefusal(
        ("create_policy",),
        frozenset({"invalid_policy"}),
        "a time window ends after it starts",
        field=r"rules\[\d+\]\.windows\[\d+\]\.end",
    ),
    SemanticRefusal(
        ("resolve_secrets",),
        frozenset({"workspace_required"}),
        "a reference by name alone needs `workspace` (the folder it is looked up from)",
    ),
    SemanticRefusal(
        ("set_group_webhook",),
        frozenset({"webhook_destination_not_allowed"}),
        "the host must resolve to an allowed destination (never loopback, private or link-local; within "
        "webhook_allowed_destinations when that is set)",
    ),
    SemanticRefusal(
        ("audit_consistency_proof",),
        frozenset({"invalid_field"}),
        "`first` is at most `second` (two fields at once)",
        field=r"first",
    ),
    SemanticRefusal(
        ("audit_inclusion_proof",),
        frozenset({"invalid_field"}),
        "`seq` is at most `size` (two fields at once)",
        field=r"seq",
    ),
    SemanticRefusal(
        ("register_client_certificate",),
        frozenset({"invalid_certificate", "certificate_expired"}),
        "`certificate` must be one PEM-encoded X.509 certificate that has not expired",
        field=r"certificate",
    ),
    SemanticRefusal(
        ("put_address",),
        frozenset({"invalid_label", "invalid_note"}),
        "an address book label is not blank, and neither it nor the note holds control or "
        "bidirectional-override characters",
    ),
    SemanticRefusal(
        ("compromise_key", "destroy_key"),
        frozenset({"confirmation_mismatch"}),
        "`confirm` is the key's label, exactly (the transition is irreversible)",
        field=r"confirm",
    ),
    SemanticRefusal(
        ("compromise_key",),
        frozenset({"invalid_compromised_at"}),
        "`compromised_at` is not in the future",
        field=r"compromised_at",
    ),
    SemanticRefusal(
        ("register_functions",),
        frozenset({"invalid_signature", "invalid_abi", "invalid_function"}),
        "exactly one of `signature` (a canonical Solidity signature such as transfer(address,uint256)) "
        "or `abi` (a contract ABI whose functions have valid ABI types)",
    ),
)

# JSON Schema counts 1.0 as an integer; the request parsers do not (a policy says why: amounts are
# decimal strings, and a number is an integer only when written as one).
INTEGER_NOTE = "Integers are written without a fraction or exponent: 1, never 1.0 or 1e0."


@dataclass(frozen=True, slots=True)
class Query:
    """A query parameter: its JSON schema and what it means."""

    name: str
    schema: Mapping[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    """An OpenAPI link: a value from this operation's response feeds a parameter of another operation."""

    operation_id: str
    parameters: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Operation:
    operation_id: str
    method: str
    path: str
    summary: str
    tag: str
    auth: Auth
    who: str
    request: type[BaseModel] | None
    status: int
    response: Any
    media_type: str
    errors: tuple[int, ...]
    query: tuple[Query, ...]
    links: Mapping[str, Link]
    other_responses: Mapping[int, Any] = field(default_factory=dict)
    headers: Mapping[str, Any] = field(default_factory=dict)
    path_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class Api:
    """Routes plus their contract. ``routes`` is what ``create_app`` adds to the application."""

    def __init__(self, title: str, version: str, description: str = "") -> None:
        self.title = title
        self.version = version
        self.description = description
        self.routes = web.RouteTableDef()
        self.operations: list[Operation] = []

    def operation(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        response: Any,
        status: int = 200,
        request: type[BaseModel] | None = None,
        auth: Auth = "bearer",
        who: str = "",
        errors: tuple[int, ...] = (),
        query: tuple[Query, ...] = (),
        links: Mapping[str, Link] | None = None,
        media_type: str = JSON,
        other_responses: Mapping[int, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        path_schemas: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Callable[[H], H]:
        def register(handler: H) -> H:
            self.operations.append(
                Operation(
                    operation_id=handler.__name__,
                    method=method.upper(),
                    path=path,
                    summary=summary,
                    tag=tag,
                    auth=auth,
                    who=who,
                    request=request,
                    status=status,
                    response=response,
                    media_type=media_type,
                    errors=tuple(sorted(set(errors) | _implied_errors(auth, request))),
                    query=query,
                    links=dict(links or {}),
                    other_responses=dict(other_responses or {}),
                    headers=dict(headers or {}),
                    path_schemas=dict(path_schemas or {}),
                )
            )
            checked = _refuse_unknown_query(handler, query)
            if audits_refusals(method, auth, handler.__name__):
                checked = _audit_refusals(checked, handler.__name__, path)
            if method.upper() == "GET":
                self.routes.get(path)(checked)  # with HEAD beside it, as aiohttp does for every GET
            else:
                self.routes.route(method.upper(), path)(checked)
            return handler

        return register


def _audit_refusals(
    handler: Callable[[web.Request], Any], operation_id: str, path: str
) -> Callable[[web.Request], Any]:
    """Every refusal of an authenticated caller is audited (``signer.http.refusals``), then re-raised."""

    async def audited(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except SignerError as exc:
            await record_refusal(request, operation_id, path, exc)
            raise

    audited.__name__ = operation_id
    audited.__doc__ = handler.__doc__
    return audited


def _refuse_unknown_query(handler: H, query: tuple[Query, ...]) -> Callable[[web.Request], Any]:
    """Unknown query parameters are refused like unknown body fields (a typo must not be ignored), and
    so is a parameter given twice (like a duplicate key in a body)."""
    allowed = frozenset(q.name for q in query)

    async def checked(request: web.Request) -> web.StreamResponse:
        if request.query_string:
            if len(request.query) != len(set(request.query)):
                # Which of two values counts is a guess a proxy or a client may make differently.
                raise InvalidRequest(
                    "a query parameter appears more than once", code="duplicate_query_parameter"
                )
            unknown = sorted(set(request.query) - allowed)
            if unknown:
                # The unknown name is the client's own text: say which names are allowed instead.
                raise InvalidRequest(
                    f"unknown query parameter (allowed: {', '.join(sorted(allowed)) or 'none'})",
                    code="unknown_query_parameter",
                    allowed=sorted(allowed),
                )
        return await handler(request)

    checked.__name__ = handler.__name__
    checked.__doc__ = handler.__doc__
    return checked


def _implied_errors(auth: Auth, request: type[BaseModel] | None) -> set[int]:
    """Statuses every operation of a kind can answer: the middleware's and the error mapping's."""
    errors = {400, 500, 504}  # Host not allowed; an internal error; the request deadline
    if auth != "none":
        errors |= {401, 403}
    if request is not None:
        errors |= {413}
    return errors


# -- the document ---------------------------------------------------------------------------------

_PATH_PARAM = re.compile(r"{(\w+)}")
# A path parameter's schema unless the operation names a stricter one (``path_schemas``): ids.
_PATH_ID = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_.-]+$"}


def _models(value: Any) -> list[type[BaseModel]]:
    if isinstance(value, type) and issubclass(value, BaseModel):
        return [value]
    if isinstance(value, UnionType):
        return [m for arg in get_args(value) for m in _models(arg)]
    return []


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _schema_for(value: Any) -> dict[str, Any]:
    models = _models(value)
    if not models:
        return dict(value) if isinstance(value, Mapping) else {}
    if len(models) == 1:
        return _ref(models[0])
    return {"anyOf": [_ref(m) for m in models]}


_REQUEST_ID_HEADER = {
    "X-Request-Id": {
        "description": "the request id (the caller's, if it was 1-64 of A-Za-z0-9._-), also in the audit log",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
    }
}


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": _TITLES.get(status, "Error"),
        "headers": dict(_REQUEST_ID_HEADER),
        "content": {PROBLEM: {"schema": _ref(Problem)}},
    }


def openapi(api: Api) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every registered operation."""
    wanted: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (Problem, "serialization")
    ]
    for op in api.operations:
        if op.request is not None:
            wanted.append((op.request, "validation"))
        for value in (op.response, *op.other_responses.values()):
            wanted.extend((m, "serialization") for m in _models(value))
    unique = list(dict.fromkeys(wanted))
    _, defs = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    schemas = dict(sorted(defs.get("$defs", {}).items()))

    paths: dict[str, dict[str, Any]] = {}
    for op in api.operations:
        parameters: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": dict(op.path_schemas.get(name, _PATH_ID)),
            }
            for name in _PATH_PARAM.findall(op.path)
        ]
        parameters += [
            {
                "name": q.name,
                "in": "query",
                "required": q.required,
                "description": q.description,
                "schema": dict(q.schema),
            }
            for q in op.query
        ]
        success: dict[str, Any] = {
            "description": _TITLES.get(op.status, "Success"),
            "headers": {**_REQUEST_ID_HEADER, **op.headers},
        }
        if op.response is not None:
            success["content"] = {op.media_type: {"schema": _schema_for(op.response)}}
        if op.links:
            success["links"] = {
                name: {"operationId": link.operation_id, "parameters": dict(link.parameters)}
                for name, link in op.links.items()
            }
        responses: dict[str, Any] = {str(op.status): success}
        for status, value in op.other_responses.items():
            responses[str(status)] = {
                "description": _TITLES.get(status, "Other"),
                "headers": dict(_REQUEST_ID_HEADER),
                "content": {JSON: {"schema": _schema_for(value)}},
            }
        for status in op.errors:
            responses.setdefault(str(status), _problem_response(status))
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": dict(sorted(responses.items())),
        }
        if op.who:
            entry["description"] = f"Who: {op.who}."
        if parameters:
            entry["parameters"] = parameters
        if op.request is not None:
            entry["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(op.request)}}}
        if op.auth == "bearer":
            entry["security"] = [{"bearerAuth": []}]
        elif op.auth == "metrics":
            # Open to loopback callers when so configured; otherwise a bearer token.
            entry["security"] = [{}, {"bearerAuth": []}]
        else:
            entry["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = entry

    refusals = "; ".join(
        f"{', '.join(r.operations)}: {r.why} ({', '.join(sorted(r.codes))})" for r in SEMANTIC_REFUSALS
    )
    description = (
        f"{api.description}\n\n{INTEGER_NOTE} Refusals (400) a request that matches its schema may "
        f"still meet: {refusals}."
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": api.title, "version": api.version, "description": description},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An access token (`sat_...`) issued by POST /v1/principals, "
                    "/v1/principals/{principal_id}/tokens or /v1/auth/refresh.",
                }
            },
        },
    }


# -- the reference page ---------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2.5rem}h3{margin:1.8rem 0 .3rem}
code,pre{font:13px/1.35 ui-monospace,monospace}pre{background:#f5f5f5;padding:.6rem;overflow:auto}
.m{display:inline-block;min-width:4.5rem;font-weight:bold}.get{color:#06c}.post{color:#080}
.delete{color:#b00}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _schema_link(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(_schema_link(s) for s in schema["anyOf"])
    return f"<code>{_e(json.dumps(schema))}</code>"


def render_html(document: Mapping[str, Any]) -> str:
    """A self-contained HTML reference (inline style, no script, no external resource)."""
    info = document["info"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(info['title'])} API reference</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(info['title'])} <small>{_e(info['version'])}</small></h1>",
        f"<p>{_e(info.get('description', ''))}</p>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Authentication: '
        "<code>Authorization: Bearer &lt;access token&gt;</code>. Errors are RFC 9457 "
        '<a href="#schema-Problem">problem documents</a>.</p>',
        "<h2>Operations</h2>",
    ]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            auth = (
                "bearer token"
                if op.get("security") == [{"bearerAuth": []}]
                else ("none" if op.get("security") == [] else "loopback, or bearer token")
            )
            out.append(
                f'<h3 id="{_e(op["operationId"])}"><span class="m {_e(method)}">{_e(method.upper())}</span>'
                f"<code>{_e(path)}</code></h3><p>{_e(op['summary'])} {_e(op.get('description', ''))}"
                f"<br>Auth: {_e(auth)}</p>"
            )
            if op.get("parameters"):
                out.append("<table><tr><th>parameter</th><th>in</th><th>schema</th><th>meaning</th></tr>")
                for p in op["parameters"]:
                    out.append(
                        f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
                        f"<td>{_schema_link(p['schema'])}</td><td>{_e(p.get('description', ''))}</td></tr>"
                    )
                out.append("</table>")
            if "requestBody" in op:
                body = op["requestBody"]["content"][JSON]["schema"]
                out.append(f"<p>Request body (<code>{JSON}</code>): {_schema_link(body)}</p>")
            out.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
            for status, response in op["responses"].items():
                bodies = ", ".join(
                    f"<code>{_e(media)}</code> {_schema_link(content.get('schema', {}))}"
                    for media, content in response.get("content", {}).items()
                )
                out.append(
                    f"<tr><td>{_e(status)}</td><td>{_e(response['description'])}</td><td>{bodies}</td></tr>"
                )
            out.append("</table>")
    out.append("<h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        out.append(f'<h3 id="schema-{_e(name)}">{_e(name)}</h3><pre>{_e(json.dumps(schema, indent=2))}</pre>')
    out.append("</body></html>")
    return "\n".join(out)
