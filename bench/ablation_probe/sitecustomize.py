"""Loaded by ``bench/fetch_ablation.py`` into the server's processes (``PYTHONPATH``), never by the service.

Lets one request leave out parts of the secret-fetch path, so the bench can charge each part its CPU:
a request whose ``X-Ablate`` header lists parts (comma-separated) skips them; a request without the
header runs the real path untouched. Parts:

- ``access_log``, ``metrics``: the access line and the request metrics of ``signer.app``'s middleware;
- ``body``: the body's parsing and validation (the body is still read);
- ``auth``: authentication (only with ``service``: the service needs the caller);
- ``service``: the whole ``SecretsService.fetch`` (a fixed answer of the same shape);
- ``anomalies``: the anomaly detector's signals before judging and its count after;
- ``commit``: the store's group commit of the request (nothing written, no audit event);
- ``audit``, ``judge_again``, ``settle``: inside the commit, the audit event (built and appended),
  the exact judgement under the write lock, and "last fetched".

The header is read where the route asks for the caller, into a context variable the patched parts
read; inside the commit (which the store's batch runs in another task) the parts travel on the
request's ``_InFlight.claim``, which is None for a request without an Idempotency-Key (the bench sends
none). Nothing of a request's values is recorded. With ``ABLATION_PROBE`` unset this does nothing.
"""

from __future__ import annotations

import builtins
import contextvars
import os
import sys
from typing import Any

_ON = bool(os.environ.get("ABLATION_PROBE"))
_PARTS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("ablate", default=frozenset())
_ANSWER = {"secret_id": "s" * 26, "name": "bench", "version": 1, "values": {"STRIPE_SECRET": "v" * 40}}


def _install_routes(r: Any) -> None:
    from aiohttp import web

    original_context, original_body = r.signing_context, r.parse_body

    async def signing_context(request: web.Request) -> Any:
        header = request.headers.get("X-Ablate")
        if header:
            _PARTS.set(frozenset(header.split(",")))
            if "auth" in _PARTS.get() and "service" in _PARTS.get():
                return None
        return await original_context(request)

    class _Body:
        version = field = backend_version = approval_id = None
        workload = "bench"

    async def parse_body(request: web.Request, model: Any, limit: int) -> Any:
        if "body" in _PARTS.get():
            await request.read()
            return _Body
        return await original_body(request, model, limit)

    r.signing_context, r.parse_body = signing_context, parse_body


def _install_app(app: Any) -> None:
    original_access, metrics = app.access, app.metrics
    original_observe = metrics.observe_request

    def access(*args: Any, **kwargs: Any) -> None:
        if "access_log" not in _PARTS.get():
            original_access(*args, **kwargs)

    def observe_request(*args: Any) -> None:
        if "metrics" not in _PARTS.get():
            original_observe(*args)

    app.access, metrics.observe_request = access, observe_request


def _install_services(secrets: Any, anomalies: Any, pipeline: Any, commit: Any) -> None:
    original_fetch = secrets.SecretsService.fetch

    async def fetch(self: Any, ctx: Any, secret_id: str, **kwargs: Any) -> Any:
        if "service" in _PARTS.get():
            return dict(_ANSWER)
        return await original_fetch(self, ctx, secret_id, **kwargs)

    secrets.SecretsService.fetch = fetch
    detector = anomalies.AnomalyDetector
    original_signals, original_observe = detector.signals, detector.observe

    async def signals(self: Any, ctx: Any) -> Any:
        if "anomalies" in _PARTS.get():
            return frozenset()
        return await original_signals(self, ctx)

    def observe(self: Any, *args: Any, **kwargs: Any) -> None:
        if "anomalies" not in _PARTS.get():
            original_observe(self, *args, **kwargs)

    detector.signals, detector.observe = signals, observe
    original_submit = commit.Store.submit

    async def submit(self: Any, unit: Any, *, rerunnable: bool = False, relinkable: bool = False) -> Any:
        parts = _PARTS.get()
        if relinkable and parts:
            flight = unit.args[0]
            if "commit" in parts:
                return flight.response
            flight.claim = ("ablate", parts)
        return await original_submit(self, unit, rerunnable=rerunnable, relinkable=relinkable)

    commit.Store.submit = submit
    original_commit = pipeline.DecisionPipeline.commit

    async def commit_unit(self: Any, flight: Any, writer: Any) -> Any:
        claim = flight.claim
        if not (isinstance(claim, tuple) and claim[0] == "ablate"):
            return await original_commit(self, flight, writer)
        # DecisionPipeline.commit for an allowed request without an Idempotency-Key, parts left out.
        parts = claim[1]
        order, path, judged = flight.order, flight.path, flight.judged
        now = flight.started
        current = await path.reload(self, writer, order, judged.facts, now)
        if "judge_again" in parts:
            decision = judged.decision
        else:
            decision = await self._judge_exactly(writer, flight, current, now)
        await writer.ledger.reserve([])
        if "audit" not in parts:
            summary = pipeline.decision_summary(decision)
            writer.append_audit(
                pipeline._audit_event(flight.event, pipeline.Outcome.ALLOWED, decision=summary)
            )
        flight.allowed = decision
        if "settle" not in parts:
            await path.settle(writer, flight.response)
            if judged.prepared.settles is not None:
                await judged.prepared.settles(writer, current.resource)
        return flight.response

    pipeline.DecisionPipeline.commit = commit_unit


_pending = {"routes": True, "app": True, "services": True}
_import = builtins.__import__


def _has(name: str, attribute: str) -> bool:
    return hasattr(sys.modules.get(name), attribute)


def _watching_import(name: str, *args: Any, **kwargs: Any) -> Any:
    module = _import(name, *args, **kwargs)
    if _pending["routes"] and _has("signer.http.routes.secrets", "fetch_secret"):
        _pending["routes"] = False
        _install_routes(sys.modules["signer.http.routes.secrets"])
    if _pending["app"] and _has("signer.app", "request_context"):
        _pending["app"] = False
        _install_app(sys.modules["signer.app"])
    if (
        _pending["services"]
        and _has("signer.services.secrets", "SecretsService")
        and _has("signer.services.anomalies", "AnomalyDetector")
        and _has("signer.services.pipeline", "DecisionPipeline")
        and _has("signer.store.commit", "Store")
    ):
        _pending["services"] = False
        _install_services(
            *(
                sys.modules[f"signer.{m}"]
                for m in ("services.secrets", "services.anomalies", "services.pipeline", "store.commit")
            )
        )
    if not any(_pending.values()):
        builtins.__import__ = _import
    return module


if _ON:
    builtins.__import__ = _watching_import
