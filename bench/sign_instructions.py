"""Instructions per message signature in the real server, counted by callgrind: steadier than CPU time.

A measurement, not a test; ``fetch_instructions.py``'s method applied to ``POST /v1/keys/{id}/sign/message``
(the request ``vs_openbao.py`` sends). On a shared machine the CPU time of a request moves with
everybody else's work; the number of instructions it executes much less. In a temporary directory:
``signer init``, one ``--curve`` key (Ed25519 or P-256) and a service principal granted
``sign_message`` on it, then ``signer serve --workers 1`` under ``valgrind --tool=callgrind
--instr-atstart=no``. ``--warmup`` signatures run uninstrumented, then ``callgrind_control -i on``,
``--connections`` keep-alive clients ask for ``--signatures`` in all (each answer must be a 200 with a
signature), a dump; then the server idles as long as the load took, a second dump, and the server
stops. ``instructions_per_signature`` is the first dump's total (every thread: event loop, SQLite,
PKCS#11 and SoftHSM inside it) over the signatures; ``net_instructions_per_signature`` subtracts the idle
dump. The run checks that the audit log holds one allowed ``sign.message`` event per signature. The
counts move by a few per cent between runs of one tree (batching follows timing): compare trees in
alternated runs with the same ``--connections``.

    PYTHONPATH=$PWD .venv/bin/python bench/sign_instructions.py [--curve ed25519|p256] [--signatures 600]

Run it from each tree (``python -m signer.cli`` runs the working directory's code) to compare commits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callgrind_window import allowed_events, count_instructions, post_load

import tests.service_harness as harness

MESSAGE = b"bench message: the same bytes for every signature"


def setup(directory: Path, curve: str) -> tuple[harness.Installation, str, str]:
    installation = harness.init_installation(directory)
    server = harness.start_server(installation, workers=1, ready_timeout=120)
    try:
        service = harness.make_service(server, "bench-sign")
        key = harness.make_key(server, curve, f"bench-{curve}")
        harness.grant(server, service["principal"]["id"], key["id"], ["sign_message"])
    finally:
        server.stop()
    return installation, key["id"], service["credentials"]["access_token"]


def load(port: int, key_id: str, token: str, total: int, connections: int) -> None:
    post_load(
        port,
        f"/v1/keys/{key_id}/sign/message",
        {"message": MESSAGE.hex(), "encoding": "hex"},
        token,
        total,
        connections,
        lambda status, answer: status == 200 and "signature" in answer,
        "signatures",
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--signatures", type=int, default=600)
    parser.add_argument("--curve", choices=("ed25519", "p256"), default="ed25519")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if not 1 <= args.connections <= 64 or not 1 <= args.signatures <= 100_000:
        parser.error("--connections 1-64, --signatures 1-100000")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("valgrind (callgrind) is not installed")
    with tempfile.TemporaryDirectory(prefix="sign-instr-") as tmp_name:
        tmp = Path(tmp_name)
        installation, key_id, token = setup(tmp / "signer", args.curve)
        counted = count_instructions(
            installation,
            tmp,
            lambda port: load(port, key_id, token, args.warmup, args.connections),
            lambda port: load(port, key_id, token, args.signatures, args.connections),
        )
        if counted is None:
            return 1
        allowed = allowed_events(installation, "sign.message")
        expected = args.warmup + args.signatures
        if allowed != expected:
            print(f"audit: {allowed} allowed sign.message events for {expected} signatures", file=sys.stderr)
            return 1
    gross, net = counted.per_request(args.signatures)
    print(
        json.dumps(
            {
                "bench": "sign_instructions",
                "curve": args.curve,
                "signatures": args.signatures,
                "connections": args.connections,
                "load_seconds": round(counted.load_seconds, 1),
                "instructions": counted.instructions,
                "instructions_per_signature": gross,
                "idle_instructions": counted.idle_instructions,
                "net_instructions_per_signature": net,
                "audited": allowed,
                # How many signatures shared a group commit moves with timing, and the count with it.
                "group_commits": round(counted.group_commits),
                "mean_batch": counted.mean_batch,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
