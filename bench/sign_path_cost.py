"""CPU per signature of the signing service itself, with no rules and with a realistic policy, A/B.

    .venv/bin/python bench/sign_path_cost.py [--rounds R] [--requests N] [--concurrency C]

What ``policy_cost.py`` measures through HTTP, without the HTTP: one process runs the real service
(``signer init`` in a temporary directory, then the application started in-process on its SoftHSM
token and SQLite file, exactly as ``signer serve`` builds it), and calls
``SigningService.sign_transaction`` directly from C concurrent tasks, N requests per round, R rounds
alternating no policy / ``e2e_sign.realistic_policy()`` attached to the key. Each round's figure is the
process's CPU time (every thread: event loop, PKCS#11 thread, SQLite threads) per request, so load
from other processes on the machine moves it much less than it moves a rate. The difference between
the two is what policy adds per signature; together with the end-to-end CPU per request of
``e2e_sign.py`` it predicts the ratio ``policy_cost.py`` reports. Every result of the last round of
each kind is checked with eth-account (the raw transaction recovers to the key's address).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from e2e_sign import CHAIN_ID, RECIPIENT, realistic_policy  # noqa: E402


async def _call(session: Any, base: str, method: str, path: str, token: str, body: Any = None) -> Any:
    async with session.request(
        method, base + path, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        payload = await response.json(content_type=None)
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {payload}")
        return payload


async def measure(args: argparse.Namespace, data_dir: Path, admin: str) -> list[tuple[str, float, int]]:
    import aiohttp
    from aiohttp import web
    from eth_account import Account

    from signer.app import SERVICES, create_app
    from signer.config import load_settings

    port = _free_port()
    settings = load_settings(port=port)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    base = f"http://127.0.0.1:{port}"
    results: list[tuple[str, float, int]] = []
    try:
        async with aiohttp.ClientSession() as session:
            service = await _call(
                session, base, "POST", "/v1/principals", admin, {"name": "bench", "role": "service"}
            )
            key = await _call(session, base, "POST", "/v1/keys", admin, {"curve": "secp256k1", "label": "b"})
            await _call(
                session,
                base,
                "POST",
                "/v1/grants",
                admin,
                {
                    "principal_id": service["principal"]["id"],
                    "key_id": key["id"],
                    "operations": ["sign_transaction"],
                },
            )
            document = realistic_policy()
            version = 0
            token = service["credentials"]["access_token"]
            signing = app[SERVICES].signing
            auth = app[SERVICES].auth
            nonce = 0
            for round_no in range(args.rounds * 2):
                policy = args.only or ("none" if round_no % 2 == 0 else "realistic")
                attachment = None
                if policy == "realistic":
                    version += 1
                    await _call(
                        session, base, "POST", "/v1/policies", admin, {**document, "version": version}
                    )
                    attachment = await _call(
                        session,
                        base,
                        "POST",
                        f"/v1/policies/{document['id']}/attachments",
                        admin,
                        {"version": version, "mode": "live", "key_id": key["id"]},
                    )
                queue = list(range(nonce, nonce + args.requests))
                nonce += args.requests
                signed: list[tuple[int, dict[str, Any]]] = []

                async def worker(queue: list[int] = queue, signed: list[Any] = signed) -> None:
                    while queue:
                        n = queue.pop()
                        ctx = await auth.authenticate(f"Bearer {token}", f"bench-{n}", cached=True)
                        tx = {
                            "type": 2,
                            "chainId": CHAIN_ID,
                            "nonce": n,
                            "gas": 21000,
                            "to": RECIPIENT,
                            "value": n + 1,
                            "maxFeePerGas": 30_000_000_000,
                            "maxPriorityFeePerGas": 1_000_000_000,
                        }
                        signed.append((n, await signing.sign_transaction(ctx, key["id"], tx, None)))

                # Warm-up, so the facts cache and the merged policy are in place before the clock starts.
                warm, queue[:] = queue[:50], queue[50:]
                pending, queue[:] = queue[:], warm
                await asyncio.gather(*(worker() for _ in range(4)))
                queue[:], signed[:] = pending, []
                start = time.process_time()
                await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                cpu = time.process_time() - start
                results.append((policy, cpu / len(signed) * 1e6, len(signed)))
                if round_no >= args.rounds * 2 - 2:
                    for n, response in signed[:: max(1, len(signed) // 200)]:
                        sender = Account.recover_transaction(response["raw_transaction"])
                        if sender != key["address"]:
                            raise SystemExit(f"nonce {n}: recovers to {sender}, not {key['address']}")
                if attachment is not None:
                    await _call(session, base, "DELETE", f"/v1/policy-attachments/{attachment['id']}", admin)
    finally:
        await runner.cleanup()
    return results


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--only", choices=["none", "realistic"], help="every round of one kind (for a profiler)"
    )
    args = parser.parse_args()
    from tests.service_harness import init_installation

    with tempfile.TemporaryDirectory(prefix="signer-bench-") as tmp:
        installation = init_installation(Path(tmp) / "data")
        os.environ.update(installation.env)
        results = asyncio.run(measure(args, installation.data_dir, installation.admin_token))
    by_policy: dict[str, list[float]] = {"none": [], "realistic": []}
    for policy, us, count in results:
        by_policy[policy].append(us)
        print(f"{policy:10} {us:8.0f} us CPU per signature ({count} requests)")
    if args.only:
        return
    none, real = statistics.median(by_policy["none"]), statistics.median(by_policy["realistic"])
    print(
        f"median: none {none:.0f} us, realistic {real:.0f} us; policy adds {real - none:.0f} us per signature"
    )
    tree = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    print(f"tree: {tree.stdout.strip()}")


if __name__ == "__main__":
    main()
