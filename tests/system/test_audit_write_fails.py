"""F-10: the audit log cannot be written (a real ENOSPC) -> every audited change fails closed, counted and
alerted, and heals.

The SQLite database (where the audit log is: an event commits with the change it records) sits on a
16 MiB tmpfs that a filler file then fills. Sign requests, secret reads and grant changes are made in
turn until each has been refused: every answer is 200 or 503 ``db_unavailable``/``audit_unavailable``
(the stable codes), a refused sign carries no signature, a refused read no value, and a refused grant is
not there once the disk has room again. While it lasts ``signer_audit_write_failures_total`` counts the
failed group commits and the server logs the alert once; when the filler goes, the first commit logs
the recovery, and the exported log verifies offline.
"""

from __future__ import annotations

import re
from itertools import count
from pathlib import Path

from tests.service_harness import Server, init_installation
from tests.system.support import cli_audit_verify, export_audit, wait_until
from tests.system.test_fault_recovery import DOWN_CODES, SecretReader, Signer, fill, tiny_filesystem

_scopes = count()
ALERT = "audit log cannot be written"
RECOVERED = "audit log writes recovered"


def _failures(server: Server) -> float:
    status, _, text = server.call("GET", "/metrics")
    assert status == 200
    found = re.findall(r'^signer_audit_write_failures_total\{code="(\w+)"\} ([0-9.e+]+)$', text, re.M)
    assert all(code in DOWN_CODES for code, _ in found), found
    return sum(float(value) for _, value in found)


def _grant(server: Server, principal_id: str) -> tuple[int, str | None, str]:
    scope = f"f10-{next(_scopes)}"
    status, _, body = server.call(
        "POST",
        "/v1/grants",
        {"principal_id": principal_id, "operations": ["read_value"], "scope": scope},
        server.installation.admin_token,
    )
    return status, None if status == 201 else (body or {}).get("code"), scope


def test_enospc_refuses_signs_reads_and_grant_changes_counts_alerts_and_heals(tmp_path: Path, launch) -> None:
    with tiny_filesystem(tmp_path / "small", "16m") as small:
        installation = init_installation(tmp_path / "data", f"sqlite+aiosqlite:///{small / 'signer.db'}")
        server = launch(installation)
        signer = Signer(server, "f10-signer")
        reader = SecretReader(server, "f10-reader")
        assert signer.sign() == (200, None) and reader.fetch() == (200, None)
        assert _failures(server) == 0
        status, _, kept = _grant(server, _admin_id(server))
        assert status == 201
        filler = fill(small)
        refused: dict[str, int] = {"sign": 0, "fetch": 0, "grant": 0}
        refused_scopes: list[str] = []
        try:
            # Writes that need no new page can still land (SQLite reuses its WAL); the ones that need
            # one fail, closed. Go round until each kind was refused: the count is a hang guard.
            for _ in range(3000):
                if all(refused.values()):
                    break
                for kind, outcome in (("sign", signer.sign()), ("fetch", reader.fetch())):
                    status, code = outcome
                    assert status == 200 or (status == 503 and code in DOWN_CODES), (kind, status, code)
                    refused[kind] += status == 503
                status, code, scope = _grant(server, _admin_id(server))
                assert status == 201 or (status == 503 and code in DOWN_CODES), ("grant", status, code)
                if status == 503:
                    refused["grant"] += 1
                    refused_scopes.append(scope)
            assert all(refused.values()), refused
            assert _failures(server) >= 1
            assert server.log_text().count(ALERT) == 1  # once when writes start failing, not per request
        finally:
            filler.unlink()

        def signs() -> bool:
            status, code = signer.sign()
            assert status == 200 or (status == 503 and code in DOWN_CODES), (status, code)
            return status == 200

        wait_until(signs, 30, "signing to work again", interval=0.1)
        assert RECOVERED in server.log_text()
        assert reader.fetch() == (200, None)
        status, _, grants = server.call(
            "GET", f"/v1/grants?principal_id={_admin_id(server)}", token=installation.admin_token
        )
        assert status == 200, grants
        stored = {g["resource_id"] for g in grants["items"] if g["resource_type"] == "scope"}
        assert kept in stored  # a grant made before the fault is listed by its scope
        assert not stored & set(refused_scopes), "a grant change answered 503 was kept"
        lines = export_audit(server)
        assert all(scope not in "\n".join(lines) for scope in refused_scopes)
        code, report = cli_audit_verify(lines, tmp_path, installation.env)
        assert code == 0 and report["ok"], report


def _admin_id(server: Server) -> str:
    return str(server.installation.admin["principal"]["id"])
