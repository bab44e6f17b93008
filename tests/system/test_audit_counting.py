"""U-01: under load, one audit event per audited request, counted against the server's request counter.

A server with two worker processes (SQLite, and PostgreSQL) takes 400 requests from 16 concurrent
clients, each with its own ``X-Request-Id``: allowed EIP-712 signatures, signatures denied (no grant
for the operation), bad input on the sign route, admin calls refused to a relayer, and admin calls
that succeed; the HSM queue is one job per worker, so some signatures fail with 503 ``hsm_overloaded``
(the 5xx of the mix). Client-chosen text (the EIP-712 domain's name and memo, a message to sign, address-book
labels and notes) carries CR/LF, an ANSI escape, quotes, braces, backslashes, a forged JSON record and
non-ASCII. What the audit log keeps of it (the typed data's domain name, every character above; an
admin's label: all but the controls) round-trips exactly; what the service refuses (a label with
control characters, a relayer's call to an admin route) is refused and still audited, without the text.
An ``anomaly.detected`` flag raised on the way (repeated denials) names its request in
``trigger_request_id``: it is not a second entry under that request id.

Afterwards: the server's ``signer_http_requests_total`` moved by exactly what the clients sent, per
route and status; every request id the clients sent has exactly one audit event, whose outcome matches
the status the client saw; sequence numbers strictly increase; timestamps are UTC; the injected text
round-trips exactly through ``/v1/audit/events``, the JSONL export and the CSV export (whose rows map
one to one onto the records: no line forged by a CR/LF); and every line the server logged is one JSON
object.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.service_harness import Installation, Server, grant, init_installation, make_key, make_service
from tests.system.support import HANG_GUARD, get_text, typed_data, wait_all_workers_ready

# Everything a log or an export line could be broken by, and a record it could try to forge.
INJECTED = 'a"b\\c{d}[e]\r\n{"seq":1,"kind":"forged"}\n\x1b[31mred\x1b[0m \u00e9\u6f22\U0001f642 \u202e'
# What a label may hold (the service refuses controls and direction marks in labels, names and tags).
PRINTABLE = 'a"b\\c{d}[e] {"seq":1,"kind":"forged"} \u00e9\u6f22\U0001f642 =1+2'
TOTAL, CLIENTS = 400, 16
ADDRESS = "0x" + "ab" * 20


@pytest.fixture(params=["sqlite", "postgresql"])
def installation(request: pytest.FixtureRequest, tmp_path: Path) -> Installation:
    if request.param == "sqlite":
        return init_installation(tmp_path / "data")
    return init_installation(tmp_path / "data", request.getfixturevalue("pg_url"))


@dataclass(frozen=True)
class Call:
    request_id: str
    kind: str  # allowed, denied, bad_input, refused_admin, admin
    method: str
    path: str
    route: str
    body: Any
    token: str
    expect: int
    injected: str | None = None


@dataclass
class Seen:
    call: Call
    status: int
    echoed: str | None
    body: str


def workload(admin: str, relayer: str, granted: str, other: str) -> list[Call]:
    calls = []
    for n in range(TOTAL):
        rid = f"u01-{n:04d}"
        kind = ("allowed", "allowed", "denied", "bad_input", "refused_admin", "admin")[n % 6]
        if kind == "allowed":
            document = typed_data(n, 1)
            document["domain"]["name"] = f"{INJECTED} {n}"
            document["message"]["memo"] = INJECTED
            call = Call(
                rid,
                kind,
                "POST",
                f"/v1/keys/{granted}/sign/typed-data",
                "/v1/keys/{key_id}/sign/typed-data",
                {"typed_data": document},
                relayer,
                200,
                f"{INJECTED} {n}",
            )
        elif kind == "denied":
            call = Call(
                rid,
                kind,
                "POST",
                f"/v1/keys/{other}/sign/message",
                "/v1/keys/{key_id}/sign/message",
                {"message": INJECTED, "encoding": "utf8"},
                relayer,
                403,
            )
        elif kind == "bad_input":
            document = typed_data(n, 1)
            document["primaryType"] = INJECTED  # not a type of the document
            call = Call(
                rid,
                kind,
                "POST",
                f"/v1/keys/{granted}/sign/typed-data",
                "/v1/keys/{key_id}/sign/typed-data",
                {"typed_data": document},
                relayer,
                400,
            )
        elif kind == "refused_admin":
            call = Call(
                rid,
                kind,
                "PUT",
                f"/v1/books/addresses/{ADDRESS}",
                "/v1/books/addresses/{address}",
                {"label": PRINTABLE, "note": INJECTED},
                relayer,
                403,
            )
        elif n % 12 == 5:
            # An admin's label with controls in it: refused (and audited) without the text.
            call = Call(
                rid,
                "refused_label",
                "PUT",
                f"/v1/books/addresses/{ADDRESS}",
                "/v1/books/addresses/{address}",
                {"label": INJECTED},
                admin,
                400,
            )
        else:
            call = Call(
                rid,
                kind,
                "PUT",
                f"/v1/books/addresses/{ADDRESS}",
                "/v1/books/addresses/{address}",
                {"label": f"{PRINTABLE} {n}"},
                admin,
                200,
                f"{PRINTABLE} {n}",
            )
        calls.append(call)
    return calls


async def run(base_url: str, calls: list[Call]) -> list[Seen]:
    """``CLIENTS`` concurrent clients (one connection each) share the queue; every request says its id."""
    pending = list(reversed(calls))
    seen: list[Seen] = []

    async def client() -> None:
        async with aiohttp.ClientSession(
            base_url,
            connector=aiohttp.TCPConnector(limit=1),
            timeout=aiohttp.ClientTimeout(total=HANG_GUARD),
        ) as session:
            while pending:
                call = pending.pop()
                headers = {"Authorization": f"Bearer {call.token}", "X-Request-Id": call.request_id}
                async with session.request(
                    call.method, call.path, json=call.body, headers=headers
                ) as response:
                    seen.append(
                        Seen(
                            call, response.status, response.headers.get("X-Request-Id"), await response.text()
                        )
                    )

    async with asyncio.TaskGroup() as group:
        for _ in range(CLIENTS):
            group.create_task(client())
    return seen


_SAMPLE = re.compile(r"^signer_http_requests_total\{(?P<labels>.*)\} (?P<value>[0-9.e+]+)$")


def request_counts(server: Server) -> Counter[tuple[str, str, str]]:
    status, text = get_text(f"{server.url}/metrics", server.installation.admin_token)
    assert status == 200, text
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"]))
            counts[(labels["method"], labels["route"], labels["status"])] += int(float(match["value"]))
    return counts


def utc(at: str) -> datetime:
    assert at.endswith("Z"), at
    moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0
    return moment


def fetch(server: Server, path: str) -> str:
    status, text = get_text(server.url + path, server.installation.admin_token)
    assert status == 200, text
    return text


def test_every_audited_request_has_one_event_and_injected_text_round_trips(
    installation: Installation, launch: Callable[..., Server]
) -> None:
    # One admitted PKCS#11 job per worker: concurrent signatures overflow it, and those requests are
    # answered 503 hsm_overloaded (a server-side failure that must be audited like any other).
    server = launch(installation, workers=2, env={"SIGNER_HSM_QUEUE_SIZE": "1"})
    wait_all_workers_ready(server, 2)
    admin = installation.admin_token
    relayer = make_service(server, "u01-relayer")
    granted = make_key(server, "secp256k1", "u01-granted")
    other = make_key(server, "secp256k1", "u01-other")
    grant(server, relayer["principal"]["id"], granted["id"], ["sign_typed_data", "sign_message"])
    # The relayer sees the other key (a grant for another operation) but may not sign messages with it.
    grant(server, relayer["principal"]["id"], other["id"], ["sign_transaction"])
    calls = workload(admin, relayer["credentials"]["access_token"], granted["id"], other["id"])

    before = request_counts(server)
    seen = asyncio.run(run(server.url, calls))
    after = request_counts(server)

    # What the clients saw: every answer as planned, each echoing the request id it was sent with.
    assert len(seen) == TOTAL
    wrong = [
        (s.call.request_id, s.call.kind, s.status, s.body[:200])
        for s in seen
        if s.status != s.call.expect and not (s.call.kind == "allowed" and s.status == 503)
    ]
    assert Counter((w[1], w[2]) for w in wrong) == Counter(), wrong[:3]
    assert all(s.echoed == s.call.request_id for s in seen)
    overloaded = [s for s in seen if s.status == 503]
    assert overloaded and all(json.loads(s.body)["code"] == "hsm_overloaded" for s in overloaded)
    # No answer quotes the refused input.
    assert not [s.call.request_id for s in seen if s.status >= 400 and "forged" in s.body]

    # The server's request counter moved by exactly what the clients sent, per route and status.
    sent = Counter((s.call.method, s.call.route, str(s.status)) for s in seen)
    moved = {k: after[k] - before.get(k, 0) for k in sent}
    assert moved == dict(sent)

    # The audit log: exactly one event per request id sent, its outcome the client's answer.
    lines = [line for line in fetch(server, "/v1/audit/events?after=0&limit=10000").split("\n") if line]
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and set(r) >= {"seq", "at", "kind", "event", "hash"} for r in records)
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs)) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for record in records:
        assert utc(record["at"]) and utc(json.loads(record["event"])["at"])
    by_request: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_request.setdefault(record["request_id"] or "", []).append(record)
    mine = {s.call.request_id: s for s in seen}
    counts = {rid: len(by_request.get(rid, [])) for rid in mine}
    doubled = {
        rid: [json.loads(r["event"]) for r in by_request.get(rid, [])] for rid, n in counts.items() if n != 1
    }
    assert doubled == {}, json.dumps(doubled, indent=1)[:6000]
    outcomes = Counter()
    for rid, s in mine.items():
        event = json.loads(by_request[rid][0]["event"])
        outcomes[(s.call.kind, event["kind"], event.get("outcome"))] += 1
        if s.call.injected is not None:
            # Exactly the text sent: the typed data's domain name in the sign event, the admin's label.
            text = event["request"]["domain"]["name"] if s.call.kind == "allowed" else event["label"]
            assert text == s.call.injected, rid
        if s.status >= 400:
            # A refusal or failure is recorded with the status the client saw; a refusal of bad
            # input without the input.
            assert event["error"]["status"] == s.status, (rid, event["error"])
        if 400 <= s.status < 500:
            assert "forged" not in by_request[rid][0]["event"], rid
    kinds = {k for k, _, _ in outcomes}
    for kind, event_kind, outcome in outcomes:
        assert (kind, event_kind, outcome) in {
            ("allowed", "sign.typed_data", "allowed"),
            ("allowed", "sign.typed_data", "failed"),  # 503: the HSM queue was full
            ("denied", "sign.message", "denied"),
            # Signing writes a refusal not about permission as "failed"; the status tells 4xx from 5xx.
            ("bad_input", "sign.typed_data", "failed"),
            ("refused_admin", "request.refused", "refused"),
            ("refused_label", "request.refused", "refused"),
            ("admin", "books.address.put", "allowed"),
        }, outcomes
    assert kinds == {"allowed", "denied", "bad_input", "refused_admin", "refused_label", "admin"}

    # The JSONL export: the same records, line for line (no line forged by the text in them).
    first, last = seqs[0], seqs[-1]
    exported = fetch(server, "/v1/audit/export")
    assert "\r" not in exported and "\x1b" not in exported
    exported_records = [json.loads(line) for line in exported.split("\n") if line]
    assert [r for r in exported_records if first <= r["seq"] <= last] == records
    # The CSV export: one row per record, in order, request ids and hashes matching.
    table = list(csv.DictReader(io.StringIO(fetch(server, "/v1/audit/export/csv"), newline="")))
    rows = [row for row in table if first <= int(row["seq"]) <= last]
    assert [(int(r["seq"]), r["request_id"], r["hash"]) for r in rows] == [
        (r["seq"], r["request_id"] or "", r["hash"]) for r in records
    ]
    assert all(utc(r["at"]) for r in rows)
    # No CSV cell can run as a spreadsheet formula.
    assert not [c for row in table for c in row.values() if c and c[0] in "=+-@\t\r"]

    # Every line the server logged is one JSON object (CR/LF and escapes never split or colour one).
    server.stop()
    log_lines = server.log_text().split("\n")
    assert log_lines[-1] == ""
    for line in log_lines[:-1]:
        assert isinstance(json.loads(line), dict), line
    assert "\x1b" not in server.log_text()
