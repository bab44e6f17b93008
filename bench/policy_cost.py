"""What policy costs on the sign path: the service with no rules next to a realistic policy, in one run.

    .venv/bin/python bench/policy_cost.py [--rounds R] [--seconds S] [--workers N] [--clients C]
                                          [--database sqlite|postgres]

Runs the end-to-end load of ``e2e_sign.py`` (a fresh installation each time, C keep-alive clients
posting EIP-1559 transactions) alternately without a policy and with ``e2e_sign.realistic_policy()``
(10 rules, among them a daily spend limit and a per-minute rate limit, all of which every request
passes, so every rule is evaluated and two ledger reservations are written per signature), R rounds
each, A/B/A/B so drifting background load hits both. Prints the mean rate of each, the ratio (target
>= 0.9) and the server CPU per request of each, which depends less on other people's load than the
rate does. Every run's responses are sampled and checked with eth-account, and the audit log must
hold one allowed event per 200, exactly as in ``e2e_sign.py``; any failure exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import cpu_share
from e2e_sign import audit_check, end_to_end, verify_sample


def one_run(args: argparse.Namespace, policy: str) -> dict[str, Any]:
    run_args = argparse.Namespace(**{**vars(args), "policy": policy})
    with tempfile.TemporaryDirectory(prefix="signer-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        e2e = end_to_end(run_args, None, data_dir)
        load = e2e["load"]
        audit = asyncio.run(audit_check(f"sqlite+aiosqlite:///{data_dir / 'signer.db'}", load.unanswered))
    _, statuses, wall = load.in_window("measure")
    ok = statuses.get(200, 0)
    window = load.windows["measure"]
    share = cpu_share(window.start, window.end)
    checked, failures = verify_sample(load.sample, e2e["key"]["address"])
    errors = sum(load.errors.values())
    good = (
        not errors
        and not failures
        and audit["chain_ok"]
        # wrk drops what is in flight when it stops; those requests may still have been signed.
        and audit["sign_allowed"] - audit["sign_allowed_unanswered"] == load.ok_total
        and e2e["alive"]
    )
    return {
        "policy": policy,
        "rate": ok / wall,
        "server_us": (share.server + share.database) * wall / max(ok, 1) * 1e6,
        "client_us": share.client * wall / max(ok, 1) * 1e6,
        "verified": f"{checked - len(failures)}/{checked}",
        "errors": errors,
        "error_codes": dict(load.errors),
        "error_examples": load.error_examples[:3],
        "good": good,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--verify", type=int, default=500)
    parser.add_argument(
        "--load", choices=["aiohttp", "wrk"], default="aiohttp", help="the load generator (see e2e_sign.py)"
    )
    parser.add_argument("--wrk-threads", type=int, default=2)
    args = parser.parse_args()
    args.profile, args.profile_rate, args.experiment = 0.0, 100, []
    print(
        f"# bench/policy_cost.py rounds={args.rounds} seconds={args.seconds} workers={args.workers} "
        f"clients={args.clients} load={args.load}"
    )
    print(f"# load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs", flush=True)
    runs = []
    for index in range(args.rounds):
        for policy in ("none", "realistic"):
            run = one_run(args, policy)
            runs.append(run)
            print(
                f"round {index + 1} {policy:<9} {run['rate']:8,.0f} tx/s"
                f"  server {run['server_us']:6,.0f} us/req  client {run['client_us']:5,.0f} us/req"
                f"  verified {run['verified']}  errors {run['errors']} {run['error_codes'] or ''}",
                flush=True,
            )
            for example in run["error_examples"]:
                print("  e.g.", example)
    summary: dict[str, Any] = {"bench": "policy_cost", "rounds": args.rounds, "seconds": args.seconds}
    for policy in ("none", "realistic"):
        mine = [r for r in runs if r["policy"] == policy]
        summary[policy] = {
            "rate": round(statistics.mean(r["rate"] for r in mine), 1),
            "server_us": round(statistics.mean(r["server_us"] for r in mine), 1),
            "client_us": round(statistics.mean(r["client_us"] for r in mine), 1),
        }
    summary["ratio"] = round(summary["realistic"]["rate"] / summary["none"]["rate"], 3)
    summary["cpu_ratio"] = round(summary["none"]["server_us"] / summary["realistic"]["server_us"], 3)
    # The load generator shares the cores, so the rate follows server + client CPU per request.
    both = {p: summary[p]["server_us"] + summary[p]["client_us"] for p in ("none", "realistic")}
    summary["cpu_ratio_with_client"] = round(both["none"] / both["realistic"], 3)
    summary["load"] = args.load
    print()
    none = summary["none"]
    print(f"no rules:         {none['rate']:8,.0f} tx/s, {none['server_us']:,.0f} us server CPU/req")
    print(
        f"realistic policy: {summary['realistic']['rate']:8,.0f} tx/s, "
        f"{summary['realistic']['server_us']:,.0f} us server CPU/req"
    )
    print(f"ratio realistic / none (target >= 0.9): {summary['ratio']:.2f}")
    print(f"ratio by server CPU per request: {summary['cpu_ratio']:.2f}")
    print(f"ratio by server + load generator CPU per request: {summary['cpu_ratio_with_client']:.2f}")
    print(json.dumps(summary, separators=(",", ":")))
    if not all(r["good"] for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
