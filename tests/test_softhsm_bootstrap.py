"""softhsm/bootstrap: makes a usable token once, keeps it on a second run, PINs in 0600 files only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bootstrap(
    data_dir: Path, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNER_", "SOFTHSM2_CONF"))}
    env["PYTHON"] = sys.executable
    env.update(env_extra or {})
    return subprocess.run(
        ["bash", str(ROOT / "softhsm" / "bootstrap"), str(data_dir), "boot-test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bootstrap_is_idempotent_and_keeps_pins_private(tmp_path: Path):
    first = run_bootstrap(tmp_path, {"SIGNER_HSM_PIN": "user-pin-from-env-123"})
    assert first.returncode == 0, first.stderr
    assert "initialised" in first.stderr
    second = run_bootstrap(tmp_path)
    assert second.returncode == 0, second.stderr
    assert "already present" in second.stderr
    assert (tmp_path / "hsm-user-pin").read_text() == "user-pin-from-env-123"
    for name in ("hsm-user-pin", "hsm-so-pin"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    so_pin = (tmp_path / "hsm-so-pin").read_text()
    for output in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert "user-pin-from-env-123" not in output and so_pin not in output
    conf = (tmp_path / "softhsm2.conf").read_text()
    assert f"directories.tokendir = {tmp_path}/tokens" in conf
    # The token answers to its user PIN: log in from a fresh process.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import os, pkcs11; from signer.config import default_module_path; "
                "lib = pkcs11.lib(default_module_path()); t = lib.get_token(token_label='boot-test'); "
                "s = t.open(user_pin=open(os.environ['PIN_FILE']).read()); s.close(); print('ok')"
            ),
        ],
        env={
            **os.environ,
            "SOFTHSM2_CONF": str(tmp_path / "softhsm2.conf"),
            "PIN_FILE": str(tmp_path / "hsm-user-pin"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.stdout.strip() == "ok", probe.stderr
