"""Argument checks the table modules share: a caller's programming error is a ``ValueError`` before any
statement runs, never a database error. Pure: no database, no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def aware(value: datetime | None, name: str, *, optional: bool = False) -> None:
    """``value`` is a timezone-aware datetime (or None, when ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def tz_aware(value: datetime | None, name: str) -> None:
    """``value`` is None or carries a time zone (the ledger's, policies' and sessions' wording)."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware")


def nonempty(value: Any, name: str, *, optional: bool = False) -> None:
    """``value`` is a non-empty string (or None, when ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")


def one_of(value: str, allowed: frozenset[str], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of: {', '.join(sorted(allowed))}")
