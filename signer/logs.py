"""JSON log lines: one object per event with the fields passed in ``extra``; never a secret by construction
(callers pass identifiers, codes and counts, not values).

A line is ``json.dumps`` of ``at``, ``level``, ``logger``, ``event``, then the fields. The access log
writes one line per request, so that line is made cheaply: where it goes only to the service's own
handler (``configure_logging``), ``access`` writes the same text there, member by member, without a
``LogRecord`` or the handler chain; otherwise it hands the handlers a record made without the caller
lookup and thread bookkeeping that no field uses. Either way the line is the one ``Logger.info`` with
the same ``extra`` gives.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import traceback
from datetime import UTC, datetime
from json.encoder import encode_basestring as _dumps_str
from types import TracebackType
from typing import Any

from signer.errors import SignerError

_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_PLAIN = (str, int, float, bool, type(None))
# json.dumps(entry, ensure_ascii=False) builds this encoder on every call; it keeps no state between calls.
_encode = json.JSONEncoder(ensure_ascii=False).encode
# The members every line has: an extra field with one of these names takes its place in the line.
_OWN = frozenset({"at", "level", "logger", "event", "exception"})
# ', "name": ' per field name of an access line (names come from the code, never from a request).
_FIELD_TEXT: dict[str, str] = {}


def _scalar(value: object) -> str | None:
    """``json.dumps(value, ensure_ascii=False)`` for the values an access line carries (text, an exact
    int, a finite float, None, a bool); None for anything else (the record's way writes it)."""
    kind = type(value)
    if kind is str:
        return _dumps_str(value)  # type: ignore[arg-type]
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):  # type: ignore[arg-type]
        return float.__repr__(value)
    return None


class _Clock:
    """``datetime.fromtimestamp(t, UTC).isoformat()`` with "Z", the date and time part kept per second."""

    def __init__(self) -> None:
        # One tuple, swapped whole, so a reader never pairs one second with another second's prefix.
        self._cached: tuple[float, str] = (math.nan, "")

    def iso(self, created: float) -> str:
        # fromtimestamp's own rounding: the fraction to microseconds, half to even, carried into the second.
        fraction, whole = math.modf(created)
        micro = round(fraction * 1e6)
        if micro >= 1_000_000:
            whole += 1.0
            micro -= 1_000_000
        elif micro < 0:
            whole -= 1.0
            micro += 1_000_000
        second, prefix = self._cached
        if whole != second:
            prefix = datetime.fromtimestamp(whole, UTC).isoformat()[:19]
            self._cached = (whole, prefix)
        # isoformat leaves the fraction out when it is zero.
        return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"


def _withheld(exc: BaseException) -> str:
    """What a log may say about an exception: its class, and its message only when we wrote it.

    Other messages can quote what a client sent (a parser quoting a header, a driver quoting the
    parameters of a statement), so they stay out of the log; the frames still say where it failed.
    """
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if isinstance(exc, SignerError):
        return f"{name}: {exc.code}: {exc.message}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{name}: [Errno {exc.errno}] {exc.strerror}"  # never the file name
    return f"{name} (message withheld)"


def format_exception(exc_info: tuple[type[BaseException], BaseException, TracebackType | None]) -> str:
    """A traceback (causes and contexts included) whose exception messages follow ``_withheld``."""
    lines: list[str] = []
    seen: set[int] = set()

    def describe(exc: BaseException) -> None:
        seen.add(id(exc))
        if exc.__cause__ is not None and id(exc.__cause__) not in seen:
            describe(exc.__cause__)
            lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
        elif exc.__context__ is not None and not exc.__suppress_context__ and id(exc.__context__) not in seen:
            describe(exc.__context__)
            lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
        if exc.__traceback__ is not None:
            lines.append("Traceback (most recent call last):\n")
            lines.extend(traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__)).format())
        lines.append(_withheld(exc) + "\n")

    describe(exc_info[1])
    return "".join(lines).rstrip("\n")


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def formatException(self, ei: Any) -> str:
        if ei and ei[1] is not None:
            return format_exception(ei)
        return super().formatException(ei)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "at": self._clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key[:1] != "_":
                entry[key] = value if isinstance(value, _PLAIN) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)

    def access_line(self, name: str, event: str, created: float, fields: dict[str, Any]) -> str | None:
        """``format`` of ``access``'s INFO record with these fields, the same text written member by
        member; None where a field is not a plain value or is named like one of the line's own
        members (``format`` decides those)."""
        parts = [
            f'{{"at": "{self._clock.iso(created)}", "level": "info", "logger": {_dumps_str(name)}, '
            f'"event": {_dumps_str(event)}'
        ]
        for key, value in fields.items():
            text = _FIELD_TEXT.get(key)
            if text is None:
                if type(key) is not str or key[:1] == "_" or key in _OWN or key in _STANDARD:
                    return None
                text = _FIELD_TEXT[key] = f", {_dumps_str(key)}: "
            encoded = _scalar(value)
            if encoded is None:
                return None
            parts.append(text)
            parts.append(encoded)
        parts.append("}")
        return "".join(parts)


# os.getpid() without its system call for every record (a line per request).
_PID = [os.getpid()]
# A forked child learns its own pid before any of its code runs (multiprocessing's fork, os.fork).
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


class _AccessRecord(logging.LogRecord):
    """A record for a line whose fields are all in ``extra``: the source location, thread and process
    names that ``LogRecord`` looks up on every call are fixed, as no field of a JSON line shows them."""

    pathname = __file__
    filename = "logs.py"
    module = "logs"
    lineno = 0
    funcName = "access"
    stack_info = None
    exc_info = None
    exc_text = None
    thread = None
    threadName = None
    processName = None
    taskName = None

    def __init__(self, name: str, level: int, msg: str, created: float, extra: dict[str, Any]) -> None:
        # Not LogRecord.__init__: the attributes a handler or formatter reads are set here or above.
        self.name = name
        self.msg = msg
        self.args = None
        self.levelname = logging.getLevelName(level)
        self.levelno = level
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
        self.process = _PID[0]
        self.__dict__.update(extra)

    def getMessage(self) -> str:
        return self.msg


class JsonLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The service's handler (``configure_logging``): JSON lines on a stream. ``access`` writes its
    lines straight to it when nothing else would see the record (no filter, no other handler)."""

    def write_line(self, line: str, name: str, event: str, created: float, fields: dict[str, Any]) -> None:
        """``emit`` of ``access``'s record, whose formatted line is ``line`` (the rest makes the record,
        only for ``handleError``)."""
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(line + self.terminator)
                self.stream.flush()
            except RecursionError:
                raise
            except Exception:  # noqa: BLE001 - as StreamHandler.emit: reported by handleError
                self.handleError(_AccessRecord(name, logging.INFO, event, created, fields))


def _direct_handlers(logger: logging.Logger) -> list[tuple[JsonLineHandler, JsonFormatter]] | None:
    """The handlers ``logger.handle`` would pass an INFO record to, when every one is a plain
    ``JsonLineHandler`` and no logger or handler on the way has a filter; else None (the record's
    way). Walked on every call, as ``Logger.callHandlers`` does: handlers and filters can change."""
    if logger.disabled or logger.filters:
        return None
    found: list[tuple[JsonLineHandler, JsonFormatter]] = []
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if logging.INFO >= handler.level:
                if type(handler) is not JsonLineHandler or handler.filters:
                    return None
                formatter = handler.formatter
                if type(formatter) is not JsonFormatter:
                    return None
                found.append((handler, formatter))
        if not current.propagate:
            break
        current = current.parent
    # No handler at all: logging's last resort (WARNING and up) would not print an INFO line either.
    return found


def access(logger: logging.Logger, event: str, created: float, **fields: Any) -> None:
    """``logger.info(event, extra=fields)`` at a fraction of the cost, for a line per request.

    ``created`` is ``time.time()`` now (the caller usually has it). Field names must not be a record's
    standard attributes (``Logger.makeRecord`` refuses those too). Where the line goes only to the
    service's own handlers it is written to them directly, without a record; any filter or other
    handler (a test's capture, an operator's configuration) gets the record as ``logger.info`` makes it.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handlers = _direct_handlers(logger)
    if handlers is not None:
        lines: list[tuple[JsonLineHandler, str]] = []
        for handler, formatter in handlers:
            line = formatter.access_line(logger.name, event, created, fields)
            if line is None:
                break  # a field only the record's way writes: every handler gets the record
            lines.append((handler, line))
        else:
            for handler, line in lines:
                handler.write_line(line, logger.name, event, created, fields)
            return
    logger.handle(_AccessRecord(logger.name, logging.INFO, event, created, fields))


def configure_logging(level: str = "INFO") -> None:
    handler = JsonLineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
