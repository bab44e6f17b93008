"""CPU cost of the signing commit path, per group-commit unit, on SQLite (and PostgreSQL with ``--pg``).

Standalone: builds a migrated store on a temporary SQLite file (and on a throw-away PostgreSQL database
created from ``--pg URL`` and dropped afterwards), then submits units shaped like the signing service's
commit unit, in batches of 1 and 16 concurrent ``Store.submit`` calls, and reports the process's CPU
time (``time.process_time``: every thread, so aiosqlite's worker thread counts) per unit.

Scenarios:
  audit   one ~1 KB sign.transaction audit event
  policy  + usage of 2 limit keys (a 24 h spend window and a 60 s rate window) and 2 reservations
  idem    + an idempotency lookup and an idempotency record (as a request with Idempotency-Key does)

Each (scenario, batch) is measured ``--repeat`` times, interleaved, and the median is printed. A
``--json`` file gets every sample. Run it before and after a change on the same machine, interleaving
the two, when other work shares the cores.

    .venv/bin/python bench/commit_costs.py --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

SCENARIOS = ("audit", "policy", "idem")
BATCHES = (1, 16)


def _event(request_id: str, now: datetime) -> dict[str, Any]:
    """About 1 KB of canonical JSON, with the fields a sign.transaction event carries."""
    return {
        "kind": "sign.transaction",
        "operation": "sign_transaction",
        "request_id": request_id,
        "at": now,
        "actor": {
            "principal_id": "p_" + "a" * 24,
            "name": "relayer-1",
            "role": "service",
            "token_id": "t_" + "b" * 24,
        },
        "key_id": "k_" + "c" * 24,
        "request": {
            "chain_id": 1,
            "type": 2,
            "to": "0x" + "d" * 40,
            "value": "1000000000000000",
            "nonce": 42,
            "gas": 21000,
            "max_fee_per_gas": "30000000000",
            "max_priority_fee_per_gas": "1000000000",
            "selector": None,
            "data_length": 0,
        },
        "result": {"signer": "0x" + "e" * 40, "transaction_hash": "0x" + "f" * 64},
        "outcome": "allowed",
        "decision": {
            "effect": "allow",
            "reasons": [
                {"rule_id": "spend-daily", "code": "within_limit", "message": "spend within the daily limit"},
                {"rule_id": "rate-minute", "code": "within_limit", "message": "rate within the limit"},
            ],
            "policies": [{"policy_id": "treasury", "version": 3, "digest": "9" * 64}],
            "approvals": [],
        },
    }


def _unit(scenario: str, records: Any) -> Callable[[Any], Awaitable[None]]:
    limit_keys = ("spend:k1:eth", "rate:k1")

    async def unit(writer: Any) -> None:
        now = datetime.now(UTC)
        request_id = secrets.token_hex(8)
        if scenario != "audit":
            if scenario == "idem":
                await writer.idempotency.get("p1", request_id)
            spend = await writer.ledger.usage(limit_keys[0], now - timedelta(days=1), now)
            rate = await writer.ledger.usage(limit_keys[1], now - timedelta(seconds=60), now)
            assert spend >= 0 and rate >= 0
            await writer.ledger.reserve(
                [
                    records.LedgerEntry(limit_keys[0], 10**15, now, now + timedelta(days=1), request_id),
                    records.LedgerEntry(limit_keys[1], 1, now, now + timedelta(seconds=60), request_id),
                ]
            )
            if scenario == "idem":
                await writer.idempotency.insert(
                    records.IdempotencyRecord("p1", request_id, "a" * 64, {"signed": "0x" + "ab" * 60}, now)
                )
        writer.append_audit(_event(request_id, now))

    return unit


async def _measure(url: str, scenario: str, batch: int, units: int) -> float:
    from signer import store as records
    from signer.store import open_store

    store = await open_store(url)
    try:
        unit = _unit(scenario, records)
        # Warm up: connections, statement caches, the ledger cache's keys.
        for _ in range(3):
            await asyncio.gather(*(store.submit(unit, rerunnable=True) for _ in range(batch)))
        rounds = max(1, units // batch)
        start = time.process_time()
        for _ in range(rounds):
            await asyncio.gather(*(store.submit(unit, rerunnable=True) for _ in range(batch)))
        return (time.process_time() - start) / (rounds * batch) * 1e6
    finally:
        await store.close()


async def _pg_admin(base_url: str, statement: str) -> None:
    import asyncpg

    dsn = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg", metavar="URL", help="also measure on a throw-away database on this server")
    parser.add_argument("--no-sqlite", action="store_true", help="only PostgreSQL")
    parser.add_argument("--repeat", type=int, default=5, help="samples per case (median reported)")
    parser.add_argument("--units", type=int, default=480, help="units per sample")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: all")
    parser.add_argument("--json", type=Path, help="write every sample here")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from signer.store import migrate

    scenarios = args.scenario or list(SCENARIOS)
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="commit-costs-") as tmp:
        targets: list[tuple[str, str]] = []
        if not args.no_sqlite:
            sqlite_url = f"sqlite+aiosqlite:///{tmp}/signer.db"
            migrate(sqlite_url)
            targets.append(("sqlite", sqlite_url))
        pg_name = None
        if args.pg:
            pg_name = "signer_bench_" + secrets.token_hex(5)
            asyncio.run(_pg_admin(args.pg, f'CREATE DATABASE "{pg_name}"'))
            pg_url = make_url(args.pg).set(database=pg_name).render_as_string(hide_password=False)
            migrate(pg_url)
            targets.append(("postgres", pg_url))
        try:
            for _ in range(args.repeat):
                for backend, url in targets:
                    for scenario in scenarios:
                        for batch in BATCHES:
                            name = f"{backend:8} {scenario:6} batch {batch:2}"
                            value = asyncio.run(_measure(url, scenario, batch, args.units))
                            samples.setdefault(name, []).append(value)
        finally:
            if pg_name is not None:
                asyncio.run(_pg_admin(args.pg, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
    print(f"{'case':28} {'median us/unit':>15} {'min':>8} {'max':>8}")
    for name, values in samples.items():
        print(f"{name:28} {statistics.median(values):15.0f} {min(values):8.0f} {max(values):8.0f}")
    if args.json:
        args.json.write_text(json.dumps(samples, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
