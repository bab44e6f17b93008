"""Signed checkpoints' cost on the sign path, and offline verification speed.

    PYTHONPATH=$PWD .venv/bin/python bench/audit_checkpoints.py [--clients C] [--seconds S] [--rounds R]
                                                              [--every N] [--interval T]

1. Signing throughput with checkpoints off and on (``SIGNER_AUDIT_CHECKPOINTS``), alternating rounds
   (off, on, off, on, ...) on one installation each so background drift hits both; each round is a fresh
   ``signer serve`` (SQLite, real SoftHSM token), C keep-alive clients POSTing Ed25519 message signs for
   a warm-up and S measured seconds. Checkpoints run with ``--every`` events / ``--interval`` seconds
   (defaults tighter than the service's, to make their cost visible). Target: on >= 0.95 x off.
2. Verification speed: the "on" installation's whole log is exported with ``signer audit export`` and
   verified offline (``signer.audit_verify.ExportVerifier``: chain, tree, every checkpoint signature),
   events per second.
3. Checkpoint cost per event, in-process and quiet of HTTP noise: on a copy of the "on" database with
   its checkpoints removed, one ``CheckpointService.checkpoint()`` (real token) rebuilds them over the
   whole log; CPU microseconds per event, next to the server's CPU per signed transaction.

Prints the load average before and after each window and, per round, the server's CPU per signed
transaction (every thread of the serving process, checkpoint task included) and the cores others used
in the window: on a shared machine the CPU ratio (off / on) is the steadier reading of the target.
Writes nothing in the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import CpuShare, cpu_share, cpu_snapshot, server_worker_pids  # noqa: E402

from signer.audit_note import VerifierKey  # noqa: E402
from signer.audit_verify import ExportVerifier  # noqa: E402
from signer.crypto.signatures import check_ed25519  # noqa: E402
from tests.service_harness import (  # noqa: E402
    SIGNER,
    Installation,
    grant,
    init_installation,
    make_key,
    make_service,
    start_server,
)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def load(
    url: str, token: str, key_id: str, clients: int, warmup: float, seconds: float, pids: list[int]
) -> tuple[int, int, CpuShare]:
    """(200s in the measured window, other statuses, the window's CPU: server, client, others)."""
    ok = bad = 0
    measuring = False
    stop = time.monotonic() + warmup + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        nonlocal ok, bad
        i = 0
        while time.monotonic() < stop:
            i += 1
            body = {"message": f"bench {n} {i}", "encoding": "utf8"}
            async with session.post(f"{url}/v1/keys/{key_id}/sign/message", json=body, headers=headers) as r:
                await r.read()
                if measuring:
                    if r.status == 200:
                        ok += 1
                    else:
                        bad += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        tasks = [asyncio.create_task(client(n, session)) for n in range(clients)]
        await asyncio.sleep(warmup)  # the warm-up window's length, not synchronisation
        measuring = True
        start = cpu_snapshot(pids)
        await asyncio.gather(*tasks)
        end = cpu_snapshot(pids)
    return ok, bad, cpu_share(start, end)


def prepare(root: Path, name: str) -> tuple[Installation, dict[str, Any]]:
    installation = init_installation(root / name)
    server = start_server(installation)
    try:
        service = make_service(server, "bench")
        key = make_key(server, "ed25519", "bench")
        grant(server, service["principal"]["id"], key["id"], ["sign_message"])
    finally:
        server.stop()
    return installation, {"token": service["credentials"]["access_token"], "key": key["id"]}


def round_trip(
    installation: Installation, who: dict[str, Any], env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    server = start_server(installation, env=env)
    try:
        before = loadavg()
        pids = server_worker_pids(server.process.pid)
        ok, bad, share = asyncio.run(
            load(server.url, who["token"], who["key"], args.clients, args.warmup, args.seconds, pids)
        )
        return {
            "tx_per_s": ok / args.seconds,
            "errors": bad,
            # Server CPU (every thread, the checkpoint task and the token's signing included) per 200.
            "server_cpu_us_per_tx": round(share.server * share.wall / max(ok, 1) * 1e6),
            "others_cores": round(share.other, 2),
            "load_before": before,
            "load_after": loadavg(),
        }
    finally:
        server.stop()


def verify_speed(installation: Installation, env: dict[str, str], out: Path) -> dict[str, Any]:
    server = start_server(installation, env=env)
    try:
        cli_env = {**installation.env, "SIGNER_SERVER": server.url, "SIGNER_TOKEN": installation.admin_token}
        done = subprocess.run(
            [*SIGNER, "audit", "export", str(out), "--page-size", "10000", "--json"],
            env=cli_env,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        summary = json.loads(done.stdout)
        key_text = json.loads(
            subprocess.run(
                [*SIGNER, "audit", "public-key", "--json"],
                env=cli_env,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )["verifier_key"]
    finally:
        server.stop()
    verifier = ExportVerifier(key=VerifierKey.parse(key_text), check=check_ed25519)
    before = loadavg()
    started = time.perf_counter()
    with open(out, encoding="utf-8") as handle:
        for line in handle:
            if not verifier.feed(line):
                break
    report = verifier.finish()
    seconds = time.perf_counter() - started
    return {
        "events": report["checked"],
        "checkpoints": report["checkpoints_verified"],
        "ok": report["ok"],
        "seconds": round(seconds, 3),
        "events_per_s": round(report["checked"] / seconds),
        "load_before": before,
        "load_after": loadavg(),
        "exported": summary["exported"],
    }


def checkpoint_cost(installation: Installation, root: Path) -> dict[str, Any]:
    import shutil

    from signer.app import use_softhsm_conf
    from signer.config import Settings
    from signer.hsm import Hsm
    from signer.services.checkpoints import CheckpointPolicy, CheckpointService
    from signer.store import open_store

    copy = root / "cost"
    copy.mkdir()
    for path in installation.data_dir.glob("signer.db*"):
        shutil.copy2(path, copy / path.name)
    settings = Settings(data_dir=installation.data_dir)
    os.environ["SOFTHSM2_CONF"] = installation.env["SOFTHSM2_CONF"]
    use_softhsm_conf(settings)

    async def run() -> dict[str, Any]:
        store = await open_store(f"sqlite+aiosqlite:///{copy / 'signer.db'}")
        hsm = Hsm(settings.hsm_module, settings.hsm_token_label, settings.pin())
        await hsm.start()
        try:

            async def clear(writer: Any) -> None:
                from sqlalchemy import text

                await writer._write(text("DELETE FROM audit_checkpoints"))
                await writer._write(text("DELETE FROM audit_tree_nodes"))

            await store.submit(clear)
            service = CheckpointService(store, hsm, CheckpointPolicy("bench/audit", 0, 60.0))
            await service.start()
            cpu, wall = time.process_time(), time.perf_counter()
            record = await service.checkpoint()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            assert record is not None
            return {
                "events": record.size,
                "cpu_us_per_event": round(cpu / record.size * 1e6, 1),
                "wall_s": round(wall, 3),
                "load": loadavg(),
            }
        finally:
            await hsm.close()
            await store.close()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=256)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        root = Path(tmp)
        off_inst, off_who = prepare(root, "off")
        on_inst, on_who = prepare(root, "on")
        off_env = {"SIGNER_AUDIT_CHECKPOINTS": "false"}
        on_env = {
            "SIGNER_AUDIT_CHECKPOINTS": "true",
            "SIGNER_AUDIT_CHECKPOINT_EVERY_EVENTS": str(args.every),
            "SIGNER_AUDIT_CHECKPOINT_INTERVAL_SECONDS": str(args.interval),
        }
        rounds: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for n in range(args.rounds):
            for name, inst, who, env in (
                ("off", off_inst, off_who, off_env),
                ("on", on_inst, on_who, on_env),
            ):
                result = round_trip(inst, who, env, args)
                rounds[name].append(result)
                print(json.dumps({"round": n + 1, "checkpoints": name, **result}), flush=True)
        off = statistics.median(r["tx_per_s"] for r in rounds["off"])
        on = statistics.median(r["tx_per_s"] for r in rounds["on"])
        cpu_off = statistics.median(r["server_cpu_us_per_tx"] for r in rounds["off"])
        cpu_on = statistics.median(r["server_cpu_us_per_tx"] for r in rounds["on"])
        print(
            json.dumps(
                {
                    "median_tx_per_s_off": round(off, 1),
                    "median_tx_per_s_on": round(on, 1),
                    "ratio_on_off": round(on / off, 3),
                    "median_server_cpu_us_per_tx_off": cpu_off,
                    "median_server_cpu_us_per_tx_on": cpu_on,
                    # Throughput a CPU-bound server reaches is inverse to CPU per request.
                    "cpu_ratio_off_on": round(cpu_off / cpu_on, 3),
                    "target": 0.95,
                }
            ),
            flush=True,
        )
        print(json.dumps({"verify": verify_speed(on_inst, on_env, root / "export.jsonl")}), flush=True)
        print(json.dumps({"checkpoint_cost": checkpoint_cost(on_inst, root)}), flush=True)


if __name__ == "__main__":
    main()
