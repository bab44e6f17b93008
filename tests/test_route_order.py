"""The hot routes registered first (signer.http.route_order): moves are checked, and no request path
resolves to a different route than in declaration order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

import signer.http.routes  # noqa: F401 - registers every route on the table
from signer.app import create_app
from signer.config import Settings
from signer.http.route_order import HOT_PATHS, disjoint, hot_first
from signer.http.routes.common import routes


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("/v1/secrets/{secret_id}/fetch", "/v1/secrets/{secret_id}/versions", True),
        ("/v1/secrets/{secret_id}/fetch", "/v1/secrets/{secret_id}", True),
        ("/v1/secrets/{secret_id}/fetch", "/v1/secrets/{other}/{tail}", False),
        ("/v1/secrets/{secret_id}/fetch", "/v1/secrets/resolve/fetch", False),
        ("/v1/secrets/{secret_id}/fetch", "/v1/secrets/{tail:.*}", False),
        ("/v1/secrets/{secret_id}/fetch", "/v1/secrets/x{secret_id}/fetch", False),
        ("/v1/keys/{key_id}/sign/digest", "/v1/keys/{key_id}/sign/message", True),
        ("/v1/keys", "/v1/keys/{key_id}", True),
    ],
)
def test_disjoint_only_when_no_path_can_match_both(first: str, second: str, expected: bool) -> None:
    assert disjoint(first, second) is expected
    assert disjoint(second, first) is expected


async def _handler(request: web.Request) -> web.Response:
    return web.Response()


def test_a_move_ahead_of_a_route_that_may_overlap_is_refused() -> None:
    table = web.RouteTableDef()
    table.post("/v1/things/{thing_id}/{action}")(_handler)
    table.post("/v1/things/{thing_id}/go")(_handler)
    with pytest.raises(ValueError, match="cannot move ahead"):
        hot_first(table, ("/v1/things/{thing_id}/go",))
    with pytest.raises(ValueError, match="not registered"):
        hot_first(table, ("/v1/nothing",))


def _sample(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "abc_1", path)


async def test_every_route_resolves_as_in_declaration_order() -> None:
    declared, hot = web.Application(), web.Application()
    declared.add_routes(routes)
    hot.add_routes(hot_first(routes))
    checked = 0
    for route in routes:
        assert isinstance(route, web.RouteDef)
        for path in (_sample(route.path), _sample(route.path) + "/x", _sample(route.path).rsplit("/", 1)[0]):
            for method in ("GET", "POST", "PUT", "DELETE"):
                a = await declared.router.resolve(make_mocked_request(method, path, app=declared))
                b = await hot.router.resolve(make_mocked_request(method, path, app=hot))
                found = a.http_exception, b.http_exception
                if a.http_exception is None:
                    assert (b.route.method, b.route.resource.canonical, dict(b)) == (
                        a.route.method,
                        a.route.resource.canonical,
                        dict(a),
                    ), (method, path)
                    checked += 1
                else:
                    assert type(found[0]) is type(found[1]), (method, path)
    assert checked >= len(routes)


def test_the_app_registers_the_hot_routes_first(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    registered = [r.resource.canonical for r in app.router.routes() if r.resource is not None]
    assert registered[: len(HOT_PATHS)] == list(HOT_PATHS)
