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
from datetime import UTC, datetime
from typing import Any

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


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

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
        self.process = os.getpid()
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
