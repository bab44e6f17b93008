"""Token provisioning: the SoftHSM configuration, idempotent C_InitToken through ctypes, and PINs that
never reach a command line, an environment, an error or an output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from signer.config import Secret, default_module_path
from signer.errors import ConfigurationError
from signer.hsm import Hsm
from signer.hsm.provision import (
    EXIT_CREATED,
    EXIT_EXISTS,
    EXIT_FAILED,
    init_token,
    init_token_in_subprocess,
    provision_softhsm,
    softhsm_env,
    write_softhsm_conf,
)

MODULE = default_module_path()


def test_conf_is_private_and_points_at_the_token_dir(tmp_path: Path) -> None:
    conf, tokens = tmp_path / "etc" / "softhsm2.conf", tmp_path / "tokens"
    write_softhsm_conf(conf, tokens)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o700
    text = conf.read_text()
    assert f"directories.tokendir = {tokens.resolve()}/" in text
    assert "objectstore.backend = file" in text and "log.level = ERROR" in text
    assert softhsm_env(conf, {"PATH": "/bin"}) == {"PATH": "/bin", "SOFTHSM2_CONF": str(conf.resolve())}


def show_labels(conf: Path) -> list[str]:
    shown = subprocess.run(
        ["softhsm2-util", "--show-slots"], env=softhsm_env(conf), capture_output=True, text=True, check=True
    ).stdout
    return [line.split(":", 1)[1].strip() for line in shown.splitlines() if line.strip().startswith("Label:")]


def test_init_token_is_idempotent_and_keeps_pins_off_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "softhsm2.conf"
    write_softhsm_conf(conf, tmp_path / "tokens")
    so_pin, user_pin = Secret("so-canary-31d5e0"), Secret("user-canary-8b27aa")
    seen: list[dict[str, Any]] = []
    real_run = subprocess.run

    def spy(args: Any, **kwargs: Any) -> Any:
        done = real_run(args, **kwargs)
        seen.append(
            {
                "argv": " ".join(args),
                "env": " ".join(kwargs.get("env", {}).values()),
                "out": done.stdout + done.stderr,
            }
        )
        return done

    monkeypatch.setattr(subprocess, "run", spy)
    assert init_token_in_subprocess(MODULE, "first", so_pin, user_pin, conf) is True
    assert init_token_in_subprocess(MODULE, "first", so_pin, user_pin, conf) is False
    assert init_token_in_subprocess(MODULE, "second", so_pin, user_pin, conf) is True
    monkeypatch.undo()
    assert sorted(label for label in show_labels(conf) if label) == ["first", "second"]
    assert len(seen) == 3
    for call in seen:
        for pin in (so_pin, user_pin):
            assert pin.reveal() not in call["argv"] + call["env"] + call["out"]


def test_cli_protocol_exit_codes_and_no_echo(tmp_path: Path) -> None:
    conf = tmp_path / "softhsm2.conf"
    write_softhsm_conf(conf, tmp_path / "tokens")
    request = {"module": MODULE, "label": "cli", "so_pin": "so-canary-55", "user_pin": "user-canary-66"}

    def run(payload: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "signer.hsm.provision"],
            input=payload,
            env=softhsm_env(conf),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert run(json.dumps(request)).returncode == EXIT_CREATED
    assert run(json.dumps(request)).returncode == EXIT_EXISTS
    for payload in (json.dumps({**request, "module": "/nonexistent/module.so"}), '{"so_pin": "so-canary-55"'):
        done = run(payload)
        assert done.returncode == EXIT_FAILED and done.stderr.strip()
        assert "canary" not in done.stdout + done.stderr


async def test_module_already_initialised_here_is_refused_and_left_alone(hsm: Hsm) -> None:
    """In-process init_token would C_Finalize the module under the running worker: it refuses instead.
    (Called on the worker thread, like every PKCS#11 call in this process.)"""
    with pytest.raises(ConfigurationError, match="already initialised in this process"):
        await hsm._run_on_worker(
            lambda ctx: init_token(hsm.module_path, "never", Secret("so-pin-1"), Secret("user-pin-1"))
        )
    await hsm.ping()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="label"):
        init_token_in_subprocess(MODULE, "x" * 33, Secret("so"), Secret("user"), tmp_path / "c.conf")
    with pytest.raises(ConfigurationError, match="cannot be loaded"):
        init_token("/nonexistent/module.so", "x", Secret("so"), Secret("user"))


def test_provision_softhsm_makes_tokens_with_random_pins(tmp_path: Path) -> None:
    first, second = provision_softhsm(tmp_path, ["a", "b"])
    assert first.conf_path == second.conf_path and first.conf_path.exists()
    assert first.user_pin != second.user_pin and first.so_pin != first.user_pin
    assert len(first.user_pin.reveal()) >= 20
    assert first.user_pin.reveal() not in repr(first)
    assert first.env({})["SOFTHSM2_CONF"] == str(first.conf_path)
    assert sorted(label for label in show_labels(first.conf_path) if label) == ["a", "b"]
    with pytest.raises(ConfigurationError, match="already exists"):
        provision_softhsm(tmp_path, ["a"])
    assert os.environ.get("SOFTHSM2_CONF") != str(first.conf_path)  # the caller decides when to point at it
