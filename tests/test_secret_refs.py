"""The secret reference parser (``signer.secret_refs``) and the environment helpers of the CLI
(``signer.cli_api.envfiles``): examples and properties.

Properties: every reference the parser accepts prints back as itself and matches the contract's pattern;
names with ``..``, NUL, controls, spaces or non-ASCII look-alikes are refused without being repeated;
every value ``render`` prints as ``shell`` reads back byte-exact in bash, and as ``dotenv`` byte-exact in
python-dotenv and in bash (or is refused for the one combination no spelling serves).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import dotenv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.cli_api.envfiles import EnvError, Variables, read_import, render, variable_name
from signer.secret_refs import (
    FOLDER_PATTERN,
    REFERENCE_PATTERN,
    ReferenceRefused,
    SecretReference,
    parse_reference,
)

SEGMENT = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,11}\Z")
FIELD = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_-]{0,11}\Z")
VERSION = st.none() | st.integers(1, 999_999_999)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "secret://acme/payments/prod/stripe-live#STRIPE_SECRET",
            SecretReference("path", name="stripe-live", folder="acme/payments/prod", field="STRIPE_SECRET"),
        ),
        ("secret://acme/db@3", SecretReference("path", name="db", folder="acme", version=3)),
        ("sec_0a1b@2#password", SecretReference("id", secret_id="sec_0a1b", version=2, field="password")),
        ("stripe-live#KEY", SecretReference("short", name="stripe-live", field="KEY")),
        ("sec_not-hex", SecretReference("short", name="sec_not-hex")),
    ],
)
def test_examples(text: str, expected: SecretReference) -> None:
    assert parse_reference(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "secret://",
        "secret://name-only",
        "secret://acme/",
        "secret:///x",
        "secret://acme/../x",
        "secret://acme/a..b",
        "a..b",
        "secret://acme/x#a..b",
        "x\x00y",
        "x\ny",
        "x\ty",
        "x y",
        "x\x7f",
        "\u0430cme",  # Cyrillic a
        "\uff53tripe",  # full-width s
        "stripe\u200b",  # zero-width space
        "Stripe",
        "-stripe",
        "x@0",
        "x@01",
        "x@1000000000",
        "x@",
        "x#",
        "x#1abc",
        "x#a#b",
        "x@1@2",
        "x#F@1",  # the version comes before the field
        "acme/x",
        "http://acme/x",
        "secret://ACME/x",
        "secret://" + "/".join(["a"] * 17) + "/x",
        "x" * 64,
        "x" * 2000,
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(ReferenceRefused) as refused:
        parse_reference(text)
    if len(text) > 2 and text != "secret://":  # the scheme alone is in the message as the syntax
        assert text not in str(refused.value)


def test_short_form_folders_narrowest_first() -> None:
    ref = parse_reference("db#password")
    assert ref.folders("acme/payments/prod") == ["acme/payments/prod", "acme/payments", "acme"]


@given(
    form=st.sampled_from(["path", "id", "short"]),
    folder=st.lists(SEGMENT, min_size=1, max_size=16).map("/".join),
    name=SEGMENT,
    hex_id=st.from_regex(r"\A[0-9a-f]{1,60}\Z"),
    version=VERSION,
    field=st.none() | FIELD,
)
def test_round_trip_and_pattern(
    form: str, folder: str, name: str, hex_id: str, version: int | None, field: str | None
) -> None:
    if form == "path":
        ref = SecretReference("path", name=name, folder=folder, version=version, field=field)
    elif form == "id":
        ref = SecretReference("id", secret_id="sec_" + hex_id, version=version, field=field)
    else:
        if re.fullmatch(r"sec_[0-9a-f]+", name):
            return
        ref = SecretReference("short", name=name, version=version, field=field)
    text = str(ref)
    assert parse_reference(text) == ref
    assert re.fullmatch(REFERENCE_PATTERN[1:-1], text)
    if form == "path":
        assert re.fullmatch(FOLDER_PATTERN[1:-1], folder)


@given(st.text(max_size=80))
def test_anything_parses_or_is_refused_without_echo(text: str) -> None:
    try:
        ref = parse_reference(text)
    except ReferenceRefused as exc:
        assert len(text) < 3 or text not in str(exc)
        return
    # Accepted: printable ASCII, no '..', the contract's pattern matches, and it prints back as itself.
    assert text.isascii() and ".." not in text and str(ref) == text
    assert re.fullmatch(REFERENCE_PATTERN[1:-1], text)


@given(st.text(min_size=1, max_size=40), st.sampled_from(["secret://acme/{}", "{}", "{}#F", "sec_ab#{}"]))
def test_controls_and_lookalikes_are_refused(inner: str, shape: str) -> None:
    if inner.isascii() and inner.isprintable() and " " not in inner:
        return
    with pytest.raises(ReferenceRefused):
        parse_reference(shape.format(inner))


# -- envfiles ---------------------------------------------------------------------------------------


def test_variable_names_and_collisions() -> None:
    assert variable_name("mysql-primary", "password") == "MYSQL_PRIMARY_PASSWORD"
    assert variable_name("a.b", "c-d") == "A_B_C_D"
    found = Variables()
    found.set("A_B_C", "v", "reference 1")
    with pytest.raises(EnvError, match="reference 1 and reference 2 both set A_B_C"):
        found.set("A_B_C", "secret-value", "reference 2")
    with pytest.raises(EnvError, match="not a valid environment variable name") as bad:
        found.set(variable_name("1password", "x"), "secret-value", "reference 3")
    with pytest.raises(EnvError, match="NUL") as nul:
        found.set("OK", "secret\x00value", "reference 4")
    assert "secret" not in str(bad.value) + str(nul.value).replace("holds NUL", "")


VALUES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)),
    min_size=1,
    max_size=40,
)
TRICKY = st.text(alphabet="ab '\"$`\\\n#={}()!;|&*?~\t", min_size=1, max_size=20)


def _bash(text: str, names: list[str]) -> dict[str, str]:
    show = "import json, os, sys; print(json.dumps({k: os.environ[k] for k in sys.argv[1:]}))"
    script = f"set -a; eval \"$(cat)\"; exec {sys.executable} -c '{show}' {' '.join(names)}"
    ran = subprocess.run(["bash", "-c", script], input=text, capture_output=True, text=True, check=True)
    return json.loads(ran.stdout)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VALUES | TRICKY, min_size=1, max_size=4))
def test_rendered_values_read_back_exactly(values: list[str]) -> None:
    variables = {f"V{i}": v for i, v in enumerate(values)}
    names = list(variables)
    assert _bash(render(variables, "shell"), names) == variables
    assert json.loads(render(variables, "json")) == variables
    try:
        printed = render(variables, "dotenv")
    except EnvError as exc:
        # Only a quote or backslash together with $ or a backtick has no spelling; the value is not shown.
        assert any(any(c in v for c in "'\\") and any(c in v for c in "$`") for v in values), values
        assert all(v not in str(exc) for v in values if len(v) > 3)
        return
    parsed = dotenv.dotenv_values(stream=io.StringIO(printed), interpolate=False)
    assert dict(parsed) == variables
    assert _bash(printed, names) == variables
    # What env prints, import reads back (one secret, the variables as fields).
    assert read_import(printed, "dotenv", "app") == {"app": variables}


@pytest.mark.parametrize(
    ("text", "form", "name", "message"),
    [
        ("A=1\nB\n", "dotenv", None, "line 2: a key without"),
        ("A=1\nnot an assignment sk-live-123\n", "dotenv", None, "line 2: not a KEY=VALUE"),
        ("A=1\nA=2\n", "dotenv", "x", "line 2: the key on line 1 again"),
        ("A=\n", "dotenv", "x", "line 1: an empty value"),
        ("", "dotenv", "x", "no KEY=VALUE"),
        ("1A=sk-live-123\n", "dotenv", "x", "line 1: a key is"),
        ('{"db": {"password": 5}}', "json", None, "record 1 (db): the value of field password is not"),
        ('{"db": "sk-live-123"}', "json", None, "record 1 (db): not an object"),
        ('{"Bad Name": {"a": "b"}}', "json", None, "record 1: a secret name"),
        ('{"a": "sk-live-123",', "json", "x", "line 1: not JSON"),
        ('{"bad field": "sk-live-123"}', "json", "x", "the object: a field name"),
        ("A=1\n", "dotenv", "a..b", "--name: a secret name"),
    ],
)
def test_import_refusals_name_places_not_values(text: str, form: str, name: str | None, message: str) -> None:
    with pytest.raises(EnvError) as refused:
        read_import(text, form, name)
    assert message in str(refused.value)
    assert "sk-live-123" not in str(refused.value)


def test_import_shapes() -> None:
    assert read_import("STRIPE_SECRET=a\nexport DB_URL='b c'\n", "dotenv", None) == {
        "stripe-secret": {"value": "a"},
        "db-url": {"value": "b c"},
    }
    assert read_import('{"db": {"user": "u", "password": "p"}}', "json", None) == {
        "db": {"user": "u", "password": "p"}
    }
    assert read_import('{"user": "u"}', "json", "db") == {"db": {"user": "u"}}
