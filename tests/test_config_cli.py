"""`signer config show`, settings validation messages, the README's settings table, help and completion."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from signer.cli import _Steps, main
from signer.config import Settings, load_settings
from signer.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent
CANARY = "pin-CANARY-7f3a91"


def clean_env(**extra: str) -> dict[str, str | None]:
    """Unset every SIGNER_* variable of the test process, then apply ``extra``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SIGNER_")}
    env.update(extra)
    return env


def invoke(args: list[str], env: dict[str, str | None]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_config_show_never_prints_a_pin_from_env(tmp_path: Path) -> None:
    env = clean_env(SIGNER_HSM_PIN=CANARY, SIGNER_DATA_DIR=str(tmp_path), SIGNER_PORT="9001")
    code, out, err = invoke(["config", "show"], env)
    assert code == 0, err
    assert CANARY not in out + err
    assert CANARY[:6] not in out + err and CANARY[-6:] not in out + err
    assert "set (env SIGNER_HSM_PIN)" in out
    code, out, err = invoke(["config", "show", "--json"], env)
    assert code == 0, err
    assert CANARY not in out + err
    document = json.loads(out)["settings"]
    assert document["hsm_pin"] == {
        "value": "set",
        "source": "env",
        "origin": "SIGNER_HSM_PIN",
        "secret": True,
    }
    assert document["port"]["value"] == 9001 and document["port"]["source"] == "env"
    assert document["data_dir"] == {
        "value": str(tmp_path.resolve()),
        "source": "env",
        "origin": "SIGNER_DATA_DIR",
        "secret": False,
    }
    assert document["workers"]["source"] == "default"


def test_config_show_names_signer_variables_that_match_no_setting(tmp_path: Path) -> None:
    env = clean_env(
        SIGNER_PROT="9000",
        SIGNER_TOKEN="not-a-setting",
        SIGNER_HSM_SO_PIN="so-pin-for-init",
        SIGNER_DATA_DIR=str(tmp_path),
    )
    code, out, err = invoke(["config", "show", "--json"], env)
    assert code == 0
    assert json.loads(out)["ignored_environment"] == ["SIGNER_PROT"]
    assert "SIGNER_PROT matches no setting" in err and "SIGNER_TOKEN " not in err
    assert "so-pin-for-init" not in out + err


def test_config_show_never_prints_a_pin_from_file(tmp_path: Path) -> None:
    config = tmp_path / "signer.toml"
    config.write_text(
        f'hsm_pin = "{CANARY}"\nhost = "0.0.0.0"\n'
        'database_url = "postgresql+asyncpg://app:db-PASSWORD-canary@db.internal/signer"\n',
        encoding="utf-8",
    )
    env = clean_env(SIGNER_HOST="10.0.0.5")
    code, out, err = invoke(["config", "show", "--config", str(config), "--data-dir", str(tmp_path)], env)
    assert code == 0, err
    assert CANARY not in out + err and "db-PASSWORD-canary" not in out + err
    assert f"set (file {config})" in out
    code, out, err = invoke(["config", "show", "--json", "--config", str(config)], env)
    assert CANARY not in out + err and "db-PASSWORD-canary" not in out + err
    document = json.loads(out)
    assert document["config_file"] == str(config)
    settings = document["settings"]
    assert settings["hsm_pin"]["value"] == "set" and settings["hsm_pin"]["source"] == "file"
    # the environment wins over the file
    assert settings["host"]["value"] == "10.0.0.5" and settings["host"]["source"] == "env"
    assert settings["database_url"]["value"] == "postgresql+asyncpg://app:***@db.internal/signer"
    assert settings["hsm_pin_file"]["origin"] == "derived from data_dir"


def test_config_show_with_no_pin_says_not_set(tmp_path: Path) -> None:
    code, out, _ = invoke(["config", "show", "--data-dir", str(tmp_path)], clean_env())
    assert code == 0
    line = next(row for row in out.splitlines() if row.startswith("hsm_pin "))
    assert "not set" in line
    data_dir_line = next(row for row in out.splitlines() if row.startswith("data_dir "))
    assert data_dir_line.split()[-1] == "flag"


def test_invalid_settings_name_each_field_and_source_but_never_the_value(tmp_path: Path) -> None:
    config = tmp_path / "signer.toml"
    config.write_text(f'workers = 0\nbogus = "x"\nhsm_pin = 1234\nhsm_token_label = "{CANARY}"\n')
    env = clean_env(SIGNER_PORT=f"not-a-port-{CANARY}", SIGNER_HSM_PIN_FILE=str(tmp_path / "pin"))
    code, out, err = invoke(["config", "show", "--config", str(config)], env)
    assert code == 3
    assert CANARY not in out + err and "1234" not in out + err
    assert "port (from SIGNER_PORT): Input should be a valid integer" in err
    assert f"workers (in file {config}): Input should be greater than or equal to 1" in err
    assert f"unknown setting 'bogus' in file {config}" in err
    assert f"hsm_pin (in file {config}): Value error, must be a string" in err
    # the same message stops `serve` before anything starts
    code, _, err = invoke(["serve", "--config", str(config)], env)
    assert code == 3 and "port (from SIGNER_PORT)" in err and CANARY not in err


def _readme_settings_table() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_readme_lists_every_setting_with_env_var_and_default() -> None:
    rows = _readme_settings_table()
    documented = {row[0].strip("`"): row for row in rows}
    assert len(documented) == len(rows), "a setting is documented twice"
    assert set(documented) == set(Settings.model_fields), "README configuration table drifted"
    for name, field in Settings.model_fields.items():
        row = documented[name]
        assert len(row) == 4 and all(row), f"{name}: row must have setting, environment, default, meaning"
        assert row[1] == f"`SIGNER_{name.upper()}`", name
        default = field.default
        if isinstance(default, bool):
            assert f"`{str(default).lower()}`" in row[2], f"{name}: README default {row[2]} is not {default}"
        elif isinstance(default, int | float | str) and default != "":
            assert f"`{default}`" in row[2], f"{name}: README default {row[2]} is not {default!r}"
        elif isinstance(default, Path):
            assert f"`{default}`" in row[2], name
    ttl = Settings.model_fields["access_token_ttl_seconds"].get_default(call_default_factory=True)
    assert json.dumps(dict(ttl), separators=(",", ":")) in documented["access_token_ttl_seconds"][2]


def _walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found.extend(_walk(sub, (*path, name)))
    return found


def test_every_command_has_help_and_the_epilog_lists_exit_codes() -> None:
    commands = _walk(main)
    assert len(commands) > 30
    for path, command in commands:
        assert (command.help or "").strip(), f"signer {' '.join(path)} has no help"
        result = CliRunner().invoke(main, [*path, "--help"], env=clean_env())
        assert result.exit_code == 0, path
    top = CliRunner().invoke(main, ["--help"]).stdout
    for line in ("0  ok", "1  failed", "2  usage error", "4  denied", "5  not found", "6  invalid request"):
        assert line in top
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for code in range(10):
        assert f"| {code} | " in readme


def test_bash_completion_script_is_produced() -> None:
    signer = Path(sys.executable).parent / "signer"
    done = subprocess.run(
        [str(signer)],
        env={**os.environ, "_SIGNER_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "_signer_completion" in done.stdout and "complete " in done.stdout
    completed = subprocess.run(
        [str(signer)],
        env={**os.environ, "_SIGNER_COMPLETE": "bash_complete", "COMP_WORDS": "signer ke", "COMP_CWORD": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "plain,keys" in completed.stdout


class _Tty:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.text = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_init_progress_lines_only_on_a_terminal(tty: bool) -> None:
    stream = _Tty(tty)
    step = _Steps(2, stream)
    step("PINs")
    step("token")
    if tty:
        assert re.findall(r"\[\d/2\] \w+", stream.text) == ["[1/2] PINs", "[2/2] token"]
    else:
        assert stream.text == ""


def test_connection_timeouts_and_hosts_come_from_file_and_env(tmp_path: Path) -> None:
    config = tmp_path / "signer.toml"
    config.write_text(
        "header_timeout_seconds = 3.5\n"
        "keepalive_timeout_seconds = 20\n"
        'allowed_hosts = ["Signer.Example.:8443"]\n'
    )
    from_file = load_settings(config, environ={})
    assert (from_file.header_timeout_seconds, from_file.keepalive_timeout_seconds) == (3.5, 20)
    assert from_file.allowed_hosts == ("signer.example",)
    env = {"SIGNER_HEADER_TIMEOUT_SECONDS": "2", "SIGNER_ALLOWED_HOSTS": "A.example, [::1]:80,localhost"}
    from_env = load_settings(config, environ=env)
    assert from_env.header_timeout_seconds == 2 and from_env.keepalive_timeout_seconds == 20
    assert from_env.allowed_hosts == ("a.example", "[::1]", "localhost")
    defaults = load_settings(None, environ={})
    assert 0 < defaults.header_timeout_seconds <= 10 and 0 < defaults.keepalive_timeout_seconds <= 75
    with pytest.raises(ConfigurationError):
        load_settings(None, environ={"SIGNER_HEADER_TIMEOUT_SECONDS": "0"})


@pytest.mark.parametrize(
    "value", ["2030-01-01T00:00:00", "2030-01-01", "tomorrow", "2030-13-01T00:00:00Z", "1893456000"]
)
def test_cli_refuses_a_grant_expiry_without_an_offset(value: str) -> None:
    result = CliRunner().invoke(
        main,
        [
            "grants",
            "create",
            "--principal",
            "p",
            "--key",
            "k",
            "--operation",
            "sign_message",
            "--expires-at",
            value,
        ],
        env={"SIGNER_SERVER": "http://127.0.0.1:9", "SIGNER_TOKEN": "x"},
    )
    assert result.exit_code == 2 and "--expires-at" in result.output, result.output
