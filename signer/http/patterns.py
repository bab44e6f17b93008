"""The patterns and formats in which the OpenAPI document states the validators' rules.

Names (principal and group names, policy and rule ids, scopes, key labels and tags) follow
``policy.names.canonical_name``: NFKC first, then a grammar. JSON Schema cannot say "after NFKC" or "one
script", so a name's schema is a ``pattern`` that every accepted name matches and that is exact for ASCII
text, plus a ``format`` that names the whole rule (``NAME_FORMATS``). The other patterns state rules the
services apply (budgets, assets, hex, digests, base64, webhook URLs). The request models
(``signer.http.models``) and the policy document's schema (``signer.http.policy_schema``) both build on
this module, which imports neither; ``tests/test_http_contract_rules.py`` holds each pattern to its
validator.
"""

from __future__ import annotations

from pydantic import JsonValue

from policy.names import NameKind

# -- names ----------------------------------------------------------------------------------------


def _not_ascii_except(allowed: str) -> str:
    """A character class of every ASCII or C1 control character not in ``allowed`` (as \\xHH ranges, which
    ECMA-262, Rust and Python regular expressions read alike)."""
    refused = [c for c in range(0xA0) if chr(c) not in allowed]
    ranges: list[str] = []
    start = prev = refused[0]
    for c in [*refused[1:], -1]:
        if c == prev + 1:
            prev = c
            continue
        ranges.append(f"\\x{start:02x}" if start == prev else f"\\x{start:02x}-\\x{prev:02x}")
        start = prev = c
    return "[^" + "".join(ranges) + "]"


_LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
_IDENTIFIER_CHAR = _not_ascii_except(_LOWER_DIGITS + "._-")
_SCOPE_CHAR = _not_ascii_except(_LOWER_DIGITS + "._-/")
_LETTERS = _LOWER_DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

NAME_FORMATS: dict[str, NameKind] = {
    "signer-identifier": NameKind.IDENTIFIER,
    "signer-scope": NameKind.SCOPE,
    "signer-label": NameKind.LABEL,
    "signer-tag": NameKind.TAG,
}


def name_schema(kind: NameKind) -> dict[str, JsonValue]:
    """The contract of a name of this kind: the pattern (exact for ASCII) and the format naming the rule."""
    if kind is NameKind.IDENTIFIER:
        pattern = f"^(?![._-]){_IDENTIFIER_CHAR}+$"
        what = "lower-case a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    elif kind is NameKind.SCOPE:
        pattern = f"^(?![._/-])(?!.*/[._/-])(?!.*/$){_SCOPE_CHAR}+$"
        what = "'/'-separated segments of a-z, 0-9, '.', '_' or '-', each starting with a letter or digit"
    elif kind is NameKind.LABEL:
        pattern = f"^(?! )(?!.* $)(?!.*  ){_not_ascii_except(_LETTERS + ' ._-')}+$"
        what = "letters, digits and combining marks of one script, single spaces, '.', '_' or '-'"
    else:
        pattern = f"^{_not_ascii_except(_LETTERS + '._-:/')}+$"
        what = "letters, digits and combining marks of one script, '.', '_', '-', ':' or '/'"
    format_name = next(name for name, value in NAME_FORMATS.items() if value is kind)
    return {
        "pattern": pattern,
        "format": format_name,
        "description": f"{what}; compared after NFKC normalisation, with no invisible character",
    }


# -- other rules the services apply ---------------------------------------------------------------


def at_most(limit: int) -> str:
    """A regular expression for the decimal numbers 0..limit written without leading zeros."""
    digits = str(limit)
    options = ["0", f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else ["0"]
    for i, d in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(d) > low:
            rest = len(digits) - i - 1
            options.append(digits[:i] + f"[{low}-{int(d) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    options.append(digits)
    return "(?:" + "|".join(options) + ")"


def padded_at_most(limit: int) -> str:
    """The decimal numbers 0..limit in at most as many digits as ``limit`` has (leading zeros allowed)."""
    digits = str(limit)
    options = [f"[0-9]{{1,{len(digits) - 1}}}"] if len(digits) > 1 else []
    for i, d in enumerate(digits):
        if d != "0":
            rest = len(digits) - i - 1
            options.append(digits[:i] + f"[0-{int(d) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    options.append(digits)
    return "(?:" + "|".join(options) + ")"


# A budget: up to 78 decimal digits, below 2**256 (the admin service's ``_budgets``).
UINT256_PATTERN = f"^{padded_at_most(2**256 - 1)}$"
ASSET_PATTERN = "^(?:native|0x[0-9a-fA-F]{40})$"
HEX_PATTERN = "^(?:0[xX])?(?:[0-9a-fA-F]{2})*$"
DIGEST_PATTERN = "^(?:0[xX])?[0-9a-fA-F]{64}$"
BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_HOST_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# An absolute http(s) URL whose host is a DNS name or an IPv4 address, with no user information and
# a port (when given) from 1 to 65535.
WEBHOOK_URL_PATTERN = (
    f"^[Hh][Tt][Tt][Pp][Ss]?://(?=[^/?#:]{{1,253}}(?:[:/?#]|$)){_HOST_LABEL}(?:\\.{_HOST_LABEL})*"
    f"(?::(?!0+(?:[/?#]|$))0*{at_most(65535)}?)?(?:[/?#][\\x21-\\x7e]*)?$"
)
