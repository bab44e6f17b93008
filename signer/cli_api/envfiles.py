"""Environment variables from secrets and back: names, the three output formats, and reading files.

Pure helpers of ``signer secrets env``, ``signer exec`` and ``signer secrets import``:

- ``variable_name``: ``mysql-primary`` + ``password`` -> ``MYSQL_PRIMARY_PASSWORD`` (upper-cased, every
  character outside ``A-Z 0-9 _`` becomes ``_``); ``Variables`` collects them and refuses a name that is not
  a variable (``1PASSWORD_X``), two sources setting one name, and a value holding NUL, naming the sources
  and never a value.
- ``render``: ``json``; ``shell`` (``export NAME='...'``, a quote as ``'\\''``: read back exactly by any
  POSIX shell); ``dotenv``: single quotes when the value holds no quote or backslash, else double quotes
  with ``\\`` and ``"`` escaped when it holds no ``$`` or backtick. Both spellings are read back exactly by
  a POSIX shell and by dotenv parsers that do not interpolate (python-dotenv's ``interpolate=False``),
  multi-line values included, and neither runs anything when sourced. A value holding a quote or
  backslash and also ``$`` or a backtick has no spelling both read the same: refused, naming the
  variable (use ``shell`` or ``json``).
- ``read_import``: a ``.env`` file (python-dotenv's parser) or JSON, as records ``{name: {field: value}}``;
  a problem is reported by line number (``.env``) or by record and field name (JSON), never by value.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from typing import Any

from dotenv.parser import parse_stream

VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\Z")
MAX_FIELDS = 64


class EnvError(ValueError):
    """A problem with variables or a file; the message names places, never values."""


def variable_name(secret_name: str, field: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", f"{secret_name}_{field}".upper())


class Variables:
    """Variables in the order they were set, each remembering which source set it."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self._sources: dict[str, str] = {}

    def set(self, name: str, value: str, source: str) -> None:
        if not VARIABLE.match(name):
            raise EnvError(f"{source}: {name!r} is not a valid environment variable name")
        if name in self.values:
            raise EnvError(f"{self._sources[name]} and {source} both set {name}")
        if "\x00" in value:
            raise EnvError(f"{source}: the value of {name} holds NUL, which no environment variable can")
        self.values[name] = value
        self._sources[name] = source


def _shell(value: str) -> str:
    # Single quotes keep everything literal (newlines included); a quote closes, escapes and reopens.
    return "'" + value.replace("'", "'\\''") + "'"


def _dotenv(name: str, value: str) -> str:
    if "'" not in value and "\\" not in value:
        return "'" + value + "'"
    if "$" not in value and "`" not in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise EnvError(
        f"the value of {name} holds a quote or backslash and also $ or a backtick: no dotenv spelling reads "
        "the same in a shell and in dotenv parsers; use --format shell or json"
    )


def render(variables: Mapping[str, str], form: str) -> str:
    if form == "json":
        return json.dumps(dict(variables), indent=2, sort_keys=True)
    names = sorted(variables)
    if form == "shell":
        return "\n".join(f"export {k}={_shell(variables[k])}" for k in names)
    return "\n".join(f"{k}={_dotenv(k, variables[k])}" for k in names)


# -- reading files for import -------------------------------------------------------------------------


def _check_fields(fields: Mapping[str, str], where: str) -> dict[str, str]:
    if not fields:
        raise EnvError(f"{where}: no fields")
    if len(fields) > MAX_FIELDS:
        raise EnvError(f"{where}: more than {MAX_FIELDS} fields")
    for field, value in fields.items():
        if not FIELD_NAME.match(field):
            raise EnvError(
                f"{where}: a field name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter "
                "or '_'"
            )
        if not isinstance(value, str):
            raise EnvError(f"{where}: the value of field {field} is not a string")
        if not value:
            raise EnvError(f"{where}: the value of field {field} is empty")
    return dict(fields)


def secret_name_for(variable: str) -> str:
    """A secret's name from a variable's: ``STRIPE_SECRET`` -> ``stripe-secret``."""
    return variable.lower().replace("_", "-")


def _check_name(name: str, where: str) -> str:
    if not SECRET_NAME.match(name) or ".." in name:
        raise EnvError(
            f"{where}: a secret name is 1 to 63 of lower-case a-z, 0-9, '.', '_' or '-', starting with a "
            "letter or digit, without '..'"
        )
    return name


def _read_dotenv(text: str) -> dict[str, tuple[int, str]]:
    """KEY -> (line, value) from a .env file; any line that is not an assignment is refused."""
    found: dict[str, tuple[int, str]] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            raise EnvError(f"line {line}: not a KEY=VALUE assignment")
        if binding.key is None:
            continue  # a blank line or a comment
        if binding.value is None:
            raise EnvError(f"line {line}: a key without '=' and a value")
        if binding.key in found:
            raise EnvError(f"line {line}: the key on line {found[binding.key][0]} again")
        if not VARIABLE.match(binding.key):
            raise EnvError(f"line {line}: a key is letters, digits and '_', not starting with a digit")
        if not binding.value:
            raise EnvError(f"line {line}: an empty value")
        found[binding.key] = (line, binding.value)
    if not found:
        raise EnvError("the file holds no KEY=VALUE assignment")
    return found


def read_import(text: str, form: str, name: str | None) -> dict[str, dict[str, str]]:
    """Records ``{secret name: {field: value}}`` from a file's text.

    ``dotenv``: with ``name``, one secret whose fields are the file's keys; without, one secret per key
    (``STRIPE_SECRET`` -> ``stripe-secret``, its value in the field ``value``). ``json``: with ``name``, an
    object of fields; without, an object of secret names to objects of fields.
    """
    if name is not None:
        _check_name(name, "--name")
    if form == "dotenv":
        found = _read_dotenv(text)
        if name is not None:
            return {name: _check_fields({k: v for k, (_, v) in found.items()}, "the file")}
        records: dict[str, dict[str, str]] = {}
        for key, (line, value) in found.items():
            secret = _check_name(secret_name_for(key), f"line {line}")
            if secret in records:
                raise EnvError(f"line {line}: names the same secret as another key ({secret})")
            records[secret] = {"value": value}
        return records
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnvError(f"line {exc.lineno}: not JSON") from None
    if not isinstance(document, dict) or not document:
        raise EnvError("the JSON document is not a non-empty object")
    if name is not None:
        return {name: _check_fields(document, "the object")}
    out: dict[str, dict[str, str]] = {}
    for position, (secret, fields) in enumerate(document.items(), start=1):
        where = f"record {position}"
        _check_name(secret, where)
        if not isinstance(fields, dict):
            raise EnvError(f"{where} ({secret}): not an object of fields")
        out[secret] = _check_fields(fields, f"{where} ({secret})")
    return out
