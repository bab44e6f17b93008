"""A-02: bearer tokens are never stored in a usable form, and a wrong token's answer does not depend on
how much of a real one it got right.

Storage: after tokens were issued (``signer init``, new principals, refresh, re-issue), the raw database
(the SQLite file with its WAL, or every PostgreSQL row as JSON) must not contain any token's full value,
its secret part, or the secret's bytes (raw or hex). Only the public token id and a keyed digest may be
there.

Timing and answers: wrong tokens that share everything but the last character with a real one, wrong
tokens with the real id and a random secret, and tokens with an unknown id are sent interleaved in random
order on one keep-alive connection. All get the same 401 body. Their median latencies must agree within a
generous bound (25% + 0.5 ms): far wider than network noise on loopback, far narrower than an extra
database round trip or a secret-dependent early exit in a slow path would make them differ. A round
that misses the bound is measured again (up to three rounds); only a difference that persists fails.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import secrets
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

from tests.dbfixtures import pg_execute, run_sync
from tests.service_harness import Server, init_installation, make_service
from tests.system.support import HANG_GUARD

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def issued_tokens(server: Server, name: str) -> list[str]:
    """Tokens of every kind the service hands out, through every path that hands them out."""
    admin = server.installation.admin["credentials"]
    created = make_service(server, name)
    first = created["credentials"]
    status, _, refreshed = server.call("POST", "/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 200, refreshed
    status, _, reissued = server.call(
        "POST", f"/v1/principals/{created['principal']['id']}/tokens", token=server.installation.admin_token
    )
    assert status == 201, reissued
    return [
        bundle[kind]
        for bundle in (admin, first, refreshed, reissued)
        for kind in ("access_token", "refresh_token")
    ]


def forms(token: str) -> dict[str, bytes]:
    """Every shape in which a token's secret could sit in storage."""
    secret = token.split(".", 1)[1]
    raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    return {
        "full value": token.encode(),
        "secret": secret.encode(),
        "secret bytes": raw,
        "secret hex": raw.hex().encode(),
    }


def assert_absent(tokens: Iterable[str], dump: bytes, where: str) -> None:
    for token in tokens:
        token_id = token.split(".", 1)[0].split("_", 1)[1]
        assert token_id.encode() in dump, f"sanity: token id {token_id} should be stored in {where}"
        for shape, value in forms(token).items():
            assert value not in dump, f"a token's {shape} is stored in {where}"


def test_sqlite_file_holds_no_token(server: Server, unique_name: str) -> None:
    tokens = issued_tokens(server, unique_name)
    db = server.installation.data_dir / "signer.db"
    dump = b"".join(path.read_bytes() for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if path.exists())
    assert_absent(tokens, dump, "the SQLite database")


async def _pg_dump(url: str) -> bytes:
    tables = await pg_execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    rows = []
    for table in tables:
        name = table["tablename"]
        rows += await pg_execute(url, f'SELECT row_to_json(t)::text AS row FROM "{name}" t')
    return "\n".join(row["row"] for row in rows).encode()


def test_postgres_rows_hold_no_token(tmp_path: Path, pg_url: str, launch) -> None:
    server = launch(init_installation(tmp_path / "data", pg_url))
    tokens = issued_tokens(server, "pg-token-storage")
    dump = run_sync(lambda: _pg_dump(pg_url))
    assert_absent(tokens, dump, "the PostgreSQL database")


# -- timing -----------------------------------------------------------------------------------------


def wrong_tokens(real: str, count: int) -> dict[str, list[str]]:
    prefix, secret = real.split(".", 1)

    def random_secret() -> str:
        return "".join(secrets.choice(B64URL) for _ in range(43))

    near = []
    for _ in range(count):
        last = secrets.choice(B64URL.replace(secret[-1], ""))
        near.append(f"{prefix}.{secret[:-1]}{last}")
    return {
        "shares all but the last character": near,
        "right id, random secret": [f"{prefix}.{random_secret()}" for _ in range(count)],
        "unknown id": [f"sat_{secrets.token_hex(12)}.{random_secret()}" for _ in range(count)],
    }


def measure(server: Server, groups: dict[str, list[str]]) -> tuple[dict[str, float], set[str]]:
    """Median seconds per group for GET /v1/whoami, requests interleaved at random; and every distinct
    401 body seen (request id removed)."""
    order = [(group, token) for group, tokens in groups.items() for token in tokens]
    random.shuffle(order)
    samples: dict[str, list[float]] = {group: [] for group in groups}
    bodies: set[str] = set()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=HANG_GUARD)
    try:
        for _, token in order[:50]:  # warm-up: connection, caches, allocator
            connection.request("GET", "/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            connection.getresponse().read()
        for group, token in order:
            started = time.perf_counter()
            connection.request("GET", "/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            response = connection.getresponse()
            payload = response.read()
            samples[group].append(time.perf_counter() - started)
            assert response.status == 401
            body = json.loads(payload)
            body.pop("request_id")
            bodies.add(json.dumps(body, sort_keys=True) + response.headers.get("WWW-Authenticate", ""))
    finally:
        connection.close()
    return {group: statistics.median(values) for group, values in samples.items()}, bodies


def close_enough(medians: dict[str, float]) -> bool:
    low, high = min(medians.values()), max(medians.values())
    return high - low <= 0.25 * high + 0.0005


def test_wrong_tokens_answer_alike_and_in_like_time(server: Server, unique_name: str) -> None:
    real = make_service(server, unique_name)["credentials"]["access_token"]
    assert server.call("GET", "/v1/whoami", token=real)[0] == 200
    rounds = []
    for _ in range(3):
        medians, bodies = measure(server, wrong_tokens(real, 200))
        assert len(bodies) == 1, f"wrong tokens are told apart: {bodies}"
        rounds.append({group: round(value * 1000, 3) for group, value in medians.items()})
        print("\nA-02 medians (ms):", rounds[-1])
        if close_enough(medians):
            break
    else:
        raise AssertionError(f"median latency (ms) differs by what the token got right: {rounds}")
    assert server.call("GET", "/v1/whoami", token=real)[0] == 200  # the real token still works
