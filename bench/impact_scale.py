"""Impact review, usage and the operator checklist at scale: does each report answer in under a second?

A measurement, not a test. Seeds a fresh database (SQLite file in a temporary directory, or with
``--database postgres`` a private PostgreSQL database) directly through the store: 1,000 principals in
50 groups (20 to 200 members), 100,000 secrets in 2,000 folders under 10 organisations (a quarter
fetched at some point, a tenth tagged ``shared``, registry, publication and generated infrastructure
ones among them), 10,000 grants (on single secrets, on folders, a few on whole organisations, to
principals and to groups; four in five of them used), 1,000,000 ``secret_usage`` rows (per secret,
day, principal and workload over 90 days) and 40 keys reached by group signing grants. Then it times
each report as the services answer it (the same code the routes call), ``--repeat`` times, and prints
the median and worst per report:

- impact of revoking a broad folder grant held by a large group (used on many secrets), of disabling
  the busiest principal, of deleting and of rotating the most-fetched secret;
- the checklist; the usage report (never fetched, not fetched in 30 days, grants never used); one
  secret's usage.

    .venv/bin/python bench/impact_scale.py                    # SQLite
    .venv/bin/python bench/impact_scale.py --database postgres --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from signer.identity import Role
from signer.services.checklist import ChecklistService
from signer.services.context import Caller, RequestContext
from signer.services.impact import ImpactService
from signer.services.usage import UsageRecorder, UsageService, day_of
from signer.store import (
    FetchCount,
    GrantRecord,
    GrantUse,
    KeyRecord,
    PrincipalRecord,
    SecretRecord,
    SecretVersionRecord,
    Store,
    migrate,
    open_store,
)

SECRETS = 100_000
GRANTS = 10_000
FETCH_ROWS = 1_000_000
PRINCIPALS = 1_000
GROUPS = 50
ORGS = 10
FOLDERS = 2_000
KEYS = 40
CHUNK = 5_000
NOW = datetime.now(UTC)


def folder_of(i: int) -> str:
    return f"org{i % ORGS}/team{i % 200}/f{i}"


async def seed(store: Store) -> dict[str, Any]:
    rnd = random.Random(13)
    t0 = NOW - timedelta(days=400)
    principals = [f"prn_{i:06d}" for i in range(PRINCIPALS)]
    groups: dict[str, list[str]] = {}
    for g in range(GROUPS):
        size = 20 + (g * 180) // (GROUPS - 1)
        groups[f"group{g}"] = rnd.sample(principals, size)
    async with store.write() as w:
        for pid in principals:
            await w.principals.insert(PrincipalRecord(pid, f"svc{pid[4:]}", "service", t0))
        for name, members in groups.items():
            for pid in members:
                await w.groups.add(name, pid, t0, None)
    # Secrets: 100,000 in 2,000 folders; a quarter fetched (last_fetched_at set); every version old.
    secret_ids = [f"sec_{i:012d}" for i in range(SECRETS)]
    fetched = set(rnd.sample(range(SECRETS), SECRETS // 4))
    for start in range(0, SECRETS, CHUNK):
        async with store.write() as w:
            for i in range(start, min(start + CHUNK, SECRETS)):
                category = ("api_key", "database", "registry", "publication", "infrastructure")[i % 5]
                sid = secret_ids[i]
                seen = i in fetched
                record = SecretRecord(
                    id=sid,
                    name=f"s{i}",
                    folder=folder_of(i % FOLDERS),
                    description="",
                    tags=["shared:cdn"] if i % 10 == 0 else ["production"],
                    category=category,
                    owner_type="group",
                    owner="group0",
                    consumers=[f"app{i % 50}"],
                    origin="generated" if i % 3 == 0 else "provided",
                    generation={"kind": "hex", "bytes": 16, "field": "value"} if i % 3 == 0 else None,
                    current_version=1,
                    created_at=t0,
                    created_by=None,
                    updated_at=t0,
                    updated_by=None,
                    last_fetched_at=NOW - timedelta(days=i % 60) if seen else None,
                    last_fetched_by=principals[i % PRINCIPALS] if seen else None,
                )
                version = SecretVersionRecord(
                    sid, 1, "kek_bench", b"\x01" * 40, {"value": b"\x02" * 32}, t0, None
                )
                await w.secrets.insert(record, version)
    # Grants: 10,000. 6,000 on one secret (principals), 3,950 on folders (groups and principals),
    # 50 on whole organisations (groups).
    grants: list[GrantRecord] = []
    for i in range(GRANTS):
        if i < 6_000:
            target = ("secret", secret_ids[rnd.randrange(SECRETS)])
        elif i < 9_950:
            target = ("scope", folder_of(rnd.randrange(FOLDERS)).rsplit("/", 1)[0])
        else:
            target = ("scope", f"org{i % ORGS}")
        by_group = i % 3 == 0 or i >= 9_950
        grants.append(
            GrantRecord(
                id=f"grt_{i:08d}",
                principal_id=None if by_group else principals[i % PRINCIPALS],
                group_name=f"group{i % GROUPS}" if by_group else None,
                resource_type=target[0],
                resource_id=target[1],
                operations=["read_value", "list"],
                expires_at=None,
                created_by=None,
                created_at=t0,
            )
        )
    async with store.write() as w:
        for grant in grants:
            await w.grants.insert(grant)
        for k in range(KEYS):
            await w.keys.insert(
                KeyRecord(
                    id=f"key_{k:04d}",
                    label=f"k{k}",
                    curve="secp256k1",
                    public_key="04" + "00" * 64,
                    address=None,
                    scope=f"org{k % ORGS}/keys",
                    tags=[],
                    state="active",
                    hsm_id=f"hsm_{k:04d}",
                    attributes={},
                    created_by=None,
                    created_at=t0,
                    updated_at=t0,
                )
            )
            await w.grants.insert(
                GrantRecord(
                    id=f"grk_{k:04d}",
                    principal_id=None,
                    group_name=f"group{k % GROUPS}",
                    resource_type="scope",
                    resource_id=f"org{k % ORGS}",
                    operations=["sign_transaction"],
                    expires_at=None,
                    created_by=None,
                    created_at=t0,
                )
            )
    # Grant use: four in five grants used, each by up to 5 principals on up to 5 secrets.
    uses: list[GrantUse] = []
    for grant in grants[: GRANTS * 4 // 5]:
        holders = [grant.principal_id] if grant.principal_id else groups[grant.group_name or ""][:5]
        if grant.resource_type == "secret":
            targets = [grant.resource_id]
        else:
            targets = [secret_ids[rnd.randrange(SECRETS)] for _ in range(5)]
        for pid in holders:
            for sid in targets:
                uses.append(GrantUse(grant.id, pid, "secret", sid, rnd.randrange(1, 500), t0, NOW, 1, 1))
    # The busiest secret and principal: many rows on them.
    busy_secret, busy_principal = secret_ids[4], principals[7]
    today = day_of(NOW)
    rows: list[FetchCount] = []
    seen_keys: set[tuple[str, int, str, str]] = set()
    active = sorted(fetched)
    while len(rows) < FETCH_ROWS:
        n = len(rows)
        if n % 50 == 0:
            sid, pid = busy_secret, principals[rnd.randrange(200)]
        elif n % 50 == 1:
            sid, pid = secret_ids[active[rnd.randrange(len(active))]], busy_principal
        else:
            sid, pid = secret_ids[active[rnd.randrange(len(active))]], principals[rnd.randrange(PRINCIPALS)]
        key = (sid, today - rnd.randrange(90), pid, f"app{rnd.randrange(50)}")
        if key in seen_keys:
            continue
        seen_keys.add(key)
        rows.append(FetchCount(*key, rnd.randrange(1, 1000), NOW - timedelta(days=today - key[1]), 1))
    for start in range(0, len(uses), 50_000):
        async with store.write() as w:
            await w.usage.insert_many(grants=uses[start : start + 50_000])
    for start in range(0, len(rows), 50_000):
        async with store.write() as w:
            await w.usage.insert_many(fetches=rows[start : start + 50_000])
    broad = next(
        g for g in grants if g.group_name is not None and g.resource_type == "scope" and g.id < "grt_00009950"
    )
    # The folder grant of the largest group, used on many secrets.
    big = max(
        (g for g in grants[: GRANTS * 4 // 5] if g.group_name is not None and g.resource_type == "scope"),
        key=lambda g: len(groups[g.group_name or ""]),
        default=broad,
    )
    return {
        "secret": busy_secret,
        "principal": busy_principal,
        "grant": big.id,
        "grant_uses": len(uses),
        "fetch_rows": len(rows),
    }


async def timed(repeat: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float, float]:
    """Median and worst wall time, and the median CPU time of this process (the SQLite driver's
    thread included), which says more than wall time on a machine others are loading."""
    times = []
    cpu = []
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        await call()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    return statistics.median(times), max(times), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--keep",
        type=Path,
        help="seed once and reuse on later runs: the SQLite file, or with postgres a database of that "
        "name next to SIGNER_BENCH_PG_URL's (created if missing; its seed notes in NAME.json here)",
    )
    args = parser.parse_args()
    if args.database == "postgres":
        from bench.common import kept_postgres, throwaway_postgres

        base = os.environ.get("SIGNER_BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
        if args.keep is not None:
            asyncio.run(run(args, kept_postgres(base, args.keep.name)))
            return
        with throwaway_postgres(base) as url:
            asyncio.run(run(args, url))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, f"sqlite+aiosqlite:///{args.keep or Path(tmp) / 'bench.db'}"))


async def run(args: argparse.Namespace, url: str) -> None:
    sidecar = None if args.keep is None else args.keep.with_suffix(".json")
    reuse = sidecar is not None and sidecar.exists()
    # A kept database seeded by an older build is brought to this build's schema (nothing when current).
    await asyncio.to_thread(migrate, url)
    store = await open_store(url)
    try:
        print(f"# bench/impact_scale.py database={args.database} load average {os.getloadavg()}")
        started = time.perf_counter()
        if reuse:
            assert sidecar is not None
            chosen = json.loads(sidecar.read_text())
        else:
            chosen = await seed(store)
            if sidecar is not None:
                sidecar.write_text(json.dumps(chosen))
        if args.database == "postgres":
            # What autovacuum does for a running installation (it may be off here: see analyse_postgres).
            from bench.common import analyse_postgres

            await asyncio.to_thread(analyse_postgres, url)
        print(
            f"# seeded {SECRETS:,} secrets, {GRANTS:,} grants (+{KEYS} key grants), "
            f"{chosen['fetch_rows']:,} fetch-usage rows, {chosen['grant_uses']:,} grant-use rows "
            f"in {time.perf_counter() - started:.0f} s"
        )
        recorder = UsageRecorder(store)
        ctx = RequestContext("bench", Caller("prn_admin", "admin", Role.ADMIN, "tok"), 0)
        impact = ImpactService(store, recorder)
        usage = UsageService(store, recorder)
        checklist = ChecklistService(store, recorder, gauge=lambda item, count: None)
        reports: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            (
                "impact revoke_grant (large group, folder)",
                lambda: impact.review(ctx, "revoke_grant", chosen["grant"]),
            ),
            (
                "impact disable_principal (busiest)",
                lambda: impact.review(ctx, "disable_principal", chosen["principal"]),
            ),
            (
                "impact delete_secret (most fetched)",
                lambda: impact.review(ctx, "delete_secret", chosen["secret"]),
            ),
            (
                "impact rotate_secret (most fetched)",
                lambda: impact.review(ctx, "rotate_secret", chosen["secret"]),
            ),
            ("checklist", lambda: checklist.checklist(ctx)),
            ("usage report (30 days)", lambda: usage.report(ctx, 30)),
            ("usage of one secret (30 days)", lambda: usage.secret(ctx, chosen["secret"], 30)),
        ]
        for name, call in reports:
            answer = await call()
            median, worst, cpu = await timed(args.repeat, call)
            size = len(str(answer))
            wall = f"median {median * 1e3:6.0f} ms  worst {worst * 1e3:6.0f} ms"
            ms = f"{wall}  CPU {cpu * 1e3:6.0f} ms"
            print(f"{name:45s} {ms}  ({size:,} chars)")
        print(f"# load average after {os.getloadavg()}")
    finally:
        await store.close()


if __name__ == "__main__":
    main()
