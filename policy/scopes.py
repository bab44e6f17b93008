"""Scopes: hierarchical names such as ``acme/payments/prod`` and how they contain one another.

A scope is one or more segments separated by ``/``; each segment is lower-case letters, digits, ``.``,
``_`` or ``-``, starting with a letter or digit. A scope contains itself and every scope below it, and
matching is on whole segments: ``acme/pay`` does not contain ``acme/payments``. There is no root scope
that contains everything, so no grant or policy can silently cover every organisation. Where several
definitions of one name are visible from a scope (a secret ``db`` at ``acme`` and at
``acme/payments``; a rule id in documents attached at two levels), the narrowest one wins.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TypeVar

from policy.errors import PolicyInputError
from policy.names import MAX_SCOPE_DEPTH, is_scope_path

T = TypeVar("T")


def is_scope(text: object) -> bool:
    if not isinstance(text, str):
        return False
    return is_scope_path(text)


def scope_segments(scope: str) -> tuple[str, ...]:
    segments = _segments(scope) if isinstance(scope, str) else None
    if segments is None:
        raise PolicyInputError(
            "invalid_scope",
            f"a scope is 1 to {MAX_SCOPE_DEPTH} '/'-separated segments of [a-z0-9._-], "
            "each starting with a letter or digit",
        )
    return segments


@functools.lru_cache(maxsize=4096)
def _segments(scope: str) -> tuple[str, ...] | None:
    # A request, its grant check and the grants it is judged against each split the same few scopes
    # again (three times per request): the answer depends on the text alone, so it is kept (bounded).
    return tuple(scope.split("/")) if is_scope_path(scope) else None


def scope_depth(scope: str) -> int:
    return len(scope_segments(scope))


def scope_contains(outer: str, inner: str) -> bool:
    """True when ``inner`` is ``outer`` or lies below it, compared segment by segment."""
    return path_contains(scope_segments(outer), scope_segments(inner))


def path_contains(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    """``scope_contains`` on scopes already split (and so already validated) by ``scope_segments``."""
    return inner[: len(outer)] == outer


def narrowest(scope: str, definitions: Iterable[tuple[str, T]]) -> T | None:
    """The definition visible from ``scope`` whose own scope is deepest, or None if none is visible.

    ``definitions`` are ``(scope, value)`` pairs of one name. Two visible definitions at the same depth
    are necessarily at the same scope: that is ambiguous and raises ``PolicyInputError``
    (``ambiguous_definition``) rather than picking one by accident of order.
    """
    best: tuple[int, T] | None = None
    tied = False
    for defined_at, value in definitions:
        if not scope_contains(defined_at, scope):
            continue
        depth = scope_depth(defined_at)
        if best is None or depth > best[0]:
            best, tied = (depth, value), False
        elif depth == best[0]:
            tied = True
    if tied:
        raise PolicyInputError("ambiguous_definition", "two definitions of one name at the same scope")
    return None if best is None else best[1]
