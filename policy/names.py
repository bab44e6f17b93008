"""Human-readable names: the one rule for every name a person types and another person later reads.

Principal and group names, policy and rule ids, scope segments, key labels and tags are all read by
people deciding whom to trust, so two names that look the same must be the same name, and a name must
look like what it is. ``canonical_name`` is the rule, used wherever such a name enters the service:

1. NFKC normalisation: full-width letters and digits, ligatures, superscripts and compatibility spaces
   become their plain forms, and the name is stored and compared in that form (so uniqueness is
   decided on it);
2. no invisible character: controls, format characters (zero-width joiners, bidi overrides, soft
   hyphens, BOMs), default-ignorable fillers and variation selectors, unassigned, private-use and
   surrogate code points, and no whitespace but the plain space;
3. no surrounding whitespace and no run of spaces (``ops `` and ``ops`` are not two names);
4. identifiers (principal and group names, policy ids, scope segments) are ASCII
   ``[a-z0-9][a-z0-9._-]*``; labels and tags are letters, marks, digits and a few separators;
5. one script per name (Latin may join Han with Kana, Bopomofo or Hangul, as UTS #39's "highly
   restrictive" level allows), so ``admin`` spelt with a Cyrillic a (U+0430) is refused; a name
   written only in Cyrillic, Greek or Armenian letters drawn like Latin ones (Cyrillic ``ace``) is
   refused as a whole-script look-alike, and so is any Latin letter that imitates another (dotless i,
   small capitals).

The script of a character is read from its Unicode name (the standard library has no Script property):
the first word names it for every letter the rule must tell apart. Errors never repeat the name.
"""

from __future__ import annotations

import re
import unicodedata
from enum import Enum
from functools import lru_cache
from typing import Final

from policy.errors import PolicyError

MAX_IDENTIFIER: Final = 63
MAX_SCOPE_DEPTH: Final = 16
MAX_LABEL: Final = 64
_IDENTIFIER_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII)
_LABEL_PUNCTUATION: Final = frozenset(" ._-")
_TAG_PUNCTUATION: Final = frozenset("._-:/")
_MAX_MARKS: Final = 2  # combining marks on one base letter; more is "zalgo" stacking

# Invisible code points that are not format characters (Cf) but are still ignorable when displayed.
_IGNORABLE: Final = (
    frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u3164\uffa0")
    | frozenset(chr(c) for c in range(0xFE00, 0xFE10))
    | frozenset(chr(c) for c in range(0xE0100, 0xE01F0))
)
_INVISIBLE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

# Scripts that may share one name (UTS #39 highly restrictive), by the first word of character names.
_SCRIPT_ALIASES: Final = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "ARABIC-INDIC": "ARABIC", "EXTENDED": "ARABIC"}
_COMPATIBLE_SCRIPTS: Final = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
# Letters of other scripts drawn like Latin ones: a name made only of these reads as Latin.
_LATIN_LOOKALIKES: Final = frozenset(
    "АВЕЅІЈКМНОРСТХУЁЇаеѕіјорсхуёїԁԛԝһӏӀԚԜүҮ"  # Cyrillic
    "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαικνορτυχϲςϳ"  # Greek (the final sigma too: NFKC turns the lunate sigma U+03F2 into it)
    "ՕՍՏՀոսօհզցւ"  # Armenian
)
# Latin letters that imitate other Latin letters (and survive NFKC): refused wherever they appear.
_LATIN_IMPOSTORS: Final = frozenset("ıȷɑɡɩɪʟɴʀʏꜱᴀᴄᴅᴇɢʜᴊᴋᴍᴏᴘᴛᴜᴠᴡᴢǀǃꞵ")


class NameKind(Enum):
    """Which grammar a name follows after the common checks."""

    IDENTIFIER = "identifier"  # principal and group names, policy and rule ids
    SCOPE = "scope"  # '/'-separated identifiers: acme/payments/prod
    LABEL = "label"  # key labels: words separated by single spaces
    TAG = "tag"  # key tags: one word, ':' and '/' allowed


class NameRefused(PolicyError):
    """A name that is not acceptable; ``message`` says why without repeating it."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_name", message)


# The names a service sees again and again (a workload tag on every secret fetch, a principal's name)
# are judged once: the rule is a pure function of its arguments, and NFKC plus the per-character
# checks cost ~8 us a call. Only plain ``str`` values of a short length are kept, so the cache stays
# under ~1,024 short strings whatever callers send; a refusal is never cached (it raises).
_CACHED_NAMES: Final = 1024
_CACHED_LENGTH: Final = 128


def canonical_name(value: object, kind: NameKind, *, max_length: int | None = None) -> str:
    """The name in the form it is stored and compared in, or ``NameRefused``."""
    if type(value) is str and len(value) <= _CACHED_LENGTH:
        return _canonical_cached(value, kind, max_length)
    return _canonical_name(value, kind, max_length)


@lru_cache(maxsize=_CACHED_NAMES)
def _canonical_cached(value: str, kind: NameKind, max_length: int | None) -> str:
    return _canonical_name(value, kind, max_length)


def _canonical_name(value: object, kind: NameKind, max_length: int | None) -> str:
    limit = max_length or (MAX_LABEL if kind in (NameKind.LABEL, NameKind.TAG) else MAX_IDENTIFIER)
    if kind is NameKind.SCOPE and max_length is None:
        limit = MAX_SCOPE_DEPTH * (MAX_IDENTIFIER + 1)
    if not isinstance(value, str):
        raise NameRefused("must be a string")
    if not value or len(value) > 4 * limit:
        raise NameRefused(f"must be 1 to {limit} characters")
    text = unicodedata.normalize("NFKC", value)
    _check_visible(text)
    if not 0 < len(text) <= limit:
        raise NameRefused(f"must be 1 to {limit} characters")
    if text != text.strip(" "):
        raise NameRefused("must not begin or end with a space")
    if "  " in text:
        raise NameRefused("must not contain two spaces in a row")
    if kind is NameKind.IDENTIFIER:
        if not is_identifier(text, limit):
            raise NameRefused("must be lower-case a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
    elif kind is NameKind.SCOPE:
        if not is_scope_path(text):
            raise NameRefused(
                f"must be 1 to {MAX_SCOPE_DEPTH} '/'-separated segments of lower-case a-z, 0-9, "
                "'.', '_' or '-', each starting with a letter or digit"
            )
    else:
        _check_words(text, _LABEL_PUNCTUATION if kind is NameKind.LABEL else _TAG_PUNCTUATION)
        _check_scripts(text)
    return text


def is_identifier(text: str, max_length: int = MAX_IDENTIFIER) -> bool:
    """ASCII ``[a-z0-9][a-z0-9._-]*`` of at most ``max_length`` characters (no trailing newline)."""
    return len(text) <= max_length and _IDENTIFIER_RE.fullmatch(text) is not None


def is_scope_path(text: str) -> bool:
    segments = text.split("/")
    return len(segments) <= MAX_SCOPE_DEPTH and all(is_identifier(s) for s in segments)


def _check_visible(text: str) -> None:
    for ch in text:
        category = unicodedata.category(ch)
        if category in _INVISIBLE_CATEGORIES or ch in _IGNORABLE or (category == "Zs" and ch != " "):
            raise NameRefused("must not contain invisible, control or formatting characters")


def _check_words(text: str, punctuation: frozenset[str]) -> None:
    marks = 0
    for index, ch in enumerate(text):
        category = unicodedata.category(ch)
        if category[0] == "M":
            marks += 1
            if index == 0 or marks > _MAX_MARKS:
                raise NameRefused("must not stack combining marks")
            continue
        marks = 0
        if category[0] not in "LN" and ch not in punctuation:
            shown = "', '".join(sorted(punctuation - {" "}))
            space = "spaces, " if " " in punctuation else ""
            raise NameRefused(f"must be letters, digits, {space}'{shown}'")


def script_of(ch: str) -> str | None:
    """The script a letter or digit is written in; None for characters every script shares."""
    if ch.isascii():
        return "LATIN" if ch.isalpha() else None
    category = unicodedata.category(ch)
    if category[0] not in "LN":
        return None  # marks, punctuation and spaces belong to the letter or to every script
    word = unicodedata.name(ch, "UNNAMED").split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(word, word)


def _check_scripts(text: str) -> None:
    if any(ch in _LATIN_IMPOSTORS for ch in text):
        raise NameRefused("must not contain letters that imitate other letters")
    scripts = {script for script in map(script_of, text) if script is not None}
    if len(scripts) > 1 and not any(scripts <= allowed for allowed in _COMPATIBLE_SCRIPTS):
        raise NameRefused("must be written in one script")
    letters = [ch for ch in text if unicodedata.category(ch)[0] == "L"]
    if scripts and "LATIN" not in scripts and letters and all(ch in _LATIN_LOOKALIKES for ch in letters):
        raise NameRefused("must not be made only of letters that look like Latin ones")
