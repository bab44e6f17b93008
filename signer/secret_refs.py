"""Secret references: the one parser of ``secret://folder/name@VERSION#FIELD`` and its shorter forms.

Three spellings name a secret, each with an optional ``@VERSION`` (a positive integer, default the
current version) and then an optional ``#FIELD`` (default: every field), in that order (the fragment
comes last, as in a URI):

- ``secret://acme/payments/prod/stripe-live@3#STRIPE_SECRET``: a folder and a name;
- ``sec_0123abcd#password``: a secret's id (a name spelled like an id is reached by its path only);
- ``stripe-live#STRIPE_SECRET``: the short form, a name alone, resolved against a workspace folder from
  the narrowest folder upward (the server decides which one it means).

References are exact ASCII: folders and names follow the scope and identifier rules of ``policy.names``
already in their normal form (lower-case ``a-z 0-9 . _ -``), never ``..``; fields follow the field-name
rule. Anything else (spaces, NUL and other controls, full-width or look-alike letters, a second ``@`` or
``#``) is refused with a reason that never repeats the reference. Pure: no I/O, used by the server and
the command line alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from policy.names import MAX_SCOPE_DEPTH, is_identifier, is_scope_path

__all__ = [
    "FOLDER_PATTERN",
    "MAX_REFERENCE_LENGTH",
    "MAX_VERSION",
    "REFERENCE_PATTERN",
    "ReferenceRefused",
    "SecretReference",
    "check_folder",
    "parse_reference",
]

SCHEME = "secret://"
MAX_REFERENCE_LENGTH = 1200
MAX_VERSION = 999_999_999
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
_VERSION = re.compile(r"[1-9][0-9]{0,8}\Z")
_ID = re.compile(r"sec_[0-9a-f]{1,60}\Z")
# Printable ASCII without space: everything a reference may hold (checked before anything else).
_PRINTABLE = re.compile(r"[\x21-\x7e]+\Z")


_SEGMENT = r"[a-z0-9][a-z0-9._-]{0,62}"
# The same grammar as a JSON Schema pattern (the HTTP contract states it; '..' is excluded beside it).
REFERENCE_PATTERN = (
    rf"^(secret://{_SEGMENT}(/{_SEGMENT}){{0,15}}/{_SEGMENT}|{_SEGMENT})"
    r"(@[1-9][0-9]{0,8})?(#[A-Za-z_][A-Za-z0-9_.-]{0,63})?$"
)
# A folder as references and workspaces spell it (ASCII, already in normal form).
FOLDER_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT}){{0,15}}$"


class ReferenceRefused(ValueError):
    """A reference that is not well formed; the message says why without repeating it."""


@dataclass(frozen=True, slots=True)
class SecretReference:
    """A parsed reference: exactly one of ``secret_id``, ``folder`` + ``name``, or ``name`` alone."""

    form: Literal["path", "id", "short"]
    name: str | None = None
    folder: str | None = None
    secret_id: str | None = None
    version: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        if self.form == "path":
            head = f"{SCHEME}{self.folder}/{self.name}"
        elif self.form == "id":
            head = str(self.secret_id)
        else:
            head = str(self.name)
        version = "" if self.version is None else f"@{self.version}"
        field = "" if self.field is None else f"#{self.field}"
        return head + version + field

    def folders(self, workspace: str) -> list[str]:
        """For the short form: the folders to look in, narrowest first (``workspace`` and each parent)."""
        segments = workspace.split("/")
        return ["/".join(segments[:depth]) for depth in range(len(segments), 0, -1)]


def _name(text: str) -> str:
    if not is_identifier(text) or ".." in text:
        raise ReferenceRefused(
            "a secret name is 1 to 63 of lower-case a-z, 0-9, '.', '_' or '-', starting with a letter or "
            "digit, without '..'"
        )
    return text


def check_folder(text: str) -> str:
    """A folder as references and workspaces name it: a scope path in normal form, without ``..``."""
    if not _PRINTABLE.match(text) or not is_scope_path(text) or ".." in text:
        raise ReferenceRefused(
            f"a folder is 1 to {MAX_SCOPE_DEPTH} '/'-separated segments of lower-case a-z, 0-9, '.', '_' "
            "or '-', each starting with a letter or digit, without '..'"
        )
    return text


def parse_reference(text: object) -> SecretReference:
    """The reference ``text`` spells; ``ReferenceRefused`` (never quoting it) if it is not one."""
    if not isinstance(text, str) or not text:
        raise ReferenceRefused("a reference is a non-empty string")
    if len(text) > MAX_REFERENCE_LENGTH:
        raise ReferenceRefused(f"a reference is at most {MAX_REFERENCE_LENGTH} characters")
    if not _PRINTABLE.match(text):
        raise ReferenceRefused(
            "a reference is printable ASCII without spaces, control or look-alike characters"
        )
    if ".." in text:
        raise ReferenceRefused("a reference may not contain '..'")
    head, hash_sign, field = text.partition("#")
    if hash_sign and not _FIELD.match(field):
        raise ReferenceRefused(
            "after '#' comes one field name: 1 to 64 letters, digits, '_', '.' or '-', starting with a "
            "letter or '_'"
        )
    head, at_sign, version_text = head.partition("@")
    version = None
    if at_sign:
        if not _VERSION.match(version_text) or int(version_text) > MAX_VERSION:
            raise ReferenceRefused(f"after '@' comes a version: an integer from 1 to {MAX_VERSION}")
        version = int(version_text)
    named = field if hash_sign else None
    if head.startswith(SCHEME):
        folder, slash, name = head[len(SCHEME) :].rpartition("/")
        if not slash:
            raise ReferenceRefused("a secret:// reference names a folder and a name: secret://FOLDER/NAME")
        return SecretReference(
            "path", name=_name(name), folder=check_folder(folder), version=version, field=named
        )
    if "/" in head or ":" in head:
        raise ReferenceRefused("a reference is secret://FOLDER/NAME, sec_ID or a NAME alone")
    if _ID.match(head):
        # A name that reads as an id (sec_ and hex digits) is reached by its secret:// path only.
        return SecretReference("id", secret_id=head, version=version, field=named)
    return SecretReference("short", name=_name(head), version=version, field=named)
