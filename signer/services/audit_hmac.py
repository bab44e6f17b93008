"""HMACs of audit fields that could identify a value or a token (matrix U-03), and the auditor's look-up.

An audit event never stores such a field as it was given, not even as a plain SHA-256 (a guessable
value, an idempotency key such as ``invoice-1042``, falls to a dictionary): it stores
``HMAC-SHA256(K, field || 0x00 || value)`` as lower-case hex under the field's name with ``_hmac``
appended. ``K`` is derived once per process from the audit field key in the token (a generic secret,
sensitive, not extractable, sign only: ``K = HMAC_token("signer audit field key v1")``), so every
process and every restart compute the same HMACs, a computation costs no token round trip on the sign
path, and nobody without the token can compute one. ``K`` lives only in this process's memory.

The fields (the field's name binds the HMAC to it, so a value searched as one field never matches
another):

- ``idempotency_key``: chosen by the client, often a business reference; stored as
  ``idempotency_key_hmac``.

An auditor searching the log for a value asks ``POST /v1/audit/hmac`` (``{field, value}``, auditor or
admin, at most ``RATE_PER_MINUTE`` per principal per process): the answer is the HMAC to look for. The
request is audited as ``audit.hmac_computed`` with the field's name only: neither the value nor its
HMAC is written, logged or kept.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from typing import Any, Protocol

from signer.errors import InvalidRequest, RateLimited
from signer.identity import Role
from signer.services.context import Clock, RequestContext, require_role, utcnow
from signer.store import Store, Writer

DERIVATION_LABEL = b"signer audit field key v1"
HMAC_FIELDS = ("idempotency_key",)
RATE_PER_MINUTE = 60
MAX_VALUE_CHARS = 4096


class FieldKeySource(Protocol):
    """What the service needs of the HSM: one HMAC-SHA256 under the audit field key."""

    async def audit_hmac(self, data: bytes) -> bytes: ...


class AuditHmac:
    """Computes the HMAC of an audit field (for the services writing events, and for auditors)."""

    def __init__(self, store: Store, hsm: FieldKeySource, *, clock: Clock = utcnow) -> None:
        self._store = store
        self._hsm = hsm
        self._clock = clock
        self._key: bytes | None = None
        self._calls: dict[str, deque[float]] = {}

    async def start(self) -> None:
        """Derive this process's field key from the token's (made in the token on first use)."""
        self._key = await self._hsm.audit_hmac(DERIVATION_LABEL)

    def field(self, name: str, value: str) -> str:
        """The HMAC written in place of ``value`` for the field ``name`` (hex)."""
        if self._key is None:
            raise RuntimeError("AuditHmac.start() was not awaited")
        if name not in HMAC_FIELDS:
            raise ValueError(f"{name} is not an HMAC'd audit field")
        message = name.encode("ascii") + b"\x00" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _admit(self, principal_id: str) -> None:
        now = time.monotonic()
        calls = self._calls.setdefault(principal_id, deque())
        while calls and now - calls[0] >= 60.0:
            calls.popleft()
        if len(calls) >= RATE_PER_MINUTE:
            raise RateLimited(
                "too many HMAC look-ups; try again in a minute", code="rate_limited", retry_after=60
            )
        calls.append(now)

    async def compute(self, ctx: RequestContext, name: str, value: str) -> dict[str, Any]:
        """The auditor's look-up: the HMAC of ``value`` as field ``name`` (audited without either)."""
        require_role(ctx, Role.AUDITOR, Role.ADMIN)
        if name not in HMAC_FIELDS:
            raise InvalidRequest("unknown HMAC field", code="invalid_field", field="field")
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_VALUE_CHARS:
            raise InvalidRequest("value must be 1 to 4096 characters", code="invalid_field", field="value")
        self._admit(ctx.caller.principal_id)
        digest = self.field(name, value)
        now = self._clock()

        async def unit(writer: Writer) -> None:
            writer.append_audit(ctx.audit_event("audit.hmac_computed", now, field=name))

        await self._store.submit(unit)
        return {"field": name, "hmac": digest, "event_field": f"{name}_hmac"}
