"""``Hsm``: the PKCS#11 key vault, with every PKCS#11 call made by one thread per process.

This is the home of the ``pkcs11`` dependency (with ``signer.hsm.token``, ``signer.hsm.ckapi`` and
``signer.hsm.errormap``). It owns: the single worker thread that makes every PKCS#11 call in the process
(load, find, open, login, sign, close, finalise); the bounded job queue and the deadlines; recovery from
lost sessions and vanished tokens; rescanning the token when a key is missing (SoftHSM can hide keys
other processes made); the translation of PKCS#11 failures into ``signer.errors``.

It must never: call PKCS#11 from the event loop or from any other thread (python-pkcs11 0.10.1 runs
``C_Initialize(NULL)`` and releases the GIL; two threads inside SoftHSM 2.6.1 at once crash the
process); use a session or handle inherited across ``fork``; deliver a result to a caller that has
already given up (a late signature is dropped, never released later); retry in a loop (one re-login,
one handle refresh, one rescan and at most three short back-offs per job); put a PIN, handle or module
message in an error or a log line; ship a fake (test faults live in ``tests/`` and reach the worker
only through ``Hsm._run_on_worker``).

How a call travels: ``await hsm.sign(...)`` validates its arguments, takes a queue slot (none left:
``Unavailable(code="hsm_overloaded")``), puts a job on the process's PKCS#11 thread and waits at most
``deadline_seconds`` (then ``DeadlineExceeded(code="hsm_timeout")``). The thread skips jobs whose
caller has gone, runs the rest against the token's one long-lived logged-in session, and hands the
outcome back to the caller's event loop, where it is dropped if the caller stopped waiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from signer.config import Secret
from signer.errors import (
    ConfigurationError,
    DeadlineExceeded,
    HsmUnavailable,
    IntegrityError,
    InvalidRequest,
    NotFound,
    SignerError,
    Unavailable,
)
from signer.hsm.curves import hsm_id_bytes, validate_label, validate_sign_input
from signer.hsm.errormap import Recovery, startup_error, translate
from signer.hsm.token import KEK_LABEL_PREFIX, KeyNotOnToken, TokenSession, WorkerContext
from signer.hsm.types import Curve, GeneratedKey, KeyAttributes

if TYPE_CHECKING:
    from signer.hsm.types import KekRotator, KeyVault, KeyWrapper

__all__ = ["Hsm", "HsmStats"]

log = logging.getLogger("signer.hsm")

T = TypeVar("T")

_MAX_RELOGINS = 1
_MAX_HANDLE_REFRESHES = 1
_MAX_TRANSIENT_RETRIES = 3
_FIRST_BACKOFF_SECONDS = 0.01
_NEVER = float("inf")


@dataclass(frozen=True, slots=True)
class HsmStats:
    """Counters since ``start``: evidence for tests and metrics (no identifiers, no key material)."""

    completed: int = 0
    failed: int = 0
    skipped_expired: int = 0
    discarded_late: int = 0
    overloaded: int = 0
    relogins: int = 0
    handle_refreshes: int = 0
    transient_retries: int = 0
    reconnects: int = 0
    reconnect_failures: int = 0
    rescans: int = 0


class _Counters:
    """Mutable counters shared by the worker thread and the callers' loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = {f.name: 0 for f in fields(HsmStats)}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> HsmStats:
        with self._lock:
            return HsmStats(**self._values)


class _Job:
    """One unit of work for the PKCS#11 thread, and the caller waiting for it on its own loop."""

    __slots__ = ("abandoned", "bounded", "deadline", "future", "loop", "owner", "run")

    def __init__(
        self,
        owner: Hsm,
        run: Callable[[float], Any],
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        bounded: bool,
    ) -> None:
        self.owner = owner
        self.run = run  # called with the job's monotonic deadline
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.deadline = deadline
        self.bounded = bounded  # holds one of the owner's queue slots until it has run or been skipped
        # Set on the caller's loop when it stops waiting; read by the worker to skip the job. Plain
        # attribute on purpose: the loop-side check in _deliver is what guarantees nothing late leaks.
        self.abandoned = False


class _Stop:
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


class _Pkcs11Thread:
    """The one thread per process that makes PKCS#11 calls, shared by every ``Hsm`` in the process.

    Several ``Hsm`` objects (tests, a CLI next to a service) must not each get a thread: the module
    state is process-wide, so their calls are serialised here too. The thread lives while at least one
    ``Hsm`` is started.
    """

    _guard: ClassVar[threading.Lock] = threading.Lock()
    _current: ClassVar[_Pkcs11Thread | None] = None
    _retired: ClassVar[threading.Thread | None] = None

    def __init__(self, previous: threading.Thread | None) -> None:
        self.pid = os.getpid()
        self.users = 0
        self._queue: queue.SimpleQueue[_Job | _Stop] = queue.SimpleQueue()
        self._previous = previous
        self.thread = threading.Thread(target=self._run, name="signer-hsm-pkcs11", daemon=True)
        self.thread.start()

    @classmethod
    def acquire(cls) -> _Pkcs11Thread:
        with cls._guard:
            current = cls._current
            if current is not None and current.pid != os.getpid():
                raise ConfigurationError(
                    "PKCS#11 was initialised before this process was forked; start the HSM in each "
                    "worker process after it starts (or use the spawn start method)"
                )
            if current is None:
                current = cls._current = _Pkcs11Thread(cls._retired)
            current.users += 1
            return current

    def release(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """Drop one user; the last one stops the thread and gets a future resolved when it exits."""
        with self._guard:
            self.users -= 1
            if self.users > 0:
                return None
            type(self)._current = None
            type(self)._retired = self.thread
            stop = _Stop(loop)
            self._queue.put(stop)
            return stop.future

    def submit(self, job: _Job) -> None:
        self._queue.put(job)

    def _run(self) -> None:
        if self._previous is not None:
            # A new thread never overlaps the one it replaces: wait until that one has drained.
            self._previous.join()
            self._previous = None
        while True:
            item = self._queue.get()
            batch: list[tuple[_Job, Any, BaseException | None]] = []
            while True:
                if isinstance(item, _Stop):
                    _flush(batch)
                    _call_soon(item.loop, _resolve, item.future)
                    return
                try:
                    outcome = item.owner._execute(item)
                except BaseException:  # a bug in one job must not stop the only PKCS#11 thread
                    log.exception("HSM worker failed to run a job")
                    outcome = None
                if outcome is not None:
                    batch.append(outcome)
                if len(batch) >= _MAX_BATCH or self._queue.empty():
                    break
                item = self._queue.get()
            _flush(batch)


_MAX_BATCH = 16


def _flush(batch: list[tuple[_Job, Any, BaseException | None]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
    for outcome in batch:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, outcomes in by_loop.items():
        if not _call_soon(loop, _deliver_all, outcomes):
            for job, _, _ in outcomes:
                job.owner._counters.add("discarded_late")


def _deliver_all(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, value, error in outcomes:
        job.owner._deliver(job, value, error)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> bool:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the caller's loop is closed: nobody is left to deliver to
        return False
    return True


class _Expired(Exception):
    """A job's deadline passed before its outcome was delivered (never leaves ``Hsm._call``)."""


def _expire(job: _Job) -> None:
    # On the caller's loop, so it cannot race _deliver: whichever runs first settles the future, and a
    # late outcome is then dropped there (the job is abandoned: the thread skips it if not yet run).
    if not job.future.done():
        job.abandoned = True
        job.future.set_exception(_Expired())


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Hsm:
    """A PKCS#11 token holding the service's private keys (the ``KeyVault`` implementation).

    ``module_path`` is the PKCS#11 module (``libsofthsm2.so`` in development; for SoftHSM the caller
    sets ``SOFTHSM2_CONF``), ``token_label`` the token's label and ``pin`` the user PIN. Usable from
    any event loop and any thread's loop once ``start`` has returned, in the process that started it.
    """

    def __init__(
        self,
        module_path: str,
        token_label: str,
        pin: Secret,
        *,
        deadline_seconds: float = 2.0,
        queue_size: int = 1024,
        reconnect_interval: float = 0.5,
        rescan_interval: float = 1.0,
        start_timeout: float = 30.0,
    ) -> None:
        if not isinstance(pin, Secret):
            raise ConfigurationError("the HSM PIN must be given as a Secret")
        if not deadline_seconds > 0 or not start_timeout > 0 or reconnect_interval < 0 or rescan_interval < 0:
            raise ConfigurationError("HSM deadlines must be positive")
        if queue_size < 1:
            raise ConfigurationError("HSM queue size must be at least 1")
        self.module_path = module_path
        self.token_label = token_label
        self.deadline_seconds = float(deadline_seconds)
        self.queue_size = int(queue_size)
        self._reconnect_interval = float(reconnect_interval)
        self._rescan_interval = float(rescan_interval)
        self._start_timeout = float(start_timeout)
        self._token = TokenSession(module_path, token_label, pin)
        self._counters = _Counters()
        self._pid: int | None = None
        self._thread: _Pkcs11Thread | None = None
        self._state = "new"  # new -> starting -> running -> closed
        # Worker-thread state: set when the token must be reconnected before the next job.
        self._broken = False
        self._last_reconnect = float("-inf")
        self._last_miss_rescan = float("-inf")
        # Set for good once the token refuses our PIN at run time (see Recovery.PIN_REFUSED).
        self._pin_refused = False
        # Bounded jobs holding a queue slot: the queue bound itself (at most queue_size) and the depth
        # metrics read. One counter under one lock, taken once by the caller and once by the worker
        # (a Semaphore beside a counter took four locks per call for the same number).
        self._admitted = 0
        self._admitted_lock = threading.Lock()  # changed from the callers' threads and the worker's
        # Optional, set by the composition root: called on the caller's loop after every call with
        # (seconds from queueing to answer, "ok" | "error" | "timeout" | "overloaded"). Must not raise.
        self.call_observer: Callable[[float, str], None] | None = None

    def __repr__(self) -> str:
        return f"Hsm(module={self.module_path!r}, token={self.token_label!r}, state={self._state})"

    @property
    def stats(self) -> HsmStats:
        return self._counters.snapshot()

    @property
    def queue_depth(self) -> int:
        """Jobs admitted to the bounded queue and not yet run (or skipped)."""
        return self._admitted

    @property
    def available(self) -> bool:
        """Running with a usable session, as far as this process knows (no call is made)."""
        return self._state == "running" and not self._broken and not self._pin_refused

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the module, find the token, open the session and log in, all on the PKCS#11 thread.

        Raises ``ConfigurationError`` ("token 'x' not found", "wrong PIN for token 'x'", "PKCS#11
        module cannot be loaded: <path>", or a forked-process refusal); never shows the PIN.
        """
        if self._state != "new":
            raise ConfigurationError(f"HSM for token {self.token_label!r} was already started")
        self._state = "starting"
        self._pid = os.getpid()
        try:
            self._thread = _Pkcs11Thread.acquire()
        except ConfigurationError:
            self._state = "closed"
            raise
        try:
            await self._call(self._connect, self._start_timeout)
        except BaseException as exc:
            self._state = "closed"
            if isinstance(exc, DeadlineExceeded | asyncio.CancelledError) and self._thread is not None:
                # The connect job may still be running: queue the clean-up behind it, unwaited.
                cleanup = _Job(
                    self, lambda deadline: self._token.close(), asyncio.get_running_loop(), _NEVER, False
                )
                self._thread.submit(cleanup)
            await self._release_thread()
            if isinstance(exc, DeadlineExceeded):
                raise ConfigurationError(f"token {self.token_label!r} did not open in time") from None
            raise
        self._state = "running"

    def _connect(self, deadline: float) -> None:
        try:
            self._token.connect(deadline)
        except Exception as exc:  # noqa: BLE001 - every start-up failure becomes one clear refusal
            self._token.abandon()
            raise startup_error(exc, self.module_path, self.token_label) from None

    async def close(self) -> None:
        """Log out, close the session, finalise the module if no other ``Hsm`` uses it; idempotent.

        In a forked child this only marks the object closed: inherited handles are never touched.
        """
        if self._state in ("closed", "new"):
            self._state = "closed"
            return
        self._state = "closed"
        if self._pid != os.getpid():
            return
        try:
            await self._call(lambda deadline: self._token.close(), self._start_timeout, closing=True)
        except SignerError as exc:
            log.warning("HSM close did not finish cleanly (%s)", exc.code)
        await self._release_thread()

    async def _release_thread(self) -> None:
        worker, self._thread = self._thread, None
        if worker is None:
            return
        stopped = worker.release(asyncio.get_running_loop())
        if stopped is not None:
            try:
                await asyncio.wait_for(stopped, timeout=self._start_timeout)
            except TimeoutError:
                log.warning("HSM worker thread did not stop in time; left as a daemon")
                return
            worker.thread.join(timeout=1.0)

    # -- the KeyVault operations -------------------------------------------------------------------

    async def generate_key(self, curve: Curve, label: str) -> GeneratedKey:
        """Generate a key pair in the token: private half sensitive, non-extractable, sign-only."""
        if not isinstance(curve, Curve):
            raise InvalidRequest("unknown curve", code="unsupported_curve")
        label = validate_label(label)
        return await self._op(lambda ts: ts.generate_key(curve, label))

    async def sign(self, hsm_id: str, curve: Curve, data: bytes) -> bytes:
        """64 bytes: r||s over a 32-byte digest (secp256k1, P-256) or an Ed25519 signature of ``data``."""
        hsm_id_bytes(hsm_id)
        data = validate_sign_input(curve, data)
        return await self._op(lambda ts: ts.sign(hsm_id, curve, data))

    async def key_attributes(self, hsm_id: str) -> KeyAttributes:
        hsm_id_bytes(hsm_id)
        return await self._op(lambda ts: ts.key_attributes(hsm_id))

    async def list_keys(self) -> list[tuple[str, str, Curve | None]]:
        """(hsm_id, label, curve) of every private key on the token; curve None if not one of ours.

        Inventory reads the token afresh (see ``TokenSession.reconnect``) unless this process did so
        within ``rescan_interval``, so keys other processes made are included.
        """
        return await self._op(lambda ts: ts.list_keys(), fresh=True)

    async def unconfined_keys(self) -> list[str]:
        """hsm_ids of private keys the token does not vouch for as born inside and never extractable."""
        return await self._op(lambda ts: ts.unconfined_keys(), fresh=True)

    async def self_test(self, curve: Curve) -> tuple[bytes, bytes, bytes]:
        """(public_key, data, signature) from a throw-away session key, for independent verification."""
        if not isinstance(curve, Curve):
            raise InvalidRequest("unknown curve", code="unsupported_curve")
        return await self._op(lambda ts: ts.self_test(curve))

    async def destroy_key(self, hsm_id: str) -> None:
        hsm_id_bytes(hsm_id)
        await self._op(lambda ts: ts.destroy_key(hsm_id))

    async def audit_key(self) -> GeneratedKey:
        """The audit checkpoint key (Ed25519, sensitive, not extractable, sign only), generated in the
        token on first use and found by its label afterwards; its public half and attributes."""
        return await self._op(lambda ts: ts.audit_key(), fresh=True)

    async def new_audit_key(self) -> GeneratedKey:
        """A fresh audit key for a rotation (Ed25519, generated in the token, sensitive, sign only)."""
        return await self._op(lambda ts: ts.new_audit_key(), fresh=True)

    async def audit_key_by_id(self, hsm_id: str) -> GeneratedKey:
        """An audit key by its token id (``NotFound(key_not_found)`` once its private half is gone)."""
        hsm_id_bytes(hsm_id)
        return await self._op(lambda ts: ts.audit_key_by_id(hsm_id))

    async def audit_public_keys(self) -> list[tuple[str, bytes]]:
        """(hsm_id, public key) of every audit key on the token, retired ones (public half only) too."""
        return await self._op(lambda ts: ts.audit_public_keys(), fresh=True)

    async def destroy_audit_private(self, hsm_id: str) -> None:
        """Destroy a retired audit key's private half; its public half stays on the token."""
        hsm_id_bytes(hsm_id)
        await self._op(lambda ts: ts.destroy_audit_private(hsm_id), fresh=True)

    async def audit_hmac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under the audit field key (a generic secret in the token, sensitive,
        not extractable, sign only), generated on first use and found by its label afterwards."""
        if not isinstance(data, bytes) or len(data) > 1 << 16:
            raise InvalidRequest("HMAC input is at most 64 KiB", code="invalid_request")
        return await self._op(lambda ts: ts.audit_hmac(data))

    async def read_anchor(self) -> bytes | None:
        """The audit anchor data object's value (None: the token holds none)."""
        return await self._op(lambda ts: ts.read_anchor(), fresh=True)

    async def write_anchor(self, value: bytes, *, force: bool = False) -> bool:
        """Store the audit anchor (8-byte big-endian size first) unless the token holds a larger or
        equal one (``force``: replace it anyway). True when written."""
        if not isinstance(value, bytes) or not 8 <= len(value) <= 4096:
            raise InvalidRequest("an anchor is 8 to 4096 bytes", code="invalid_request")
        return await self._op(lambda ts: ts.write_anchor(value, force=force), fresh=True)

    async def kek_for_scope(self, scope: str) -> str:
        """The hex id of the scope's key-encryption key (AES-256 in the token, wrap/unwrap only),
        generated on first use and found by label afterwards."""
        validate_label(KEK_LABEL_PREFIX + scope)
        return await self._op(lambda ts: ts.kek_for_scope(scope), fresh=True)

    async def kek_attributes(self, kek_id: str) -> KeyAttributes:
        hsm_id_bytes(kek_id)
        return await self._op(lambda ts: ts.kek_attributes(kek_id))

    async def wrap_data_key(self, kek_id: str, data_key: bytes) -> bytes:
        """``data_key`` (16, 24 or 32 bytes) wrapped under the KEK with CKM_AES_KEY_WRAP_PAD."""
        hsm_id_bytes(kek_id)
        if not isinstance(data_key, bytes) or len(data_key) not in (16, 24, 32):
            raise InvalidRequest("a data key is 16, 24 or 32 bytes", code="invalid_request")
        return await self._op(lambda ts: ts.wrap_data_key(kek_id, data_key))

    async def unwrap_data_key(self, kek_id: str, wrapped: bytes) -> bytes:
        """The data key ``wrapped`` holds; ``IntegrityError(secret_integrity)`` if it does not open."""
        hsm_id_bytes(kek_id)
        if not isinstance(wrapped, bytes) or not 16 <= len(wrapped) <= 64:
            raise IntegrityError("a sealed data key does not open", code="secret_integrity")
        return await self._op(lambda ts: ts.unwrap_data_key(kek_id, wrapped))

    async def new_kek(self, scope: str) -> str:
        """A fresh KEK for ``scope`` (labelled next: it seals nothing until ``activate_kek``)."""
        validate_label(KEK_LABEL_PREFIX + scope)
        return await self._op(lambda ts: ts.new_kek(scope), fresh=True)

    async def activate_kek(self, scope: str, new_id: str) -> list[str]:
        """Make ``new_id`` the scope's KEK; the ids of the ones it retired."""
        validate_label(KEK_LABEL_PREFIX + scope)
        hsm_id_bytes(new_id)
        return await self._op(lambda ts: ts.activate_kek(scope, new_id), fresh=True)

    async def rewrap_data_key(self, old_id: str, new_id: str, wrapped: bytes) -> bytes:
        """A data key wrapped under ``old_id`` rewrapped under ``new_id`` inside the token."""
        hsm_id_bytes(old_id)
        hsm_id_bytes(new_id)
        if not isinstance(wrapped, bytes) or not 16 <= len(wrapped) <= 64:
            raise IntegrityError("a sealed data key does not open", code="secret_integrity")
        return await self._op(lambda ts: ts.rewrap_data_key(old_id, new_id, wrapped))

    async def destroy_retired_kek(self, kek_id: str) -> None:
        hsm_id_bytes(kek_id)
        await self._op(lambda ts: ts.destroy_retired_kek(kek_id), fresh=True)

    async def ping(self) -> None:
        """Cheap liveness check; raises ``HsmUnavailable`` when the token is not usable (and heals)."""
        await self._op(lambda ts: ts.ping())

    async def _run_on_worker(self, fn: Callable[[WorkerContext], T], *, deadline: float | None = None) -> T:
        """Run ``fn`` on the PKCS#11 thread against the live session; for tests and diagnostics only.

        ``fn`` gets the ``WorkerContext`` (lib, token, session, ckapi, slot id). Its exceptions come
        back unchanged (no translation, no retry), so a test can see ``AttributeSensitive`` or break
        the session on purpose (``C_CloseAllSessions``, logout) and then watch the next call recover.
        """

        def run(deadline: float) -> T:
            self._ensure_connected()
            return fn(self._token.context())

        return await self._call(run, self.deadline_seconds if deadline is None else deadline)

    # -- the caller's side -------------------------------------------------------------------------

    async def _op(self, op: Callable[[TokenSession], T], *, fresh: bool = False) -> T:
        return await self._call(
            lambda deadline: self._run_with_recovery(op, deadline, fresh=fresh), self.deadline_seconds
        )

    def _check_usable(self, *, closing: bool) -> _Pkcs11Thread:
        if self._pid is not None and self._pid != os.getpid():
            raise ConfigurationError(
                "this HSM handle belongs to the process that started it; a forked child must start its own"
            )
        worker = self._thread
        if worker is None or (self._state == "closed" and not closing):
            raise HsmUnavailable("HSM is not started" if self._state == "new" else "HSM is closed")
        if not worker.thread.is_alive():
            raise HsmUnavailable("HSM worker thread is not running")
        return worker

    async def _call(self, run: Callable[[float], T], timeout: float, *, closing: bool = False) -> T:
        worker = self._check_usable(closing=closing)
        loop = asyncio.get_running_loop()
        # Start-up and close jobs are not counted against the queue bound: they must never be refused.
        bounded = self._state == "running" and not closing
        observer = self.call_observer
        started = time.monotonic()
        if bounded:
            with self._admitted_lock:
                admitted = self._admitted < self.queue_size
                if admitted:
                    self._admitted += 1
            if not admitted:
                self._counters.add("overloaded")
                if observer is not None:
                    observer(0.0, "overloaded")
                raise Unavailable("HSM queue is full", code="hsm_overloaded")
        job = _Job(self, run, loop, started + timeout, bounded)
        worker.submit(job)
        # The deadline fails the job's future itself: one timer, and no cancellation of the caller's
        # task to undo (asyncio.timeout costs a context manager, a reschedule and an uncancel per call).
        expiry = loop.call_later(timeout, _expire, job)
        outcome = "error"
        try:
            value = await job.future
            outcome = "ok"
            return value  # type: ignore[no-any-return]
        except _Expired:
            outcome = "timeout"
            raise DeadlineExceeded("HSM did not answer within the deadline", code="hsm_timeout") from None
        except asyncio.CancelledError:
            job.abandoned = True
            raise
        finally:
            expiry.cancel()
            if observer is not None:
                observer(time.monotonic() - started, outcome)

    # -- the worker's side (PKCS#11 thread only) ---------------------------------------------------

    def _execute(self, job: _Job) -> tuple[_Job, Any, BaseException | None] | None:
        """Run one job unless its caller has gone; hand the outcome to the caller's loop."""
        try:
            if job.abandoned or time.monotonic() >= job.deadline:
                self._counters.add("skipped_expired")
                return None
            try:
                value, error = job.run(job.deadline), None
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller; the thread must live on
                value, error = None, exc
        finally:
            if job.bounded:
                with self._admitted_lock:
                    self._admitted -= 1
        self._counters.add("completed" if error is None else "failed")
        return job, value, error

    def _deliver(self, job: _Job, value: Any, error: BaseException | None) -> None:
        """On the caller's loop: a caller that gave up never gets this result, now or later."""
        if job.abandoned or job.future.done():
            self._counters.add("discarded_late")
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    def _note_login_failure(self, exc: BaseException) -> None:
        if translate(exc)[0] is Recovery.PIN_REFUSED:
            self._latch_pin_refused()

    def _latch_pin_refused(self) -> None:
        if not self._pin_refused:
            self._pin_refused = True
            log.error("HSM token %r refused the PIN; no further logins until restarted", self.token_label)

    def _ensure_connected(self) -> None:
        if self._pin_refused:
            raise HsmUnavailable("HSM refused the login; restart with the right PIN")
        if not self._broken and self._token.connected:
            return
        now = time.monotonic()
        if now - self._last_reconnect < self._reconnect_interval:
            raise HsmUnavailable("HSM token not usable")
        self._last_reconnect = now
        try:
            self._token.reconnect()
        except Exception as exc:  # noqa: BLE001 - any failure here means "still unavailable"
            self._note_login_failure(exc)
            self._counters.add("reconnect_failures")
            log.warning("HSM token %r still not usable (%s)", self.token_label, type(exc).__name__)
            raise HsmUnavailable("HSM token not usable") from None
        self._broken = False
        self._counters.add("reconnects")
        log.warning("HSM token %r reconnected", self.token_label)

    def _index_stale(self) -> bool:
        return time.monotonic() - self._token.indexed_at >= self._rescan_interval

    def _miss_rescan_allowed(self) -> bool:
        # Counted from the previous miss-driven rescan, not from start: the first miss after start
        # may well be a key another process made a moment ago.
        now = time.monotonic()
        if now - self._last_miss_rescan < self._rescan_interval:
            return False
        self._last_miss_rescan = now
        return True

    def _rescan(self) -> None:
        """Re-read the token's object list (a module re-initialisation); failures mean unavailable."""
        self._counters.add("rescans")
        try:
            self._token.reconnect()
        except Exception as exc:  # noqa: BLE001 - whatever broke, the token is not usable now
            self._note_login_failure(exc)
            self._broken = True
            log.warning("HSM rescan of token %r failed (%s)", self.token_label, type(exc).__name__)
            raise HsmUnavailable("HSM token not usable") from None

    def _run_with_recovery(
        self, op: Callable[[TokenSession], T], deadline: float, *, fresh: bool = False
    ) -> T:
        relogins = refreshes = retries = 0
        rescanned = False
        self._ensure_connected()
        if fresh and self._index_stale():
            rescanned = True
            self._rescan()
        while True:
            self._ensure_connected()
            try:
                return op(self._token)
            except KeyNotOnToken:
                # Possibly a key another process made that SoftHSM has not shown us yet: look again
                # once (rate-limited, a miss storm must not re-initialise the module non-stop).
                if not rescanned and self._miss_rescan_allowed():
                    rescanned = True
                    self._rescan()
                    continue
                raise NotFound("key not found", code="key_not_found") from None
            except SignerError:
                raise
            except Exception as exc:  # translate() is the one place that decides what it means
                recovery, error = translate(exc)
                cause = type(exc).__name__
                if error.code == "hsm_error":
                    log.error("unexpected HSM failure", exc_info=exc)
            if recovery is Recovery.RELOGIN and relogins < _MAX_RELOGINS:
                relogins += 1
                self._relogin(cause)
                continue
            if recovery is Recovery.REFRESH_HANDLE and refreshes < _MAX_HANDLE_REFRESHES:
                refreshes += 1
                self._counters.add("handle_refreshes")
                self._token.forget_handles()
                continue
            if recovery is Recovery.BACKOFF and retries < _MAX_TRANSIENT_RETRIES:
                delay = _FIRST_BACKOFF_SECONDS * (2**retries)
                if time.monotonic() + delay < deadline:
                    retries += 1
                    self._counters.add("transient_retries")
                    time.sleep(delay)
                    continue
            if recovery is Recovery.PIN_REFUSED:
                self._latch_pin_refused()
            if recovery in (Recovery.RECONNECT, Recovery.RELOGIN, Recovery.REFRESH_HANDLE):
                # Token trouble, or a session that broke again right after repair: reconnect before the
                # next job instead of hammering the token now.
                self._broken = True
            log.warning("HSM operation failed (%s -> %s)", cause, error.code)
            raise error from None

    def _relogin(self, cause: str) -> None:
        self._counters.add("relogins")
        log.warning("HSM session lost (%s); opening a new session and logging in once", cause)
        try:
            self._token.reopen_session()
        except Exception as exc:  # noqa: BLE001 - whatever broke, the session is not back
            self._note_login_failure(exc)
            self._broken = True
            log.warning("HSM re-login failed (%s)", type(exc).__name__)
            raise HsmUnavailable("HSM session could not be re-opened") from None


if TYPE_CHECKING:

    def _hsm_is_a_key_vault(hsm: Hsm) -> KeyVault:
        return hsm  # mypy checks Hsm against the protocol the services depend on

    def _hsm_is_a_key_wrapper(hsm: Hsm) -> KeyWrapper:
        return hsm

    def _hsm_is_a_kek_rotator(hsm: Hsm) -> KekRotator:
        return hsm
