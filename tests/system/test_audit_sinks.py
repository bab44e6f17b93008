"""External audit sinks through a running server (two workers) with the real token, on SQLite and
PostgreSQL: an append-only file, syslog over TCP and UDP to real socket servers on 127.0.0.1, and a
webhook to a real HTTP server through the destination allowlist.

Every committed event reaches every sink (each line carries its seq; at least once, so the test
collects seqs as a set and requires every one from 1 to the head). Then the TCP syslog server goes
away: requests keep answering at once, the failure is counted, the alert is raised after
``audit_sink_alert_seconds`` (log line, metric, ``audit.sink_failing`` event), and once the server is
back every event of the outage arrives and ``audit.sink_recovered`` is recorded. Only one worker
delivers to a sink at a time (the lease): without an outage no event arrives twice.
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.service_harness import Installation, Server, free_port
from tests.system.support import wait_until
from tests.system.test_audit_tamper import FAST, grow, installation

__all__ = ["installation"]  # the SQLite/PostgreSQL fixture, shared with the tamper tests

_SEQ = re.compile(rb'\{"at":"[^"]*","event":.*?"seq":(\d+)\}')


def _seqs(data: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb'"seq":(\d+)\}', data)]


class Collector:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seqs: list[int] = []

    def add(self, data: bytes) -> None:
        with self.lock:
            self.seqs.extend(_seqs(data))

    def seen(self) -> set[int]:
        with self.lock:
            return set(self.seqs)


class TcpSyslog:
    """RFC 6587 octet-counted syslog over TCP on 127.0.0.1, stoppable and restartable on one port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got = Collector()
        self.frames: list[bytes] = []
        self.connections: list[socket.socket] = []
        self._server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        collector, frames, connections = self.got, self.frames, self.connections

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                connections.append(self.request)
                buffer = b""
                while True:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                    while b" " in buffer:
                        length, _, rest = buffer.partition(b" ")
                        if len(rest) < int(length):
                            break
                        frame, buffer = rest[: int(length)], rest[int(length) :]
                        frames.append(frame)
                        collector.add(frame)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for connection in self.connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connections.clear()


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[dict[str, Any]]:
    tcp = TcpSyslog(free_port())
    tcp.start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    udp_got = Collector()
    stop = threading.Event()

    def read_udp() -> None:
        while not stop.is_set():
            try:
                data, _ = udp.recvfrom(65536)
            except TimeoutError:
                continue
            udp_got.add(data)

    hook_got = Collector()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook_got.add(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threads = [
        threading.Thread(target=read_udp, daemon=True),
        threading.Thread(target=hook.serve_forever, daemon=True),
    ]
    for thread in threads:
        thread.start()
    file = tmp_path / "audit-sink.jsonl"
    yield {
        "tcp": tcp,
        "udp": udp_got,
        "hook": hook_got,
        "file": file,
        "config": [
            {"name": "file", "type": "file", "path": str(file)},
            {"name": "tcp", "type": "syslog", "address": f"127.0.0.1:{tcp.port}", "protocol": "tcp"},
            {
                "name": "udp",
                "type": "syslog",
                "address": f"127.0.0.1:{udp.getsockname()[1]}",
                "protocol": "udp",
            },
            {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{hook.server_address[1]}/audit"},
        ],
    }
    stop.set()
    tcp.stop()
    hook.shutdown()
    hook.server_close()
    for thread in threads:
        thread.join(5)
    udp.close()


def _head(server: Server) -> int:
    status, headers, _ = server.call(
        "GET", "/v1/audit/events?after=0&limit=1", token=server.installation.admin_token
    )
    assert status == 200
    return int(headers["X-Audit-Head"])


def _all_delivered(sinks: dict[str, Any], head: int) -> Callable[[], bool]:
    wanted = set(range(1, head + 1))

    def done() -> bool:
        file_seqs = set(_seqs(sinks["file"].read_bytes())) if sinks["file"].exists() else set()
        return all(
            wanted <= got
            for got in (file_seqs, sinks["tcp"].got.seen(), sinks["udp"].seen(), sinks["hook"].seen())
        )

    return done


def _metric(server: Server, name: str, sink: str) -> float:
    status, _, text = server.call("GET", "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(name + "{") and f'sink="{sink}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_every_event_reaches_every_sink_and_an_outage_loses_none(
    installation: Installation, launch: Callable[..., Server], sinks: dict[str, Any]
) -> None:
    env = {
        **FAST,
        "SIGNER_AUDIT_SINKS": json.dumps(sinks["config"]),
        "SIGNER_AUDIT_SINK_ALERT_SECONDS": "1",
        "SIGNER_WEBHOOK_ALLOWED_DESTINATIONS": "127.0.0.1/32",
    }
    server = launch(installation, env=env, workers=2)
    grow(server, 20, "a")
    head = _head(server)
    wait_until(_all_delivered(sinks, head), 60, "every event in every sink")
    # One deliverer per sink: without an outage, nothing twice.
    file_seqs = _seqs(sinks["file"].read_bytes())
    assert len(file_seqs) == len(set(file_seqs)), "a file line was delivered twice"
    frame = sinks["tcp"].frames[0]
    assert frame.startswith(b"<110>1 ") and b" signer " in frame and b" audit - " in frame

    # The TCP syslog server goes away: requests do not wait for it.
    sinks["tcp"].stop()
    started = time.monotonic()
    grow(server, 10, "b")
    assert time.monotonic() - started < 20
    wait_until(lambda: _metric(server, "signer_audit_sink_alert", "tcp") == 1, 60, "the tcp sink's alert")
    assert _metric(server, "signer_audit_sink_failures_total", "tcp") >= 1
    assert _metric(server, "signer_audit_sink_lag_events", "tcp") >= 1
    assert "audit sink failing" in server.log_text()
    # The other sinks go on meanwhile.
    head = _head(server)
    others = {k: v for k, v in sinks.items() if k != "tcp"}
    others["tcp"] = type(
        "Done", (), {"got": type("G", (), {"seen": lambda self: set(range(1, head + 1))})()}
    )()
    wait_until(_all_delivered(others, head), 60, "the other sinks during the outage")

    sinks["tcp"].start()
    grow(server, 5, "c")
    head = _head(server)
    wait_until(_all_delivered(sinks, head), 60, "every event of the outage in the tcp sink")
    wait_until(lambda: _metric(server, "signer_audit_sink_alert", "tcp") == 0, 60, "the alert to clear")
    status, _, text = server.call(
        "GET", "/v1/audit/events?after=0&limit=10000", token=installation.admin_token
    )
    assert status == 200
    kinds = [json.loads(json.loads(line)["event"])["kind"] for line in text.splitlines()]
    assert "audit.sink_failing" in kinds and "audit.sink_recovered" in kinds, [
        k for k in kinds if "sink" in k
    ]
