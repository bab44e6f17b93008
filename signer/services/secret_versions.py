"""Secret versions and rotation: listing versions, promoting a staged one, disabling, re-enabling and
destroying one, and the service's own sweep (overlaps that ended, rotations that are due).

Every change of value is a new version (``SecretsService.set_value``: current, or ``staged`` to be
tested by number and then promoted here). A version is ``enabled`` (the current one, a ``previous`` one
in its overlap, or an older one still readable), ``staged``, ``disabled`` (re-enabled at will) or
``destroyed``: its wrapped data key and sealed fields are overwritten in the row, so no one, the
token's owner included, can open it again, and the ``secret.version_destroyed`` event says so. The
current version cannot be disabled or destroyed (rotate first). Each change is check-and-set
(``secret_etag.IfMatch``), audited, moves the facts epoch (other workers' cached records and data keys
go) and makes this process forget the secret's cached rows and data keys at once; a fetch's commit
checks a named or pinned version's state under the write lock, so a row another worker cached before
the change never serves a value.

The sweep runs in every worker, on its own clock (``clock``: tests pass their own): a previous version
whose overlap ended is disabled (``secret.version_disabled``, reason ``overlap_ended``, and the owner
group's webhook is told); a generated secret whose rotation interval elapsed gets a new version from
its rule (``secret.rotate`` with ``scheduled``); a provided one is marked overdue and its owner told
once per due date (``secret.rotation_overdue``, and the owner group's webhook). Each is one transaction
conditional on what the sweep read (the version's state, the record's revision), so several workers
sweeping at once act once.

It must never put a value in an event, a webhook or a log line: the sweep's events name the secret,
the version and the reason.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from signer.audit import EventTarget
from signer.errors import Conflict, Forbidden, InvalidRequest, NotFound, SignerError
from signer.services.context import Clock, RequestContext, iso, utcnow
from signer.services.naming import NameKind, check_name
from signer.services.resources import ResourceRef
from signer.services.secret_access import ancestors
from signer.services.secret_etag import IfMatch
from signer.services.secrets import (
    SecretsService,
    inherited_defaults,
    period,
    secret_view,
    service_event,
    version_view,
)
from signer.services.webhooks import WebhookService
from signer.store import Reader, SecretRecord, Store, Writer

log = logging.getLogger("signer.secret_versions")

_SWEEP_BATCH = 100
# action -> (the states it moves from, the state it moves to, the operation it needs, the event).
_ACTIONS: dict[str, tuple[frozenset[str], str, str, str]] = {
    "disable": (frozenset({"enabled", "staged"}), "disabled", "update", "secret.version_disabled"),
    "enable": (frozenset({"disabled"}), "enabled", "update", "secret.version_enabled"),
    "destroy": (
        frozenset({"enabled", "staged", "disabled"}),
        "destroyed",
        "delete",
        "secret.version_destroyed",
    ),
}
MAX_REASON = 256


def _reason(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_REASON or not value.isprintable():
        raise InvalidRequest(
            f"reason is printable text up to {MAX_REASON} characters", code="invalid_reason", field="reason"
        )
    return value


class SecretVersionsService:
    def __init__(
        self,
        store: Store,
        secrets: SecretsService,
        *,
        clock: Clock = utcnow,
        webhooks: WebhookService | None = None,
        sweep_seconds: float = 30.0,
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._clock = clock
        self._webhooks = webhooks
        self._sweep_seconds = sweep_seconds

    async def list(self, ctx: RequestContext, secret_id: str) -> dict[str, Any]:
        """Every version's metadata (who, when, why, state), never a value."""
        async with self._store.read() as reader:
            secret = await self._secrets.load_allowed(reader, ctx, secret_id, "read_metadata")
            versions = await reader.secrets.versions(secret.id)
        return {
            "secret_id": secret.id,
            "current_version": secret.current_version,
            "revision": secret.revision,
            "items": [version_view(secret, v) for v in versions],
        }

    async def promote(
        self, ctx: RequestContext, secret_id: str, version: int, if_match: IfMatch | None = None
    ) -> dict[str, Any]:
        """Make a staged version current; the previous current one enters its overlap."""
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            secret = await self._secrets.load_allowed(writer, ctx, secret_id, "update")
            revision = secret.revision if if_match is None else if_match.check(secret)
            previous = await writer.secrets.promote(
                secret.id,
                version,
                now,
                ctx.caller.principal_id,
                if_revision=revision,
                previous_until=_after(now, secret.overlap_seconds),
                rotation_due_at=_after(now, secret.rotation_interval_seconds),
            )
            self._secrets.forget(secret.id)
            writer.append_audit(
                ctx.audit_event(
                    "secret.version_promoted",
                    now,
                    resource=EventTarget("secret", secret.id),
                    version=version,
                    previous=previous,
                )
            )
            return await _view(writer, secret.id)

        return await self._store.submit(unit)

    async def change_state(
        self,
        ctx: RequestContext,
        secret_id: str,
        version: int,
        action: str,
        *,
        reason: object = None,
        if_match: IfMatch | None = None,
    ) -> dict[str, Any]:
        """``disable``, ``enable`` or ``destroy`` one version (not the current one)."""
        if action not in _ACTIONS:
            raise ValueError(f"unknown version action {action!r}")
        why = _reason(reason)
        from_states, state, operation, kind = _ACTIONS[action]
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            secret = await self._secrets.load_allowed(writer, ctx, secret_id, operation)
            revision = None if if_match is None else if_match.check(secret)
            if secret.backend != "sealed":
                raise Conflict(
                    "this secret's versions are kept by its backend", code="secret_held_by_reference"
                )
            current_state = await writer.secrets.version_state(secret.id, version)
            if current_state is None:
                raise NotFound("no such version of the secret", code="secret_version_not_found")
            if version == secret.current_version:
                raise Conflict(
                    "the current version cannot be disabled or destroyed: rotate first",
                    code="secret_version_current",
                )
            if current_state not in from_states:
                raise Conflict(
                    f"that version is {current_state}: it cannot be {state}",
                    code="secret_version_state",
                )
            moved = await writer.secrets.set_version_state(
                secret.id,
                version,
                state,
                from_states=from_states,
                now=now,
                by=ctx.caller.principal_id,
                reason=why or action + "d by request",
                if_revision=revision,
            )
            if not moved:
                raise Conflict("that version changed meanwhile; read it again", code="if_match_failed")
            # Wipe what this process holds: the cached row and the version's unwrapped data key.
            self._secrets.forget(secret.id)
            fields: dict[str, Any] = {"version": version, "reason": why, "was": current_state}
            if state == "destroyed":
                # Said in the log for good: the wrapped key and sealed fields were overwritten.
                fields["wrapped_key_erased"] = True
            writer.append_audit(
                ctx.audit_event(kind, now, resource=EventTarget("secret", secret.id), **fields)
            )
            return await _view(writer, secret.id)

        return await self._store.submit(unit)

    # -- folder defaults ------------------------------------------------------------------------

    async def folder_defaults(self, ctx: RequestContext, folder: str) -> dict[str, Any]:
        """What a secret created in ``folder`` would get, and each folder at or above it that sets some
        (needs ``list`` on the folder)."""
        folder = check_name(folder, field="folder", kind=NameKind.SCOPE)
        async with self._store.read() as reader:
            await self._folder_allowed(reader, ctx, folder, "list")
            found = await reader.secrets.folder_defaults(ancestors(folder))
        interval, overlap = inherited_defaults(folder, found)
        return {
            "folder": folder,
            "rotation_interval_seconds": interval,
            "overlap_seconds": overlap,
            "set_at": [
                {"folder": at, "rotation_interval_seconds": found[at][0], "overlap_seconds": found[at][1]}
                for at in ancestors(folder)
                if at in found
            ],
        }

    async def set_folder_defaults(
        self,
        ctx: RequestContext,
        folder: str,
        *,
        rotation_interval_seconds: int | None,
        overlap_seconds: int | None,
    ) -> dict[str, Any]:
        """Set a folder's defaults for secrets created in it or below from now on (0 or null clears
        one; existing secrets keep theirs). Needs ``update`` on the folder; audited."""
        folder = check_name(folder, field="folder", kind=NameKind.SCOPE)
        interval = period(rotation_interval_seconds, "rotation_interval_seconds")
        overlap = period(overlap_seconds, "overlap_seconds")
        now = self._clock()

        async def unit(writer: Writer) -> None:
            await self._folder_allowed(writer, ctx, folder, "update")
            await writer.secrets.set_folder_defaults(folder, interval, overlap, now, ctx.caller.principal_id)
            writer.append_audit(
                ctx.audit_event(
                    "secret.folder_defaults",
                    now,
                    folder=folder,
                    rotation_interval_seconds=interval,
                    overlap_seconds=overlap,
                )
            )

        await self._store.submit(unit)
        return await self.folder_defaults(ctx, folder)

    async def _folder_allowed(
        self, reader: Reader | Writer, ctx: RequestContext, folder: str, operation: str
    ) -> None:
        ref = ResourceRef("secret", "(folder)", folder, "active")
        if not await self._secrets.allowed_on_folder(reader, ctx, operation, ref):
            raise Forbidden(
                f"{operation} on secrets in this folder is not granted", code="operation_not_granted"
            )

    # -- the service's own sweep ------------------------------------------------------------------

    async def run(self) -> None:
        """Sweep forever (until cancelled); a failed round is logged, never fatal."""
        while True:
            try:
                await self.sweep()
            except SignerError as exc:
                log.warning("secret sweep failed", extra={"code": exc.code})
            except Exception as exc:  # noqa: BLE001 - the sweeper must outlive any one bad round
                log.error("secret sweep failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self._sweep_seconds)

    async def sweep(self) -> dict[str, int]:
        """One round at ``clock()``: overlaps ended, rotations due. Counts what this call did."""
        now = self._clock()
        done = {"disabled": 0, "rotated": 0, "overdue": 0}
        async with self._store.read() as reader:
            ended = await reader.secrets.overlaps_ended(now, limit=_SWEEP_BATCH)
        for secret_id, version in ended:
            if await self._end_overlap(secret_id, version, now):
                done["disabled"] += 1
        # Read after the overlaps ended: each moved its secret's revision, which the writes below check.
        async with self._store.read() as reader:
            due = await reader.secrets.rotations_due(now, limit=_SWEEP_BATCH)
        for secret in due:
            if secret.origin == "generated" and secret.generation is not None:
                if await self._rotate(secret):
                    done["rotated"] += 1
            elif secret.overdue_notified_at is None or (
                secret.rotation_due_at is not None and secret.overdue_notified_at < secret.rotation_due_at
            ):
                if await self._overdue(secret, now):
                    done["overdue"] += 1
        return done

    async def _end_overlap(self, secret_id: str, version: int, now: datetime) -> bool:
        async def unit(writer: Writer) -> bool:
            secret = await writer.secrets.get(secret_id)
            if secret is None or secret.current_version == version:
                return False
            moved = await writer.secrets.set_version_state(
                secret_id,
                version,
                "disabled",
                from_states=frozenset({"enabled"}),
                now=now,
                by=None,
                reason="overlap_ended",
            )
            if not moved:
                return False  # another worker did it
            self._secrets.forget(secret_id)
            writer.append_audit(
                service_event(
                    "secret.version_disabled",
                    now,
                    resource=EventTarget("secret", secret_id),
                    version=version,
                    reason="overlap_ended",
                    was="enabled",
                )
            )
            await self._notify(writer, secret, "secret.version_disabled", now, version=version)
            return True

        return await self._store.submit(unit)

    async def _rotate(self, secret: SecretRecord) -> bool:
        assert secret.generation is not None
        rule = dict(secret.generation)
        try:
            values, stored = self._secrets.generated(rule)
            async with self._store.read() as reader:
                latest = await reader.secrets.latest_version(secret.id)
            await self._secrets.add_version(None, secret, values, stored, number=latest + 1)
        except Conflict as exc:
            if exc.code in ("if_match_failed", "secret_version_exists"):
                return False  # another worker rotated it first
            raise
        except NotFound:
            return False
        return True

    async def _overdue(self, secret: SecretRecord, now: datetime) -> bool:
        async def unit(writer: Writer) -> bool:
            if not await writer.secrets.note_overdue(secret.id, secret.revision, now):
                return False
            writer.append_audit(
                service_event(
                    "secret.rotation_overdue",
                    now,
                    resource=EventTarget("secret", secret.id),
                    due_at=iso(secret.rotation_due_at),
                    owner=f"{secret.owner_type}:{secret.owner}",
                )
            )
            await self._notify(
                writer, secret, "secret.rotation_overdue", now, due_at=iso(secret.rotation_due_at)
            )
            return True

        return await self._store.submit(unit)

    async def _notify(
        self, writer: Writer, secret: SecretRecord, event: str, now: datetime, **fields: Any
    ) -> None:
        """The owner group's webhook, if it has one (a principal owner reads the audit log)."""
        if self._webhooks is None or secret.owner_type != "group":
            return
        body = {
            "type": event,
            "secret_id": secret.id,
            "name": secret.name,
            "folder": secret.folder,
            "at": iso(now),
            **fields,
        }
        if await self._webhooks.enqueue(writer, [secret.owner], body, now):
            self._webhooks.wake()


async def _view(writer: Writer, secret_id: str) -> dict[str, Any]:
    updated = await writer.secrets.get(secret_id)
    assert updated is not None
    return secret_view(updated, await writer.secrets.versions(secret_id))


def _after(now: datetime, seconds: int | None) -> datetime | None:
    return None if not seconds else now + timedelta(seconds=seconds)
