"""The name rule (``policy.names``), property-based: no spelling of a name is another name.

A spelling is what an attacker (or a sloppy paste) makes of a name: full-width letters and digits,
Latin letters swapped for Cyrillic, Greek or Armenian look-alikes, surrounding or odd whitespace, and
invisible characters anywhere. Every spelling of an acceptable name must be refused or come out as that
very name; whatever is accepted is its own canonical form; no refusal repeats what it was sent.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from policy.names import NameKind, NameRefused, canonical_name

# Independent of the rule's own tables: common homoglyphs of Latin letters in other scripts.
HOMOGLYPHS = {
    "a": "\u0430\u03b1",  # Cyrillic a, Greek alpha
    "c": "\u0441\u03f2",
    "e": "\u0435",
    "i": "\u0456\u03b9\u0131",  # Cyrillic i, Greek iota, Latin dotless i
    "j": "\u0458\u03f3",
    "k": "\u03ba",
    "o": "\u043e\u03bf\u0585",  # Cyrillic o, Greek omicron, Armenian oh
    "p": "\u0440\u03c1",
    "s": "\u0455",
    "x": "\u0445\u03c7",
    "y": "\u0443",
    "d": "\u0501",
    "h": "\u04bb",
    "q": "\u051b",
    "w": "\u051d",
    "v": "\u03bd",
}
SPACES = "\t\n\r\x0b\x0c \u00a0\u1680\u2000\u2002\u2003\u2009\u200a\u2028\u2029\u202f\u205f\u3000\x85"
INVISIBLE = (
    "\u200b\u200c\u200d\u2060\ufeff\u00ad\u034f\u180e\u115f\u1160\u3164\uffa0\ufe0f\ue000"
    "\u202e\u202d\u2066\u2069\u061c\u200e\u200f\x00\x1b\x7f\U000e0001\U000e0100"
)
IDENTIFIER_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-"

identifiers = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
words = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8
)
labels = st.lists(words, min_size=1, max_size=4).map(" ".join)
tags = st.lists(words, min_size=1, max_size=3).map(":".join)


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@st.composite
def spellings(draw: st.DrawFn, base: str) -> str:
    """One look-alike spelling of ``base`` (never ``base`` itself)."""
    how = draw(st.sampled_from(["full_width", "homoglyph", "spaces", "invisible", "mixed"]))
    text = base
    if how in ("full_width", "mixed"):
        text = full_width(text)
    if how in ("homoglyph", "mixed") and any(c.lower() in HOMOGLYPHS for c in base):
        at = draw(st.sampled_from([i for i, c in enumerate(base) if c.lower() in HOMOGLYPHS]))
        text = base[:at] + draw(st.sampled_from(HOMOGLYPHS[base[at].lower()])) + base[at + 1 :]
    if how in ("spaces", "mixed") or text == base:
        before = draw(st.text(alphabet=SPACES, max_size=2))
        after = draw(st.text(alphabet=SPACES, min_size=0 if before else 1, max_size=2))
        text = before + text + after
    if how in ("invisible", "mixed"):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(INVISIBLE)) + text[at:]
    return text


def outcome(value: str, kind: NameKind) -> str | NameRefused:
    try:
        return canonical_name(value, kind)
    except NameRefused as refused:
        assert value not in refused.message or (value.isascii() and len(value) < 3)
        return refused


KINDS = [(NameKind.IDENTIFIER, identifiers), (NameKind.SCOPE, identifiers), (NameKind.LABEL, labels)]
KINDS.append((NameKind.TAG, tags))


@pytest.mark.parametrize(("kind", "bases"), KINDS, ids=[k.value for k, _ in KINDS])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_no_spelling_of_a_name_is_another_name(kind: NameKind, bases: st.SearchStrategy[str], data) -> None:  # type: ignore[no-untyped-def]
    base = data.draw(bases)
    canonical = canonical_name(base, kind)
    assert canonical == base  # plain ASCII names are already canonical
    spelt = data.draw(spellings(base))
    result = outcome(spelt, kind)
    assert isinstance(result, NameRefused) or result == canonical, (spelt, result)


@pytest.mark.parametrize("kind", list(NameKind))
@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=40))
@example(text="\u0430dmin")
@example(text="admin ")
@example(text="\uff41\uff44\uff4d\uff49\uff4e")
def test_whatever_is_accepted_is_canonical_visible_and_in_one_script(kind: NameKind, text: str) -> None:
    result = outcome(text, kind)
    if isinstance(result, NameRefused):
        assert result.code == "invalid_name"
        return
    assert canonical_name(result, kind) == result
    assert unicodedata.normalize("NFKC", result) == result
    assert result == result.strip() and "  " not in result
    for ch in result:
        category = unicodedata.category(ch)
        assert category[0] != "C", repr(ch)
        assert ch == " " or (category[0] != "Z" and not ch.isspace()), repr(ch)
    if kind in (NameKind.IDENTIFIER, NameKind.SCOPE):
        assert result.isascii()


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("\u0430dmin", NameKind.IDENTIFIER),
        ("admin\n", NameKind.IDENTIFIER),
        ("admin ", NameKind.IDENTIFIER),
        ("Admin", NameKind.IDENTIFIER),
        ("acme/\u0440ay", NameKind.SCOPE),
        ("hot wallet ", NameKind.LABEL),
        ("hot  wallet", NameKind.LABEL),
        ("h\u043et wallet", NameKind.LABEL),
        ("\u0430\u0441\u0435", NameKind.LABEL),  # all Cyrillic, reads "ace"
        ("adm\u0131n", NameKind.LABEL),  # dotless i
        ("wallet\u200b", NameKind.LABEL),
        ("wal\u202elet", NameKind.LABEL),
        ("e\u0301\u0301\u0301\u0301", NameKind.LABEL),
        ("env prod", NameKind.TAG),
    ],
)
def test_known_look_alikes_are_refused(value: str, kind: NameKind) -> None:
    assert isinstance(outcome(value, kind), NameRefused)


@pytest.mark.parametrize(
    ("value", "kind", "canonical"),
    [
        ("\uff41\uff44\uff4d\uff49\uff4e", NameKind.IDENTIFIER, "admin"),
        ("ops\uff11", NameKind.IDENTIFIER, "ops1"),
        ("Tr\u00e9sorerie 2", NameKind.LABEL, "Tr\u00e9sorerie 2"),
        ("Tre\u0301sorerie", NameKind.LABEL, "Tr\u00e9sorerie"),  # composed by NFKC
        ("\u043a\u0430\u0437\u043d\u0430", NameKind.LABEL, "\u043a\u0430\u0437\u043d\u0430"),  # Cyrillic word
        ("\u6771\u4eac wallet", NameKind.LABEL, "\u6771\u4eac wallet"),  # Han with Latin
        (
            "\u30a6\u30a9\u30ec\u30c3\u30c8\u6771\u4eac",
            NameKind.LABEL,
            "\u30a6\u30a9\u30ec\u30c3\u30c8\u6771\u4eac",
        ),
        ("env:prod/eu", NameKind.TAG, "env:prod/eu"),
    ],
)
def test_real_names_in_any_script_are_kept(value: str, kind: NameKind, canonical: str) -> None:
    assert outcome(value, kind) == canonical


@pytest.mark.parametrize("kind", [NameKind.LABEL, NameKind.TAG])
@pytest.mark.parametrize("text", ["\u03f2", "\u03c2", "\u03f2\u03bf"])
def test_a_look_alike_that_normalisation_changes_is_still_a_look_alike(kind: NameKind, text: str) -> None:
    """The lunate sigma (U+03F2), drawn like a Latin c, becomes the final sigma (U+03C2) under NFKC: the
    whole-script look-alike check runs on the normalised name, so both must be in its table."""
    assert isinstance(outcome(text, kind), NameRefused)


def test_the_look_alike_table_is_closed_under_normalisation() -> None:
    """Names are judged after NFKC, so every look-alike's normal form must be a look-alike as well."""
    from policy.names import _LATIN_LOOKALIKES

    assert {unicodedata.normalize("NFKC", ch) for ch in _LATIN_LOOKALIKES} <= _LATIN_LOOKALIKES


@given(st.text(max_size=140), st.sampled_from(list(NameKind)), st.sampled_from([None, 8, 63]))
@settings(max_examples=300)
def test_the_remembered_answer_is_the_rule_s_answer(
    text: str, kind: NameKind, max_length: int | None
) -> None:
    """Short names are judged once and remembered: asked twice, the answer (or the refusal, which is
    never remembered) is the one the uncached rule gives."""
    from policy.names import _canonical_name

    def judged(call: object) -> object:
        try:
            return call()  # type: ignore[operator]
        except NameRefused as exc:
            return ("refused", exc.message)

    expected = judged(lambda: _canonical_name(text, kind, max_length))
    for _ in range(2):
        assert judged(lambda: canonical_name(text, kind, max_length=max_length)) == expected


def test_a_str_subclass_is_judged_but_not_remembered() -> None:
    from policy.names import _canonical_cached

    class Name(str):
        pass

    before = _canonical_cached.cache_info().currsize
    assert canonical_name(Name("ops-subclass"), NameKind.IDENTIFIER) == "ops-subclass"
    assert _canonical_cached.cache_info().currsize == before
