"""Secret references, ``POST /v1/secrets/resolve`` and ``signer exec`` / ``secrets env`` / ``secrets import``
through a running server and its real token, on SQLite and PostgreSQL (issue 12, references).

The three spellings resolve (a name alone: the narrowest folder the caller can see wins); a reference the
caller cannot see answers exactly like a missing one, with its index; the batch is all or nothing, and a
refusal known before any value is opened stops it before one is; bad references are refused with stable
codes and never echoed; ``signer exec`` (a real subprocess) injects the values, refuses collisions before
starting anything, passes signals on and returns the command's status (128+N when a signal ended it); and
a canary scan finds no value in error output, the server's log or the audit export.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from signer.http.secret_ref_models import ResolvedSecrets
from tests.dbfixtures import private_pg_database
from tests.service_harness import SIGNER, TREE, Server, attach_policy, init_installation, start_server
from tests.system.test_secrets import World, canary


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def refs_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_secret_refs"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("refs")) / "data", database_url)
        server = start_server(installation)
        try:
            yield server
        finally:
            server.stop()


class Refs(World):
    """The world of ``test_secrets`` plus secrets of one name at three levels and a CLI to run."""

    def __init__(self, server: Server, tag: str, tmp: Path) -> None:
        super().__init__(server, tag)
        self.tmp = tmp
        self.values = {level: canary() for level in ("org", "payments", "prod")}
        self.ids = {}
        for level, folder in (
            ("org", self.org),
            ("payments", f"{self.org}/payments"),
            ("prod", f"{self.org}/payments/prod"),
        ):
            status, created = self.call(
                "POST",
                "/v1/secrets",
                {
                    "folder": folder,
                    "name": "stripe-live",
                    "owner_group": "payments",
                    "fields": {"KEY": self.values[level], "ACCOUNT": f"acct-{level}"},
                },
            )
            assert status == 201, created
            self.ids[level] = created["id"]

    def resolve(
        self, token: str | None = None, request_id: str | None = None, **body: Any
    ) -> tuple[int, Any]:
        headers = {"X-Request-Id": request_id} if request_id else None
        status, hdrs, payload = self.server.call(
            "POST", "/v1/secrets/resolve", body, token or self.service, headers=headers
        )
        if status == 200:
            assert hdrs.get("Cache-Control") == "no-store"
        return status, payload

    def audit(self) -> list[dict[str, Any]]:
        status, _, exported = self.server.call("GET", "/v1/audit/events?limit=10000", token=self.admin)
        assert status == 200
        events = []
        for line in exported.splitlines():
            record = json.loads(line)
            event = record["event"]
            events.append(json.loads(event) if isinstance(event, str) else event)
        return events

    def cli(self, *args: str, token: str | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SIGNER, *args],
            env=self.cli_env(token),
            cwd=TREE,
            capture_output=True,
            text=True,
            timeout=60,
            **kw,
        )

    def cli_env(self, token: str | None = None) -> dict[str, str]:
        token_file = self.tmp / f"token-{secrets.token_hex(4)}"
        token_file.write_text((token or self.service) + "\n")
        token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNER_")}
        env.update(SIGNER_SERVER=self.server.url, SIGNER_TOKEN_FILE=str(token_file), HOME=str(self.tmp))
        return env


@pytest.fixture
def refs(refs_server: Server, tmp_path: Path) -> Refs:
    return Refs(refs_server, secrets.token_hex(4), tmp_path)


def test_three_spellings_versions_fields_and_the_narrowest_folder(refs: Refs) -> None:
    refs.grant(refs.service_id, scope=refs.org, operations=["read_value"])
    rotated = canary()
    status, _ = refs.call("POST", f"/v1/secrets/{refs.ids['prod']}/versions", {"fields": {"KEY": rotated}})
    assert status == 201
    status, body = refs.resolve(
        references=[
            f"secret://{refs.org}/payments/stripe-live#KEY",
            f"{refs.ids['org']}#ACCOUNT",
            "stripe-live#KEY",
            "stripe-live@1",
            f"secret://{refs.org}/payments/prod/stripe-live@2#KEY",
        ],
        workspace=f"{refs.org}/payments/prod",
        workload="billing-api",
    )
    assert status == 200, body
    got = body["references"]
    assert got[0]["values"] == {"KEY": refs.values["payments"]}
    assert got[1]["values"] == {"ACCOUNT": "acct-org"}
    assert got[2]["values"] == {"KEY": rotated} and got[2]["secret_id"] == refs.ids["prod"]
    assert got[3]["values"] == {"KEY": refs.values["prod"], "ACCOUNT": "acct-prod"} and got[3]["version"] == 1
    assert got[4]["values"] == {"KEY": rotated}
    assert body["scope"] == [] and body["skipped"] == []
    ResolvedSecrets.model_validate(body)  # the documented response model, extra fields refused
    # From a workspace with no secret of that name, the nearest parent's wins.
    status, body = refs.resolve(references=["stripe-live#KEY"], workspace=f"{refs.org}/payments/dev/eu")
    assert status == 200 and body["references"][0]["values"] == {"KEY": refs.values["payments"]}
    # Each secret fetched is audited on its own, with the workload, never a value.
    fetches = [
        e
        for e in refs.audit()
        if e["kind"] == "secret.fetch" and e["actor"]["principal_id"] == refs.service_id
    ]
    assert len(fetches) >= 6 and all(e["outcome"] == "allowed" for e in fetches)
    assert all(e["request"]["workload"] == "billing-api" for e in fetches[:5])


def test_what_the_caller_cannot_see_is_not_there(refs: Refs) -> None:
    """A narrower secret hidden by no-access is skipped by the short form (as if missing); a reference to
    it answers exactly like a missing one, index included, and nothing is fetched for the batch."""
    refs.grant(refs.service_id, scope=refs.org, operations=["read_value"])
    status, _ = refs.call(
        "POST",
        "/v1/grants",
        {"principal_id": refs.service_id, "scope": f"{refs.org}/payments/prod", "no_access": True},
    )
    assert status == 201
    status, body = refs.resolve(references=["stripe-live#KEY"], workspace=f"{refs.org}/payments/prod")
    assert status == 200 and body["references"][0]["values"] == {"KEY": refs.values["payments"]}
    strip = ("request_id", "instance")
    pairs = [
        (refs.ids["prod"], "sec_00000000000000ff"),
        (f"secret://{refs.org}/payments/prod/stripe-live", f"secret://{refs.org}/payments/prod/no-such"),
        (
            f"secret://{refs.org}/payments/prod/stripe-live#KEY",
            f"secret://{refs.org}/nowhere/stripe-live#KEY",
        ),
    ]
    for hidden_ref, missing_ref in pairs:
        hidden = refs.resolve(references=["stripe-live#KEY", hidden_ref], workspace=refs.org)
        missing = refs.resolve(references=["stripe-live#KEY", missing_ref], workspace=refs.org)
        assert hidden[0] == missing[0] == 404
        assert hidden[1]["code"] == "secret_not_found" and hidden[1]["index"] == 1
        assert {k: v for k, v in hidden[1].items() if k not in strip} == {
            k: v for k, v in missing[1].items() if k not in strip
        }
        assert all(v not in json.dumps([hidden, missing]) for v in refs.values.values())
    # The batch was refused before any fetch: the only fetches are the first call's.
    fetches = [
        e
        for e in refs.audit()
        if e["kind"] == "secret.fetch" and e["actor"]["principal_id"] == refs.service_id
    ]
    assert len(fetches) == 1


def test_all_or_nothing_refusal_before_any_value(refs: Refs) -> None:
    """A secret the caller sees but may not read (read_metadata only) is fetched first and refused: the
    readable one in the same batch is never opened (no allowed fetch event for this request)."""
    refs.grant(refs.service_id, secret_id=refs.ids["org"], operations=["read_value"])
    refs.grant(refs.service_id, secret_id=refs.ids["payments"], operations=["read_metadata"])
    request_id = "refs-aon-" + secrets.token_hex(4)
    status, body = refs.resolve(references=[refs.ids["org"], refs.ids["payments"]], request_id=request_id)
    assert (status, body["code"], body["index"]) == (403, "operation_not_granted", 1), body
    assert refs.values["org"] not in json.dumps(body)
    events = [e for e in refs.audit() if e.get("request_id") == request_id]
    assert [(e["kind"], e["outcome"]) for e in events if e["kind"] == "secret.fetch"] == [
        ("secret.fetch", "denied")
    ]
    assert any(e["kind"] == "request.refused" for e in events)


def test_a_rate_limit_spent_by_the_batch_refuses_it_whole(refs: Refs) -> None:
    refs.grant(refs.service_id, scope=refs.org, operations=["read_value"])
    attach_policy(
        refs.server,
        {
            "id": f"reads-{refs.org}",
            "rules": [
                {
                    "id": "reads",
                    "kind": "rate_limit",
                    "effect": "deny",
                    "max_requests": 2,
                    "window_seconds": 3600,
                    "per": "principal",
                }
            ],
        },
        scope=refs.org,
    )
    request_id = "refs-rate-" + secrets.token_hex(4)
    status, body = refs.resolve(
        references=[refs.ids["org"], refs.ids["payments"], refs.ids["prod"]], request_id=request_id
    )
    assert status == 429 and body["code"] == "rate_limited" and "index" in body, body
    assert all(v not in json.dumps(body) for v in refs.values.values())
    # As documented: the two fetches the limit allowed are audited (their values were then discarded),
    # the third is denied, and one secret.resolve event names the discarded ones.
    events = [e for e in refs.audit() if e.get("request_id") == request_id]
    outcomes = sorted(e["outcome"] for e in events if e["kind"] == "secret.fetch")
    assert outcomes == ["allowed", "allowed", "denied"], outcomes
    (resolved,) = [e for e in events if e["kind"] == "secret.resolve"]
    allowed = sorted(
        e["resource"]["id"] for e in events if e["kind"] == "secret.fetch" and e["outcome"] == "allowed"
    )
    assert resolved["outcome"] == "denied" and resolved["error"]["code"] == "rate_limited"
    assert resolved["discarded"] == allowed


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"references": ["secret://acme/../etc/x"]}, "invalid_secret_reference"),
        ({"references": ["ok", "bad\x00name"], "workspace": "acme"}, "invalid_secret_reference"),
        ({"references": ["stripe\u0430"], "workspace": "acme"}, "invalid_secret_reference"),
        ({"references": ["x#F@1"], "workspace": "acme"}, "invalid_secret_reference"),
        ({"references": ["stripe-live"]}, "workspace_required"),
        ({"references": ["secret://acme/x"] * 101}, "invalid_field"),
        ({"references": []}, "nothing_to_resolve"),
        ({"references": ["secret://acme/x"], "workspace": "acme/../b"}, "invalid_field"),
        ({"references": ["secret://acme/x"], "extra": 1}, "unknown_field"),
    ],
)
def test_bad_input_is_refused_with_stable_codes(refs: Refs, body: dict[str, Any], code: str) -> None:
    status, problem = refs.resolve(**body)
    assert status == 400 and problem["code"] == code, problem
    for reference in body.get("references", []):
        if len(reference) > 3:
            assert reference not in json.dumps(problem)


def test_exec_scope_signals_status_and_collisions(refs: Refs) -> None:
    folder = f"{refs.org}/payments"
    refs.grant(refs.service_id, scope=folder, operations=["read_value", "list"])
    # Under the scope: stripe-live in payments and in payments/prod collide as STRIPE_LIVE_KEY.
    marker = refs.tmp / "started"
    touch = f"open({str(marker)!r}, 'w').close()"
    collided = refs.cli("exec", "--scope", folder, "--", sys.executable, "-c", touch)
    assert collided.returncode == 2 and "both set STRIPE_LIVE_" in collided.stderr, collided.stderr
    assert not marker.exists()
    assert all(v not in collided.stdout + collided.stderr for v in refs.values.values())
    # A narrower scope: one secret; a listable but unreadable one is skipped and said so.
    prod = f"{folder}/prod"
    status, only_listed = refs.call(
        "POST",
        "/v1/secrets",
        {"folder": f"{prod}/catalog", "name": "listed-only", "owner_group": "g", "fields": {"A": canary()}},
    )
    assert status == 201
    # No access to the folder it is in, then list (only) reopened on the secret itself.
    status, _ = refs.call(
        "POST", "/v1/grants", {"principal_id": refs.service_id, "scope": f"{prod}/catalog", "no_access": True}
    )
    assert status == 201
    refs.grant(refs.service_id, secret_id=only_listed["id"], operations=["list"])
    check = (
        "import os, sys; "
        f"sys.exit(5 if os.environ['STRIPE_LIVE_KEY'] == {refs.values['prod']!r} "
        f"and os.environ['PARENT'] == {refs.values['payments']!r} else 1)"
    )
    ran = refs.cli(
        "exec",
        "--scope",
        prod,
        "--secret",
        f"PARENT=secret://{folder}/stripe-live#KEY",
        "--",
        sys.executable,
        "-c",
        check,
    )
    assert ran.returncode == 5, ran.stderr
    assert f"skipped {prod}/catalog/listed-only: you may list it but not read it" in ran.stderr
    printed = refs.cli(
        "secrets", "env", "--scope", prod, "P=stripe-live#ACCOUNT", "--workspace", folder, "--format", "json"
    )
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == {
        "STRIPE_LIVE_KEY": refs.values["prod"],
        "STRIPE_LIVE_ACCOUNT": "acct-prod",
        "P": "acct-payments",  # looked up from --workspace, not --scope
    }
    # Signals: each is passed on; a command that handles it exits as it likes (here 100+N), one that
    # does not dies of it and we exit 128+N.
    handler = (
        "import os, signal, sys; "
        "[signal.signal(s, lambda n, _: sys.exit(100 + n if os.environ.get('STRIPE_LIVE_KEY') else 1)) "
        "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]; "
        "print('ready', flush=True); signal.pause()"
    )
    # A command that does not handle them: default actions, whatever it inherited (a shell started in
    # the background ignores SIGINT, nohup ignores SIGHUP, and both pass down to children).
    plain = (
        "import signal; [signal.signal(s, signal.SIG_DFL) for s in "
        "(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]; print('ready', flush=True); signal.pause()"
    )
    cases = [(handler, sig, 100 + sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
    cases += [(plain, sig, 128 + sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
    for program, sig, expected in cases:
        process = subprocess.Popen(
            [*SIGNER, "exec", "--scope", prod, "--", sys.executable, "-c", program],
            env=refs.cli_env(),
            cwd=TREE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
            process.send_signal(sig)
            assert process.wait(timeout=30) == expected, (
                sig,
                process.stderr.read() if process.stderr else "",
            )
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    # The command's own status comes back; a command that cannot start is a usage error.
    assert (
        refs.cli("exec", "--scope", prod, "--", sys.executable, "-c", "raise SystemExit(42)").returncode == 42
    )
    missing = refs.cli("exec", "--scope", prod, "--", str(refs.tmp / "no-such-program"))
    assert missing.returncode == 2 and "cannot start" in missing.stderr


def test_env_import_and_the_canary_scan(refs_server: Server, refs: Refs) -> None:
    """Values imported from a .env file and read back by ``env``; every error path's output, the server's
    log and the audit export hold none of them."""
    admin_id = refs_server.installation.admin["principal"]["id"]
    refs.grant(admin_id, scope=refs.org, operations=["read_value"])
    seeded = {"API_KEY": canary(), "DB_PASSWORD": canary() + " it's $HOME `x`"}
    env_file = refs.tmp / "app.env"
    env_file.write_text("".join(f"{k}={json.dumps(v)}\n" for k, v in seeded.items()))
    folder = f"{refs.org}/imported"
    imported = refs.cli(
        "secrets",
        "import",
        str(env_file),
        "--folder",
        folder,
        "--name",
        "app",
        "--owner-group",
        "ops",
        "--json",
        token=refs.admin,
    )
    assert imported.returncode == 0, imported.stderr
    (row,) = json.loads(imported.stdout)["items"]
    assert row["outcome"] == "created" and row["name"] == "app"
    shown = refs.cli("secrets", "env", f"secret://{folder}/app", "--format", "shell", token=refs.admin)
    assert shown.returncode == 0, shown.stderr
    sourced = subprocess.run(
        ["bash", "-c", 'eval "$(cat)"; printf %s "$APP_DB_PASSWORD"'],
        input=shown.stdout,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sourced.stdout == seeded["DB_PASSWORD"]
    outputs = [
        refs.cli("secrets", "env", f"secret://{folder}/app", "--format", "dotenv", token=refs.admin),
        refs.cli("secrets", "env", f"secret://{folder}/app"),  # the service: not found
        refs.cli("secrets", "env", f"secret://{folder}/app", "X=app#API_KEY", token=refs.admin),
        refs.cli(
            "secrets",
            "import",
            str(env_file),
            "--folder",
            folder,
            "--name",
            "app",
            "--owner-group",
            "ops",
            token=refs.admin,
        ),
        refs.cli("exec", "--secret", f"secret://{folder}/app", "--", "false", token=refs.other),
    ]
    assert [o.returncode for o in outputs] == [2, 5, 6, 7, 5], [o.stderr for o in outputs]
    haystacks = {
        "cli": json.dumps([o.stdout + o.stderr for o in outputs]),
        "audit": json.dumps(refs.audit()),
        "log": refs_server.log_text(),
    }
    for where, text in haystacks.items():
        for value in seeded.values():
            assert value not in text, f"a value leaked into {where}"
