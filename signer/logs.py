"""JSON log lines: one object per event with the fields passed in ``extra``; never a secret by construction
(callers pass identifiers, codes and counts, not values).

The access log writes one line per request, so the line is built cheaply: ``access`` hands the handlers
a record made without the caller lookup and thread bookkeeping that no field of the line uses, and the
formatter reuses one encoder and the timestamp's whole-second prefix. The line is the same as one made
through ``Logger.info`` with the same ``extra``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from signer.errors import SignerError

_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_PLAIN = str | int | float | bool | None
# json.dumps(entry, ensure_ascii=False) builds this encoder on every call; it keeps no state between calls.
_encode = json.JSONEncoder(ensure_ascii=False).encode


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


def access(logger: logging.Logger, event: str, created: float, **fields: Any) -> None:
    """``logger.info(event, extra=fields)`` at a fraction of the cost, for a line per request.

    ``created`` is ``time.time()`` now (the caller usually has it). Field names must not be a record's
    standard attributes (``Logger.makeRecord`` refuses those too).
    """
    if logger.isEnabledFor(logging.INFO):
        logger.handle(_AccessRecord(logger.name, logging.INFO, event, created, fields))


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
