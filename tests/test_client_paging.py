"""The client's audit paging and `audit export --verify` against a small fake server (a growing log)."""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from signer.cli import main
from signer.client import SignerClient


class GrowingLog:
    """Like the real endpoint: every page read appends its own event after the head it reports."""

    def __init__(self, size: int) -> None:
        self.records = [self._record(seq) for seq in range(1, size + 1)]
        self.pages: list[tuple[int, int]] = []

    @staticmethod
    def _record(seq: int) -> dict[str, Any]:
        return {
            "seq": seq,
            "at": "2026-01-01T00:00:00Z",
            "request_id": None,
            "kind": "k",
            "event": "{}",
            "prev_hash": "0" * 64,
            "hash": "1" * 64,
        }

    def page(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        self.pages.append((after, limit))
        head = len(self.records)
        chosen = [r for r in self.records if r["seq"] > after][:limit]
        self.records.append(self._record(head + 1))
        return chosen, head


@pytest.fixture
def fake() -> Iterator[tuple[str, GrowingLog]]:
    log = GrowingLog(23)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urllib.parse.urlsplit(self.path).path != "/v1/audit/events":
                # An older server: no checkpoint routes (the export then carries no checkpoint).
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            records, head = log.page(int(query["after"][0]), int(query["limit"][0]))
            body = "".join(json.dumps(r) + "\n" for r in records).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("X-Audit-Head", str(head))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", log
    httpd.shutdown()
    thread.join()


def test_export_stops_at_the_first_head_although_the_log_grows(fake: tuple[str, GrowingLog]) -> None:
    url, log = fake
    seqs = [seq for _, seq, _ in SignerClient(url).audit_export(page_size=5)]
    assert seqs == list(range(1, 24))
    assert log.pages == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 5)]


def test_export_verify_failure_exits_1(fake: tuple[str, GrowingLog], tmp_path: Path) -> None:
    url, _ = fake
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SIGNER_")}
    env.update(SIGNER_SERVER=url, SIGNER_TOKEN="x", HOME=str(tmp_path))
    out = tmp_path / "audit.jsonl"
    result = CliRunner().invoke(main, ["audit", "export", str(out), "--verify", "--json"], env=env)
    assert result.exit_code == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["exported"] == 23 and summary["verified"] is False and summary["first_bad_seq"] == 1
