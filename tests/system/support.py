"""Helpers for the system tests: the running signer seen only from outside, as operators and relayers see it.

The server under test is always ``python -m signer.cli serve`` in a subprocess (started through
``tests.service_harness``), with its own data directory and SoftHSM token. These helpers talk to it over
HTTP, run the ``signer`` CLI, read ``/proc`` and the files and databases an operator owns. They never
import the service's signing or audit code to judge its output: signatures are checked with eth-account
and coincurve, and the audit chain with the ``signer audit verify`` command an auditor would run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import rlp
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.crypto import keccak
from hexbytes import HexBytes

from tests.service_harness import SIGNER, Installation, Server

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
ALL_OPS = ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw"]
SIGN_KINDS = {"sign.transaction", "sign.message", "sign.typed_data", "sign.raw"}

# Guards against hangs only, never measurements: a correct run finishes far inside them.
HANG_GUARD = 60.0


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling a condition with a deadline, not synchronising on time


def ready_pids(server: Server) -> list[int]:
    """The pid of every worker that logged "signer ready" (one line per worker once its HSM is open)."""
    pids = []
    for line in server.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "signer ready":
            pids.append(int(record["pid"]))
    return pids


def wait_all_workers_ready(server: Server, workers: int) -> list[int]:
    """``start_server`` returns once ONE worker answers /readyz; wait for the others too."""

    def enough() -> list[int] | None:
        pids = ready_pids(server)
        return pids if len(pids) >= workers else None

    pids: list[int] = wait_until(enough, HANG_GUARD, f"{workers} workers to log 'signer ready'")
    return pids


# -- secrets of an installation (for leak scans) --------------------------------------------------


def installation_secrets(installation: Installation) -> dict[str, str]:
    """Values that must never appear in a log, a response, an export or the database."""
    found = {}
    for name in ("hsm-user-pin", "hsm-so-pin"):
        path = installation.data_dir / name
        if path.exists():
            found[name] = path.read_text(encoding="utf-8").strip()
    credentials = installation.admin["credentials"]
    for name in ("access_token", "refresh_token"):
        found[f"admin {name}"] = credentials[name]
        found[f"admin {name} secret"] = credentials[name].split(".", 1)[1]
    return found


def assert_no_secret(text: str, secrets_: dict[str, str], where: str) -> None:
    for name, value in secrets_.items():
        assert value not in text, f"{name} appears in {where}"


# -- audit export and offline verification --------------------------------------------------------


def get_text(url: str, token: str, timeout: float = HANG_GUARD) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def export_audit(server: Server, token: str | None = None, page: int = 5000) -> list[str]:
    """Every audit line, paged through ``/v1/audit/events`` (each page request is itself audited)."""
    token = token or server.installation.admin_token
    lines: list[str] = []
    after = 0
    while True:
        status, text = get_text(f"{server.url}/v1/audit/events?after={after}&limit={page}", token)
        assert status == 200, text
        batch = [line for line in text.splitlines() if line.strip()]
        lines.extend(batch)
        # A short page is the end: asking again would only fetch the event our own export just wrote.
        if len(batch) < page:
            return lines
        after = json.loads(batch[-1])["seq"]


def events(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The hashed event of each exported record, with the record's seq."""
    decoded = []
    for line in lines:
        record = json.loads(line)
        event = json.loads(record["event"])
        event["_seq"] = record["seq"]
        decoded.append(event)
    return decoded


def cli_audit_verify(lines: list[str], workdir: Path, env: dict[str, str]) -> tuple[int, Any]:
    """Run ``signer audit verify`` on an export file, as an auditor does offline."""
    path = workdir / f"audit-export-{time.monotonic_ns()}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    done = subprocess.run(
        [*SIGNER, "audit", "verify", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return done.returncode, done.stdout + done.stderr
    # The chain's verdict; the checkpoint and approval counts are the checkpoint tests' business.
    keep = ("ok", "checked") if report.get("ok") else ("ok", "checked", "first_bad_seq", "reason")
    return done.returncode, {name: report.get(name) for name in keep}


def sign_outcomes(lines: Iterable[str]) -> dict[str, list[str]]:
    """request_id -> the outcomes of every signing event recorded for it."""
    found: dict[str, list[str]] = {}
    for event in events(lines):
        if event["kind"] in SIGN_KINDS:
            found.setdefault(event["request_id"], []).append(event["outcome"])
    return found


# -- a mixed signing workload and its independent verification ------------------------------------


@dataclass(frozen=True)
class SignSpec:
    request_id: str
    kind: str  # tx0, tx1, tx2, tx4, message, typed
    key_id: str
    address: str
    path: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    spec: SignSpec
    status: int
    request_id: str | None
    text: str

    @property
    def body(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return self.text


KINDS = ("tx2", "tx0", "tx1", "tx4", "message", "typed")


def authorizations(count: int, chain_id: int) -> list[dict[str, Any]]:
    """EIP-7702 authorisation tuples signed by throw-away accounts (made once: signing them is slow)."""
    made = []
    for nonce in range(count):
        unsigned = {"chainId": chain_id, "address": RECIPIENT, "nonce": nonce}
        auth = Account.create().sign_authorization(unsigned)
        made.append(
            {
                "chainId": chain_id,
                "address": RECIPIENT,
                "nonce": nonce,
                "yParity": auth.y_parity,
                "r": hex(auth.r),
                "s": hex(auth.s),
            }
        )
    return made


def transaction(tx_type: int, nonce: int, chain_id: int, auths: list[dict[str, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": tx_type,
        "chainId": chain_id,
        "nonce": nonce,
        "gas": 21000 + nonce % 7,
        "to": RECIPIENT,
        "value": str(10**15 + nonce),
    }
    if tx_type in (0, 1):
        fields["gasPrice"] = 2 * 10**9
    else:
        fields["maxFeePerGas"] = 3 * 10**9
        fields["maxPriorityFeePerGas"] = 10**9
    if tx_type in (1, 2):
        fields["accessList"] = [{"address": RECIPIENT, "storageKeys": ["0x" + "00" * 31 + "01"]}]
    if tx_type == 4:
        fields["gas"] = 60000
        fields["authorizationList"] = [auths[nonce % len(auths)]]
    return fields


def typed_data(n: int, chain_id: int) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Order": [
                {"name": "maker", "type": "address"},
                {"name": "amount", "type": "uint256"},
                {"name": "memo", "type": "string"},
            ],
        },
        "primaryType": "Order",
        "domain": {
            "name": "System Test",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
        },
        "message": {"maker": RECIPIENT, "amount": n, "memo": f"order {n}"},
    }


def mixed_workload(
    keys: list[dict[str, Any]], count: int, prefix: str, chain_id: int = 11155111
) -> list[SignSpec]:
    """``count`` sign requests cycling through every kind and every key, each with its own request id."""
    auths = authorizations(8, chain_id)
    specs = []
    for n in range(count):
        kind = KINDS[n % len(KINDS)]
        key = keys[n % len(keys)]
        base = f"/v1/keys/{key['id']}/sign/"
        body: dict[str, Any]
        if kind.startswith("tx"):
            path, body = base + "transaction", {"transaction": transaction(int(kind[2]), n, chain_id, auths)}
        elif kind == "message":
            path, body = base + "message", {"message": f"system test message {n}", "encoding": "utf8"}
        else:
            path, body = base + "typed-data", {"typed_data": typed_data(n, chain_id)}
        specs.append(SignSpec(f"{prefix}-{n}", kind, key["id"], key["address"], path, body))
    return specs


def check_signature(spec: SignSpec, body: dict[str, Any]) -> None:
    """Independent verification of one signing response (eth-account and rlp, not the service's code)."""
    assert body["signer"] == spec.address, body
    assert 0 < int(body["s"], 16) <= SECP256K1_N // 2, "high-s signature"
    if spec.kind.startswith("tx"):
        raw = bytes.fromhex(body["raw_transaction"][2:])
        assert Account.recover_transaction(raw) == spec.address
        assert body["transaction_hash"] == "0x" + keccak(raw).hex()
        sent = spec.body["transaction"]
        if spec.kind == "tx0":
            decoded = rlp.decode(raw)
            nonce, value = int.from_bytes(decoded[0], "big"), int.from_bytes(decoded[4], "big")
        else:
            assert raw[0] == int(spec.kind[2])
            as_dict = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            nonce, value = as_dict["nonce"], as_dict["value"]
            assert as_dict["chainId"] == sent["chainId"]
        # The signature is over the transaction we asked for, not some other one.
        assert (nonce, value) == (sent["nonce"], int(sent["value"]))
        return
    if spec.kind == "message":
        signable = encode_defunct(text=spec.body["message"])
    else:
        signable = encode_typed_data(full_message=spec.body["typed_data"])
    signature = bytes.fromhex(body["signature"][2:])
    assert Account.recover_message(signable, signature=signature) == spec.address


async def run_load(
    base_url: str, token: str, specs: list[SignSpec], clients: int, timeout: float = HANG_GUARD
) -> list[Outcome]:
    """``clients`` concurrent aiohttp clients (one connection each) share the queue of requests."""
    pending = deque(specs)
    outcomes: list[Outcome] = []

    async def client() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(
            base_url,
            connector=connector,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as session:
            while pending:
                spec = pending.popleft()
                async with session.post(
                    spec.path, json=spec.body, headers={"X-Request-Id": spec.request_id}
                ) as response:
                    text = await response.text()
                    echoed = response.headers.get("X-Request-Id")
                    outcomes.append(Outcome(spec, response.status, echoed, text))

    async with asyncio.TaskGroup() as group:
        for _ in range(clients):
            group.create_task(client())
    return outcomes


# -- processes, seen through /proc ----------------------------------------------------------------


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def is_running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_exited(pid: int, timeout: float, what: str) -> None:
    """Poll until ``pid`` is gone (or a zombie); fail with ``what`` after ``timeout`` s."""

    def gone() -> bool:
        return not is_running(pid)

    wait_until(gone, timeout, what)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_of(int(entry.name)) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def maps_module(pid: int, name: str) -> bool:
    """Has process ``pid`` loaded a shared object whose path contains ``name``?"""
    try:
        return name in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def connection_owner(pids: Iterable[int], server_port: int, client_port: int) -> int | None:
    """Which of ``pids`` holds the server side of the TCP connection from ``client_port``."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == server_port and remote_port == client_port and fields[3] == "01":
                inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None


# -- a database server that can go away ----------------------------------------------------------


class TcpProxy:
    """A loopback TCP proxy on a thread of its own, for a server in another process to connect through.

    ``down()`` closes the listening socket and resets every live connection, as a database host that
    went away would look; ``up()`` listens again on the same port. Use it as a context manager: the
    thread and its loop are always stopped and joined on exit.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="system-tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._server is not None:
                self.down()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=HANG_GUARD)
            self._loop.close()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=HANG_GUARD)

    def up(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

        self._run(listen())

    def down(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

        self._run(close())

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                server_r, server_w = await asyncio.open_connection(*self._target)
            except OSError:
                client_w.transport.abort()
                return
            self._writers.update((client_w, server_w))
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        finally:
            self._tasks.discard(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            self._writers.discard(sink)
            sink.transport.abort()


# -- a server that cannot override file permissions -----------------------------------------------


def without_dac_override() -> list[str] | None:
    """A command prefix that makes ``chmod 000`` bind the server even when the tests run as root.

    Root ignores file modes through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH; ``setpriv`` drops both from
    the bounding set, so the server sees a mode-000 directory as a real operator's process would. Returns
    ``[]`` when not root, ``None`` when root and ``setpriv`` is missing (the caller skips).
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
