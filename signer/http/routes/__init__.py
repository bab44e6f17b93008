"""The API's routes, one module per resource, and the list that registers them.

Each module declares its handlers with ``api.operation`` (``signer.http.contract``), which adds the
aiohttp route together with its contract (request model, response model, statuses, auth); importing the
module is what registers them. ``RESOURCE_MODULES`` is that list: a new resource is a new module here and
one entry below. Handlers stay thin: parse, call one service method, render. ``/openapi.json`` and
``/docs`` are generated from the same registry (``meta``). Must never hold a handler itself.
"""

from __future__ import annotations

from types import ModuleType

from signer.http.routes import (
    approvals,
    audit,
    audit_checkpoints,
    audit_export,
    audit_hmac,
    audit_retention,
    books,
    client_certs,
    grants,
    groups,
    health,
    identity,
    impact,
    jsonrpc,
    keys,
    kms,
    meta,
    policies,
    secret_keks,
    secret_refs,
    secret_versions,
    secrets,
    signing,
    webhooks,
)
from signer.http.routes.common import api, routes

RESOURCE_MODULES: tuple[ModuleType, ...] = (
    health,
    meta,
    identity,
    client_certs,
    keys,
    grants,
    signing,
    audit,
    audit_checkpoints,
    audit_export,
    audit_hmac,
    audit_retention,
    approvals,
    webhooks,
    groups,
    policies,
    secrets,
    secret_versions,
    secret_refs,
    secret_keks,
    jsonrpc,
    kms,
    impact,
    books,
)

# Paths whose handler may wait on purpose (bounded by the handler), beyond the request deadline.
LONG_POLL_ROUTES: frozenset[str] = frozenset().union(
    *(getattr(module, "LONG_POLL_PATHS", frozenset()) for module in RESOURCE_MODULES)
)

__all__ = ["LONG_POLL_ROUTES", "RESOURCE_MODULES", "api", "routes"]
