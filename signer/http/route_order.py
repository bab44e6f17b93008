"""The order routes are registered in: the hot routes (secret fetch, signing) first, where that is safe.

aiohttp's router looks a request up by its path's longest registered literal prefix and then tries that
prefix's resources in registration order, a regular expression and a coroutine each. The fetch route was
the tenth of ten under ``/v1/secrets`` and the signing routes the fifth to ninth under ``/v1/keys``:
~20 us of failed matches per fetch (measured: 32 us to resolve the fetch route last in its bucket,
12 us first). ``hot_first`` registers the named routes before all others. Moving a route ahead of another
changes which one answers only where a path can match both, so each move is checked: two route paths
are disjoint when they have different numbers of segments or differ in a literal segment at the same
place; a segment with a custom pattern (``{name:regex}``) or mixing text and a variable counts as
matching anything. A move that cannot be shown harmless raises at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from aiohttp import web

# The routes every caller of the hot paths hits, in the order they are registered ahead of the rest.
HOT_PATHS: tuple[str, ...] = (
    "/v1/secrets/{secret_id}/fetch",
    "/v1/keys/{key_id}/sign/transaction",
    "/v1/keys/{key_id}/sign/typed-data",
    "/v1/keys/{key_id}/sign/message",
    "/v1/keys/{key_id}/sign/digest",
    "/v1/keys/{key_id}/sign/authorization",
)

_VARIABLE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def _segments(path: str) -> list[str | None] | None:
    """Each segment's literal text, or None for a plain variable (it matches any one non-empty segment);
    None for the whole path when a segment is anything else (a custom pattern may span segments)."""
    out: list[str | None] = []
    for part in path.split("/"):
        if "{" not in part and "}" not in part:
            out.append(part)
        elif _VARIABLE.fullmatch(part):
            out.append(None)
        else:
            return None
    return out


def disjoint(first: str, second: str) -> bool:
    """True when no request path can match both route paths (False when that cannot be shown)."""
    a, b = _segments(first), _segments(second)
    if a is None or b is None:
        return False
    if len(a) != len(b):
        return True
    return any(x is not None and y is not None and x != y for x, y in zip(a, b, strict=True))


def _path(route: web.AbstractRouteDef) -> str | None:
    return route.path if isinstance(route, web.RouteDef) else None


def hot_first(
    table: Iterable[web.AbstractRouteDef], hot: Sequence[str] = HOT_PATHS
) -> list[web.AbstractRouteDef]:
    """``table``'s routes with those whose path is in ``hot`` first (in ``hot``'s order), the rest in
    their own order. ValueError when a route would move ahead of one it may overlap with."""
    routes = list(table)
    rank = {path: index for index, path in enumerate(hot)}
    moved = sorted((r for r in routes if _path(r) in rank), key=lambda r: rank[_path(r) or ""])
    missing = set(hot) - {_path(r) for r in moved}
    if missing:
        raise ValueError(f"hot routes not registered: {sorted(missing)}")
    ordered = moved + [r for r in routes if _path(r) not in rank]
    before = {id(r): index for index, r in enumerate(routes)}
    after = {id(r): index for index, r in enumerate(ordered)}
    for route in moved:
        for other in routes:
            if before[id(other)] < before[id(route)] and after[id(other)] > after[id(route)]:
                path, other_path = _path(route) or "", _path(other)
                if other_path is None or not disjoint(path, other_path):
                    raise ValueError(f"{path} cannot move ahead of {other_path or other!r}")
    return ordered


__all__ = ["HOT_PATHS", "disjoint", "hot_first"]
