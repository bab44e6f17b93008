"""Rotation of a scope's key-encryption key: every version's data key rewrapped, no value exposed.

Owns the rotation of one scope's KEK, start to end: a new KEK is generated in the token (labelled
"next"), the rotation's row is written (scope, old and new KEK, state ``switching``), the new KEK is made
the scope's (new versions are sealed under it from then on) and the old one relabelled retired
(``rewrapping``); then each version still under another KEK is rewrapped in the token (unwrapped into a
sensitive session object by the old KEK and wrapped at once by the new one: the data key never enters
this process) and written back in its own small transaction with a check-and-set on the old
``(kek_id, wrapped_key)``; when none is left the rotation is ``finished``. The fields are not touched:
their associated data keeps binding the KEK id they were sealed with (``bound_kek_id``), and the data
key is the same, so a row is at every moment either the old pair or the new one and opens either way.

Progress is the row's counts, so a restarted server resumes an unfinished rotation where it stood
(``resume``, at start-up); several workers resuming at once only repeat token work (the check-and-set
lets one of them write each row). The old KEK is kept, labelled retired, until an operator destroys it
(``destroy_retired``: refused while any version is still wrapped under it, or within ``destroy_grace``
of the rotation's end, so a seal that asked for the old KEK just before the switch has landed).
Audited: start, each quarter of progress, finish, destroy; never a key, a wrapped key or a value.

It must never: hold an unwrapped data key, write a row whose pair was not produced from the row's own
pair, finish while a version of the scope is under another KEK, or destroy the scope's current KEK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from signer.audit import AuditEvent, EventTarget, Outcome
from signer.errors import Conflict, InvalidRequest, NotFound, SignerError
from signer.hsm import KekRotator
from signer.identity import Role
from signer.services.context import RequestContext, iso, require_role, utcnow
from signer.services.naming import NameKind, check_name
from signer.store import Store, Writer
from signer.store.tables.kek_rotations import KekRotationRecord, PendingVersion

__all__ = ["KekRotations"]

log = logging.getLogger("signer.kek_rotation")

Clock = Callable[[], datetime]
_PAGE = 64
_MILESTONES = (25, 50, 75)
# The token's CKA_ID in lower-case hex, as the service writes it.
_KEK_ID = re.compile(r"(?:[0-9a-f]{2}){1,64}\Z")


def _view(record: KekRotationRecord, remaining: int | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": record.id,
        "scope": record.scope,
        "state": record.state,
        "old_kek_id": record.old_kek_id,
        "new_kek_id": record.new_kek_id,
        "total": record.total,
        "rewrapped": record.rewrapped,
        "retired": list(record.retired),
        "destroyed": list(record.destroyed),
        "started_at": iso(record.started_at),
        "started_by": record.started_by,
        "updated_at": iso(record.updated_at),
        "finished_at": iso(record.finished_at),
    }
    if remaining is not None:
        view["remaining"] = remaining
    return view


def _system_event(kind: str, at: datetime, record: KekRotationRecord, **fields: Any) -> AuditEvent:
    return AuditEvent.of(
        kind,
        at=at,
        outcome=Outcome.ALLOWED,
        actor=None,
        request_id=None,
        resource=EventTarget("kek_rotation", record.id),
        scope=record.scope,
        old_kek_id=record.old_kek_id,
        new_kek_id=record.new_kek_id,
        **fields,
    )


class KekRotations:
    """Starts, runs, resumes and reports KEK rotations; destroys a retired KEK on an operator's word."""

    def __init__(
        self,
        store: Store,
        token: KekRotator,
        *,
        clock: Clock = utcnow,
        destroy_grace: timedelta = timedelta(minutes=5),
        page: int = _PAGE,
    ) -> None:
        self._store = store
        self._token = token
        self._clock = clock
        self._grace = destroy_grace
        self._page = page
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- the operator's calls ----------------------------------------------------------------------

    @staticmethod
    def _scope(scope: object) -> str:
        name = check_name(scope, field="scope", kind=NameKind.SCOPE)
        if "/" in name:
            raise InvalidRequest(
                "a KEK scope is an organisation: one folder segment", code="invalid_scope", field="scope"
            )
        return name

    async def start(self, ctx: RequestContext, scope: object) -> tuple[dict[str, Any], bool]:
        """Start rotating the scope's KEK (or answer the rotation already running); (view, started)."""
        require_role(ctx, Role.ADMIN)
        name = self._scope(scope)
        async with self._store.read() as reader:
            latest = await reader.kek_rotations.latest(name)
        if latest is not None and latest.state != "finished":
            self._spawn(latest.id)
            return _view(latest), False
        old = await self._token.kek_for_scope(name)
        new = await self._token.new_kek(name)
        now = self._clock()
        record = KekRotationRecord(
            id="kr_" + uuid.uuid4().hex,
            scope=name,
            old_kek_id=old,
            new_kek_id=new,
            state="switching",
            total=0,
            rewrapped=0,
            retired=[],
            destroyed=[],
            started_at=now,
            started_by=ctx.caller.principal_id,
            updated_at=now,
            finished_at=None,
        )

        async def unit(writer: Writer) -> tuple[KekRotationRecord, bool]:
            running = await writer.kek_rotations.latest(name)
            if running is not None and running.state != "finished":
                # Another request (or worker) started one first: that one runs; ours was never used.
                return running, False
            await writer.kek_rotations.insert(record)
            writer.append_audit(
                ctx.audit_event(
                    "secret.kek_rotation.start",
                    now,
                    resource=EventTarget("kek_rotation", record.id),
                    scope=name,
                    old_kek_id=old,
                    new_kek_id=new,
                )
            )
            return record, True

        stored, started = await self._store.submit(unit)
        self._spawn(stored.id)
        return _view(stored), started

    async def status(self, ctx: RequestContext, scope: object) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        name = self._scope(scope)
        async with self._store.read() as reader:
            latest = await reader.kek_rotations.latest(name)
            if latest is None:
                raise NotFound("no KEK rotation of that scope", code="kek_rotation_not_found")
            # Counted even once finished: a version sealed under the old KEK by a seal that asked for
            # it just before the switch would show here (a new rotation sweeps it).
            remaining = await reader.kek_rotations.count_pending(name, latest.new_kek_id)
        return _view(latest, remaining)

    async def destroy_retired(self, ctx: RequestContext, scope: object, kek_id: object) -> dict[str, Any]:
        """Destroy a KEK a finished rotation of the scope retired, once nothing is wrapped under it."""
        require_role(ctx, Role.ADMIN)
        name = self._scope(scope)
        if not isinstance(kek_id, str) or not _KEK_ID.match(kek_id):
            # Not an id a KEK could have: no retired KEK of that id (the same answer as an unknown one).
            raise NotFound("no retired KEK of that id in that scope", code="kek_not_found")
        now = self._clock()
        async with self._store.read() as reader:
            latest = await reader.kek_rotations.latest(name)
        if latest is None or kek_id not in latest.retired or kek_id in latest.destroyed:
            raise NotFound("no retired KEK of that id in that scope", code="kek_not_found")
        if latest.state != "finished" or latest.finished_at is None:
            raise Conflict("the rotation that retired it is still running", code="kek_rotation_running")
        if now < latest.finished_at + self._grace:
            raise Conflict("a retired KEK is kept a while after its rotation ends", code="kek_in_grace")
        async with self._store.read() as reader:
            if await reader.kek_rotations.count_under(kek_id):
                raise Conflict("versions are still wrapped under that KEK", code="kek_in_use")
        await self._token.destroy_retired_kek(kek_id)

        async def unit(writer: Writer) -> dict[str, Any]:
            current = await writer.kek_rotations.get(latest.id)
            assert current is not None
            destroyed = sorted(set(current.destroyed) | {kek_id})
            await writer.kek_rotations.set_destroyed(current.id, destroyed, now)
            writer.append_audit(
                ctx.audit_event(
                    "secret.kek.destroy",
                    now,
                    resource=EventTarget("kek_rotation", current.id),
                    scope=name,
                    kek_id=kek_id,
                )
            )
            return {"scope": name, "kek_id": kek_id, "destroyed": True}

        return await self._store.submit(unit)

    # -- running ----------------------------------------------------------------------------------

    async def resume(self) -> int:
        """Resume every unfinished rotation (at start-up); how many."""
        async with self._store.read() as reader:
            pending = await reader.kek_rotations.unfinished()
        for record in pending:
            self._spawn(record.id)
        return len(pending)

    def _spawn(self, rotation_id: str) -> None:
        task = self._tasks.get(rotation_id)
        if task is not None and not task.done():
            return
        self._tasks[rotation_id] = asyncio.get_running_loop().create_task(
            self._run_logged(rotation_id), name=f"signer-kek-rotation-{rotation_id}"
        )

    async def wait(self, rotation_id: str) -> None:
        """Until this process's runner of the rotation stops (tests and the CLI's --wait use polling)."""
        task = self._tasks.get(rotation_id)
        if task is not None:
            await asyncio.shield(task)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _run_logged(self, rotation_id: str) -> None:
        try:
            await self.run(rotation_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - resumed at the next start, or by starting it again
            log.error("KEK rotation stopped", extra={"rotation": rotation_id, "error": type(exc).__name__})

    async def run(self, rotation_id: str) -> KekRotationRecord:
        """Run the rotation to its end from wherever it stands; the record as it ends."""
        async with self._store.read() as reader:
            record = await reader.kek_rotations.get(rotation_id)
        if record is None:
            raise NotFound("no such KEK rotation", code="kek_rotation_not_found")
        if record.state == "switching":
            record = await self._switch(record)
        while record.state == "rewrapping":
            progressed = await self._pass(record)
            record = await self._finish_if_done(record)
            if record.state == "rewrapping" and not progressed:
                # Versions are left that do not rewrap (their KEK is gone, or the wrapped key was
                # altered): the rotation stays open, reported, rather than finishing around them.
                log.error("KEK rotation stalled", extra={"rotation": rotation_id})
                break
        return record

    async def _switch(self, record: KekRotationRecord) -> KekRotationRecord:
        retired = await self._token.activate_kek(record.scope, record.new_kek_id)
        retired = sorted((set(retired) | {record.old_kek_id}) - {record.new_kek_id})
        now = self._clock()

        async def unit(writer: Writer) -> KekRotationRecord:
            total = record.rewrapped + await writer.kek_rotations.count_pending(
                record.scope, record.new_kek_id
            )
            if await writer.kek_rotations.set_state(
                record.id, "rewrapping", now, expect="switching", retired=retired, total=total
            ):
                writer.append_audit(_system_event("secret.kek_rotation.switch", now, record, total=total))
            fresh = await writer.kek_rotations.get(record.id)
            assert fresh is not None
            return fresh

        return await self._store.submit(unit)

    async def _pass(self, record: KekRotationRecord) -> bool:
        """One walk over the versions not yet under the new KEK; whether any was rewrapped."""
        after: tuple[str, int] | None = None
        progressed = False
        while True:
            async with self._store.read() as reader:
                page = await reader.kek_rotations.pending(
                    record.scope, record.new_kek_id, self._page, after=after
                )
            if not page:
                return progressed
            for item in page:
                after = (item.secret_id, item.version)
                if await self._rewrap_one(record, item):
                    progressed = True

    async def _rewrap_one(self, record: KekRotationRecord, item: PendingVersion) -> bool:
        try:
            wrapped = await self._token.rewrap_data_key(item.kek_id, record.new_kek_id, item.wrapped_key)
        except SignerError as exc:
            if exc.code in ("secret_integrity", "key_not_found"):
                log.error(
                    "a secret version does not rewrap",
                    extra={"secret_id": item.secret_id, "version": item.version, "error": exc.code},
                )
                return False
            raise
        now = self._clock()

        async def unit(writer: Writer) -> bool:
            if not await writer.kek_rotations.rewrap(record.id, item, record.new_kek_id, wrapped, now):
                return False  # rewrapped by another runner, or the secret went
            fresh = await writer.kek_rotations.get(record.id)
            if fresh is not None and fresh.total:
                before = (fresh.rewrapped - 1) * 100 // fresh.total
                after = fresh.rewrapped * 100 // fresh.total
                for mark in _MILESTONES:
                    if before < mark <= after:
                        writer.append_audit(
                            _system_event(
                                "secret.kek_rotation.progress",
                                now,
                                fresh,
                                percent=mark,
                                rewrapped=fresh.rewrapped,
                                total=fresh.total,
                            )
                        )
            return True

        return await self._store.submit(unit)

    async def _finish_if_done(self, record: KekRotationRecord) -> KekRotationRecord:
        now = self._clock()

        async def unit(writer: Writer) -> KekRotationRecord:
            # Under the write lock: no version of the scope is left under another KEK.
            if not await writer.kek_rotations.count_pending(record.scope, record.new_kek_id):
                if await writer.kek_rotations.set_state(record.id, "finished", now, expect="rewrapping"):
                    fresh = await writer.kek_rotations.get(record.id)
                    assert fresh is not None
                    writer.append_audit(
                        _system_event(
                            "secret.kek_rotation.finish",
                            now,
                            fresh,
                            rewrapped=fresh.rewrapped,
                            total=fresh.total,
                            retired=fresh.retired,
                        )
                    )
            fresh = await writer.kek_rotations.get(record.id)
            assert fresh is not None
            return fresh

        return await self._store.submit(unit)
