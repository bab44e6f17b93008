"""External audit sinks fed from the database through an outbox: an append-only file, syslog, a webhook.

The database's audit log is the outbox: nothing on the request path knows a sink exists, so a sink that
is down, slow or blocking never delays or fails a request. Per sink, ``audit_sinks`` holds the last seq
delivered and a lease; in every process a background task tries to take the lease, and only its holder
delivers (renewing the lease with each batch). It reads the committed events after its cursor, sends
them in order and moves the cursor after the sink acknowledged them. Delivery is at least once: after a
crash or a lost lease, a batch may be sent again; every line carries the event's ``seq`` (the exported
record, exactly as ``/v1/audit/events`` writes it), so a consumer drops what it already has.

The sinks:

- ``file``: the lines appended with ``O_APPEND`` and ``fsync``ed before the cursor moves (mode 0600);
- ``syslog``: one RFC 5424 message per event (facility ``log audit`` (13), severity informational, app
  ``signer``, msgid ``audit``, the record as the message), over UDP (fire and forget: the cursor moves
  once the datagram was handed to the kernel, so a datagram the network drops is lost) or TCP with RFC
  6587 octet counting (no acknowledgements exist: when the receiver closes the connection, the writes
  of the last ``RESEND_WINDOW`` seconds on it are sent again on the next one);
- ``webhook``: one POST per batch of ``application/x-ndjson`` through the webhook transport, so the
  webhook destination allowlist applies; any 2xx acknowledges.

A failing sink is retried with a back-off (0.5 s doubling to 5 s, within the lease), each failure counted in
``signer_audit_sink_failures_total{sink}``; the lag is ``signer_audit_sink_lag_events{sink}``. Once it
has failed for ``audit_sink_alert_seconds``, the alert is raised: an error log line, the gauge
``signer_audit_sink_alert{sink}`` at 1 and an ``audit.sink_failing`` event (with the error's class name,
never its message, which could carry an address); its recovery logs, clears the gauge and records
``audit.sink_recovered``. Events are never dropped: the cursor only moves past what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from signer import metrics
from signer.audit import AuditEvent, AuditRecord, Outcome, export_jsonl, format_at
from signer.config import AuditSinkSettings
from signer.store import Store, Writer

log = logging.getLogger("signer.audit_sinks")

BATCH = 500
LEASE_SECONDS = 15.0
POLL_SECONDS = 0.25
MAX_BACKOFF = 5.0  # below the lease, so the holder keeps it through an outage
SEND_TIMEOUT = 5.0
RESEND_WINDOW = 2.0  # seconds of TCP syslog writes sent again after the receiver closed the connection
_SYSLOG_PRI = 13 * 8 + 6  # facility "log audit", severity informational


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int: ...


class Sink(Protocol):
    name: str

    async def send(self, records: Sequence[AuditRecord], lines: Sequence[str]) -> None:
        """Deliver the lines (one per record, each ending in a newline) or raise."""

    async def close(self) -> None: ...


class FileSink:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self._path = path

    def _append(self, data: bytes) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    async def send(self, records: Sequence[AuditRecord], lines: Sequence[str]) -> None:
        await asyncio.to_thread(self._append, "".join(lines).encode("utf-8"))

    async def close(self) -> None:
        return None


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class SyslogSink:
    def __init__(self, name: str, address: str, protocol: str) -> None:
        self.name = name
        self._host, self._port = _split_address(address)
        self._protocol = protocol
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        # What was written on this connection lately: sent again if the receiver turns out to have closed.
        self._recent: list[tuple[float, bytes]] = []
        self._hostname = socket.gethostname()[:255] or "-"

    def _message(self, record: AuditRecord, line: str) -> bytes:
        header = f"<{_SYSLOG_PRI}>1 {format_at(record.at)} {self._hostname} signer {os.getpid()} audit - "
        return (header + line.rstrip("\n")).encode("utf-8")

    async def send(self, records: Sequence[AuditRecord], lines: Sequence[str]) -> None:
        messages = [self._message(r, line) for r, line in zip(records, lines, strict=True)]
        if self._protocol == "udp":
            await asyncio.to_thread(self._send_udp, messages)
            return
        data = b"".join(b"%d %s" % (len(m), m) for m in messages)
        writer = self._writer
        if writer is not None and (writer.is_closing() or self._reader is None or self._reader.at_eof()):
            # The receiver closed the connection: what was written shortly before may not have been
            # read. It is sent again on the new connection (the receiver dedupes by seq).
            await self.close()
            writer = None
        if writer is None:
            opened = await asyncio.wait_for(asyncio.open_connection(self._host, self._port), SEND_TIMEOUT)
            self._reader, writer = opened
            self._writer = writer
            replay, self._recent = b"".join(d for _, d in self._recent), []
            data = replay + data
        now = asyncio.get_running_loop().time()
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)
        except BaseException:
            await self.close()
            raise
        self._recent = [(t, d) for t, d in self._recent if now - t < RESEND_WINDOW][-8:]
        self._recent.append((now, data))

    def _send_udp(self, messages: list[bytes]) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SEND_TIMEOUT)
            for message in messages:
                sock.sendto(message, (self._host, self._port))

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        self._reader = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


class WebhookSink:
    def __init__(self, name: str, url: str, transport: Transport) -> None:
        self.name = name
        self._url = url
        self._transport = transport

    async def send(self, records: Sequence[AuditRecord], lines: Sequence[str]) -> None:
        headers = {
            "Content-Type": "application/x-ndjson",
            "X-Signer-Audit-First-Seq": str(records[0].seq),
            "X-Signer-Audit-Last-Seq": str(records[-1].seq),
        }
        status = await self._transport.post(self._url, "".join(lines).encode("utf-8"), headers, SEND_TIMEOUT)
        if not 200 <= status < 300:
            raise OSError(f"status {status}")

    async def close(self) -> None:
        return None


class SinkDelivery:
    """One sink's delivery task in this process (delivering only while it holds the sink's lease)."""

    def __init__(self, store: Store, sink: Sink, *, alert_seconds: float) -> None:
        self._store = store
        self.sink = sink
        self._alert_seconds = alert_seconds
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._failing_since: datetime | None = None
        self.alerted = False
        self._lag = metrics.AUDIT_SINK_LAG.labels(sink=sink.name)
        self._failures = metrics.AUDIT_SINK_FAILURES.labels(sink=sink.name)
        self._alert = metrics.AUDIT_SINK_ALERT.labels(sink=sink.name)

    async def _lease(self) -> int | None:
        now = datetime.now(UTC)

        async def unit(writer: Writer) -> int | None:
            # A sink added later receives the whole stored log first.
            state = await writer.sinks.take_lease(
                self.sink.name, self._owner, now + timedelta(seconds=LEASE_SECONDS), now, 0
            )
            return None if state is None else state.delivered_seq

        return await self._store.submit(unit)

    async def _record(self, kind: str, outcome: Outcome, **fields: Any) -> None:
        now = datetime.now(UTC)
        event = AuditEvent.of(
            kind, at=now, outcome=outcome, actor=None, request_id=None, sink=self.sink.name, **fields
        )

        async def unit(writer: Writer) -> None:
            writer.append_audit(event)

        await self._store.submit(unit)

    async def step(self) -> bool:
        """One round: take or renew the lease, deliver one batch. True when more may be waiting."""
        cursor = await self._lease()
        if cursor is None:
            return False  # another process delivers to this sink
        async with self._store.read() as reader:
            head, _ = await reader.audit_head()
            records = await reader.audit.events(after_seq=cursor, limit=BATCH)
        self._lag.set(max(0, head - cursor))
        if not records:
            return False
        lines = list(export_jsonl(records))
        try:
            await asyncio.wait_for(self.sink.send(records, lines), SEND_TIMEOUT * 2)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a sink's fault is recorded and retried, never raised
            await self._failed(exc)
            raise _Retry() from None
        last = records[-1].seq

        async def advance(writer: Writer) -> bool:
            return await writer.sinks.delivered(self.sink.name, self._owner, last)

        await self._store.submit(advance)
        self._lag.set(max(0, head - last))
        if self._failing_since is not None:
            await self._recovered()
        return len(records) == BATCH

    async def _failed(self, exc: Exception) -> None:
        self._failures.inc()
        now = datetime.now(UTC)
        error = type(exc).__name__
        if self._failing_since is None:
            self._failing_since = now
            log.warning(
                "audit sink delivery failed; retrying", extra={"sink": self.sink.name, "error": error}
            )
        owner, since = self._owner, self._failing_since

        async def unit(writer: Writer) -> None:
            await writer.sinks.failing(self.sink.name, owner, since, error)

        with contextlib.suppress(Exception):
            await self._store.submit(unit)
        failing_for = (now - self._failing_since).total_seconds()
        if not self.alerted and failing_for >= self._alert_seconds:
            self.alerted = True
            self._alert.set(1)
            log.error(
                "audit sink failing: events are kept and will be delivered when it recovers",
                extra={"sink": self.sink.name, "error": error, "failing_seconds": int(failing_for)},
            )
            with contextlib.suppress(Exception):
                await self._record(
                    "audit.sink_failing", Outcome.FAILED, error_class=error, since=format_at(since)
                )

    @contextlib.contextmanager
    def _logged(self, kind: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - the database is down too: the log line stands
            log.error(
                "audit sink event not recorded",
                extra={"sink": self.sink.name, "kind": kind, "error": type(exc).__name__},
            )

    async def _recovered(self) -> None:
        since, self._failing_since = self._failing_since, None
        if self.alerted:
            self.alerted = False
            log.info("audit sink recovered", extra={"sink": self.sink.name})
            with self._logged("audit.sink_recovered"):
                await self._record(
                    "audit.sink_recovered", Outcome.ALLOWED, since=None if since is None else format_at(since)
                )
            # Cleared after the event is recorded (or failed to be): whoever sees the alert gone finds
            # the recovery in the log.
            self._alert.set(0)

    async def run(self) -> None:
        """Deliver until cancelled; a fault of the sink or the database only delays delivery."""
        backoff = 0.5
        while True:
            try:
                more = await self.step()
                backoff = 0.5
                if not more:
                    await asyncio.sleep(POLL_SECONDS)
            except asyncio.CancelledError:
                raise
            except _Retry:
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            except Exception as exc:  # noqa: BLE001 - the database is down: try again later
                log.warning(
                    "audit sink round failed", extra={"sink": self.sink.name, "error": type(exc).__name__}
                )
                await asyncio.sleep(min(backoff, 5.0))
                backoff = min(MAX_BACKOFF, backoff * 2)

    async def close(self) -> None:
        async def unit(writer: Writer) -> None:
            await writer.sinks.release(self.sink.name, self._owner)

        with contextlib.suppress(Exception):
            await self._store.submit(unit)
        await self.sink.close()


class _Retry(Exception):
    """The sink failed this round (already recorded): back off and try again."""


def build_sink(config: AuditSinkSettings, transport: Transport) -> Sink:
    """A sink from its settings (``signer.config.AuditSinkSettings``)."""
    kind = config.type
    name = str(config.name)
    if kind == "file":
        return FileSink(name, Path(str(config.path)))
    if kind == "syslog":
        return SyslogSink(name, str(config.address), str(config.protocol))
    return WebhookSink(name, str(config.url), transport)
