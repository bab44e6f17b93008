"""Offline verification at scale: an export of N audit events (default 1,000,000), verified.

    PYTHONPATH=$PWD .venv/bin/python bench/audit_scale.py [--events N] [--database postgres --pg URL]

1. Seeds N events straight through the store (``Writer.append_audit`` in units of 5,000: the real chain,
   the real canonical JSON, the events a relayer's signatures leave, ~400 bytes each), in a fresh
   installation (``signer init``: real SoftHSM token, SQLite file).
2. Starts ``signer serve`` (checkpoints every 100,000 events) and waits for the checkpoint at N.
3. ``signer audit export OUT`` (every page, with the checkpoints): wall time, peak RSS of the CLI (from
   ``wait4``) and the server's peak RSS growth (``VmHWM``) over the export.
4. ``signer audit verify OUT --public-key KEY --require-anchored`` (chain, tree, every checkpoint
   signature): events per second and peak RSS.

Prints the load average (the machine is shared). Writes nothing in the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.service_harness import SIGNER, Installation, init_installation, start_server  # noqa: E402


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def seed(installation: Installation, count: int) -> float:
    from signer.audit import AuditEvent, EventTarget, Outcome
    from signer.config import Settings
    from signer.store import open_store

    settings = Settings(
        data_dir=installation.data_dir, database_url=installation.env.get("SIGNER_DATABASE_URL", "")
    )

    async def run() -> float:
        store = await open_store(settings.resolved_database_url)
        started = time.perf_counter()
        try:
            now = datetime.now(UTC)
            actor = {"principal_id": "prn_bench", "name": "relayer", "role": "service", "token_id": "0" * 24}
            for first in range(0, count, 5000):

                async def unit(writer: Any, first: int = first) -> None:
                    for n in range(first, min(first + 5000, count)):
                        writer.append_audit(
                            AuditEvent.of(
                                "sign.transaction",
                                at=now,
                                outcome=Outcome.ALLOWED,
                                actor=actor,
                                request_id=f"{n:016x}",
                                resource=EventTarget("key", "key_bench"),
                                key_id="key_bench",
                                operation="sign_transaction",
                                summary={"chain_id": 1, "to": "0x" + "ab" * 20, "value": str(n), "nonce": n},
                                decision={"effect": "allow", "reasons": [], "policy_digests": []},
                            )
                        )

                await store.submit(unit)
        finally:
            await store.close()
        return time.perf_counter() - started

    return asyncio.run(run())


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, int, int, str, str]:
    """(wall seconds, peak RSS bytes, exit code, stdout, stderr) of one child."""
    started = time.perf_counter()
    read_out, write_out = os.pipe()
    read_err, write_err = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.chdir(REPO)
        os.dup2(write_out, 1)
        os.dup2(write_err, 2)
        os.execvpe(args[0], args, env)
    os.close(write_out)
    os.close(write_err)
    with os.fdopen(read_out, "rb") as out_file, os.fdopen(read_err, "rb") as err_file:
        out = out_file.read()
        err = err_file.read()
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    return wall, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status), out.decode(), err.decode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--pg", default=None, help="PostgreSQL URL (default: SQLite)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audit-scale-") as tmp:
        root = Path(tmp)
        installation = init_installation(root / "data", options.pg)
        print(f"load average before: {loadavg()}")
        seconds = seed(installation, options.events)
        print(f"seeded {options.events:,} events in {seconds:.1f} s ({options.events / seconds:,.0f}/s)")
        env = {
            **installation.env,
            "SIGNER_AUDIT_CHECKPOINT_EVERY_EVENTS": "100000",
            "SIGNER_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "1",
        }
        server = start_server(installation, env=env)
        try:
            admin = installation.admin_token
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                status, _, body = server.call("GET", "/v1/audit/checkpoint", token=admin)
                if status == 200 and body["size"] >= options.events:
                    break
                time.sleep(1)
            cli_env = {**installation.env, "SIGNER_SERVER": server.url, "SIGNER_TOKEN": admin}
            key = json.loads(
                subprocess.run(
                    [*SIGNER, "audit", "public-key", "--json"],
                    env=cli_env,
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )["verifier_key"]
            export = root / "export.jsonl"
            before = vm_hwm(server.process.pid)
            wall, rss, code, out, err = run_measured(
                [*SIGNER, "audit", "export", str(export), "--page-size", "10000", "--json"], cli_env
            )
            grown = vm_hwm(server.process.pid) - before
            assert code == 0, err
            size = export.stat().st_size
            print(
                f"export: {wall:.1f} s ({options.events / wall:,.0f} events/s), {size / 2**20:,.0f} MiB, "
                f"CLI peak RSS {rss / 2**20:.0f} MiB, server peak RSS growth {grown / 2**20:.0f} MiB"
            )
        finally:
            server.stop()
        wall, rss, code, out, err = run_measured(
            [*SIGNER, "audit", "verify", str(export), "--public-key", key, "--require-anchored"],
            installation.env,
        )
        report = json.loads(out)
        assert code == 0 and report["ok"], report
        print(
            f"verify: {wall:.1f} s ({report['checked'] / wall:,.0f} events/s), "
            f"{report['checkpoints_verified']} checkpoints, peak RSS {rss / 2**20:.0f} MiB"
        )
        print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
