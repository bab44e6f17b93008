"""The JSON log lines: the formatter, the access-line record and the access line written straight to the
service's handler give exactly the line the plain ``logging`` path gives with the reference formatter
below (the definition of a line)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.logs import JsonFormatter, JsonLineHandler, _Clock, access

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def reference_format(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The formatter as it was before it was made cheaper (the definition of the line)."""
    entry: dict[str, object] = {
        "at": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
    if record.exc_info:
        entry["exception"] = formatter.formatException(record.exc_info)
    return json.dumps(entry, ensure_ascii=False)


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),  # up to 2100
        st.integers(min_value=0, max_value=4_102_444_800).map(float),
        # Fractions next to a microsecond boundary and to the next second (rounding, carry).
        st.tuples(
            st.integers(min_value=1_600_000_000, max_value=1_900_000_000),
            st.integers(min_value=0, max_value=999_999),
            st.sampled_from([-1e-7, -5e-7, 0.0, 4.9e-7, 5e-7, 5.1e-7]),
        ).map(lambda t: t[0] + t[1] / 1e6 + t[2]),
        st.just(1_700_000_000.9999995),
        st.just(1_700_000_000.0000005),
    )
)
def test_clock_matches_datetime_isoformat(created: float) -> None:
    clock = _Clock()
    expected = datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
    assert clock.iso(created) == expected
    # And again from a warm cache, after a different second.
    clock.iso(created + 3600.0)
    assert clock.iso(created) == expected


def test_clock_consecutive_times_share_the_cached_second() -> None:
    clock = _Clock()
    base = math.floor(1_700_000_000.0)
    for micro in range(0, 2_000_000, 12_347):
        t = base + micro / 1e6
        assert clock.iso(t) == datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.lists(st.integers(), max_size=3),
    st.binary(max_size=8),
)
# Any name an ``extra`` could carry, but the record's own attributes and methods (makeRecord refuses them).
_NAMES = st.text(min_size=0, max_size=12).filter(
    lambda k: k not in _STANDARD and k not in dir(logging.LogRecord)
)


@settings(max_examples=500, deadline=None)
@given(
    message=st.text(max_size=40),
    extra=st.dictionaries(_NAMES, _VALUES, max_size=8),
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]),
    created=st.floats(min_value=1e9, max_value=3e9),
)
def test_formatter_matches_the_reference(
    message: str, extra: dict[str, Any], level: int, created: float
) -> None:
    record = logging.LogRecord("signer.test", level, __file__, 1, message, None, None)
    record.created = created
    for key, value in extra.items():
        setattr(record, key, value)
    formatter = JsonFormatter()
    assert formatter.format(record) == reference_format(formatter, record)


def test_formatter_with_an_exception_and_arguments() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "signer.http", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    record.request_id = "r1"
    assert formatter.format(record) == reference_format(formatter, record)
    assert json.loads(formatter.format(record))["exception"].startswith("Traceback")


@contextlib.contextmanager
def capture(direct: bool = False) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger with one handler on a string stream: the service's own (``access`` writes to it
    directly) or a plain ``StreamHandler`` (``access`` hands it a record)."""
    stream = io.StringIO()
    handler = JsonLineHandler(stream) if direct else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("signer.test-access")
    logger.filters[:] = []
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, stream
    finally:
        logger.handlers[:] = []
        logger.filters[:] = []
        logger.propagate = True


@pytest.mark.parametrize("direct", [False, True], ids=["record", "direct"])
@settings(max_examples=300, deadline=None)
@given(
    principal=st.one_of(st.none(), st.text(max_size=20)),
    status=st.integers(min_value=100, max_value=599),
    duration=st.floats(min_value=0, max_value=1e6).map(lambda d: round(d, 2)),
    created=st.floats(min_value=1e9, max_value=3e9),
)
def test_access_line_is_the_logger_info_line(
    direct: bool, principal: str | None, status: int, duration: float, created: float
) -> None:
    fields = {
        "request_id": "0123456789abcdef",
        "principal": principal,
        "method": "POST",
        "route": "/v1/keys/{key_id}/sign/transaction",
        "status": status,
        "duration_ms": duration,
    }
    fast = access_and_reference(direct, created, fields)
    assert list(json.loads(fast)) == ["at", "level", "logger", "event", *fields]


def access_and_reference(direct: bool, created: float, fields: dict[str, Any]) -> str:
    """The line ``access`` writes with these fields, checked to be the reference line of the record
    ``Logger.info`` would make."""
    with capture(direct) as (logger, stream):
        access(logger, "request", created, **fields)
        fast = stream.getvalue()
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "request", None, None, extra=fields)
    record.created = created
    assert fast == reference_format(JsonFormatter(), record) + "\n"
    return fast


@pytest.mark.parametrize("direct", [False, True], ids=["record", "direct"])
def test_access_line_respects_the_level_and_filters(direct: bool) -> None:
    with capture(direct) as (logger, stream):
        _level_and_filters(logger, stream)


def test_access_line_reaches_every_handler_a_record_would() -> None:
    """A handler that is not the service's (a test's capture, an operator's) or a filter on one makes
    ``access`` hand over a record; every handler on the way still writes its line once."""
    with capture(direct=True) as (logger, stream):
        logger.propagate = True
        parent_stream = io.StringIO()
        parent = logging.getLogger("signer")
        foreign = logging.StreamHandler(parent_stream)
        foreign.setFormatter(JsonFormatter())
        saved = parent.handlers[:], parent.propagate
        parent.handlers[:] = [foreign]
        parent.propagate = False
        try:
            access(logger, "request", 1.7e9, status=200)
            assert json.loads(stream.getvalue())["status"] == 200
            assert json.loads(parent_stream.getvalue())["status"] == 200
            parent.handlers[:] = []
            logger.handlers[0].addFilter(lambda record: record.status != 404)
            access(logger, "request", 1.7e9, status=404)
            access(logger, "request", 1.7e9, status=201)
            assert [json.loads(line)["status"] for line in stream.getvalue().splitlines()] == [200, 201]
        finally:
            parent.handlers[:], parent.propagate = saved


@settings(max_examples=300, deadline=None)
@given(extra=st.dictionaries(_NAMES, _VALUES, max_size=6), created=st.floats(min_value=1e9, max_value=3e9))
def test_access_line_of_any_fields_is_the_logger_info_line(extra: dict[str, Any], created: float) -> None:
    """Whatever the fields (a list, bytes, NaN, a name like one of the line's own members): written
    straight to the service's handler or through a record, the line is ``Logger.info``'s."""
    access_and_reference(True, created, extra)


def _level_and_filters(logger: logging.Logger, stream: io.StringIO) -> None:
    logger.setLevel(logging.WARNING)
    access(logger, "request", 1.7e9, status=200)
    assert stream.getvalue() == ""
    logger.setLevel(logging.INFO)
    logger.addFilter(lambda record: record.status != 404)
    access(logger, "request", 1.7e9, status=404)
    assert stream.getvalue() == ""
    access(logger, "request", 1.7e9, status=200)
    assert json.loads(stream.getvalue())["status"] == 200


def test_logged_tracebacks_withhold_messages_that_could_quote_a_request() -> None:
    """A parser or driver message can quote what a client sent: frames stay, such messages do not."""
    from signer.errors import InvalidRequest

    canary = "canary-" + "5" * 24
    formatter = JsonFormatter()
    try:
        try:
            raise ValueError(f"bad header {canary}")
        except ValueError as inner:
            try:
                open(f"/nonexistent/{canary}")
            except OSError as exc:
                raise InvalidRequest("our own words", code="malformed_json") from exc
            raise AssertionError("unreachable") from inner
    except InvalidRequest:
        record = logging.LogRecord("signer.http", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = json.loads(formatter.format(record))["exception"]
    assert canary not in text
    assert text.startswith("Traceback") and "test_logs.py" in text
    assert "malformed_json: our own words" in text
    assert "[Errno 2]" in text and "message withheld" in text
