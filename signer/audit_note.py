"""Audit checkpoints as C2SP signed notes (``tlog-checkpoint`` body, ``signed-note`` signature lines).

Pure text and hashing (standard library only), shared by the service and an auditor's offline verifier;
the signature itself is made in the token and checked by ``signer.crypto``. A checkpoint note is::

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n
    \\n
    \\u2014 <key name> <base64(key id (4 bytes) || Ed25519 signature)>\\n

The signature is over the body (the three lines with their newlines). A note may carry several signature
lines: the checkpoint that covers an audit-key rotation is signed by the retiring key and the new one
(``signer.audit_keys`` says how a verifier follows that). The key id is the first four bytes
of ``SHA-256(name || 0x0A || 0x01 || public key)`` and the verifier key, what the API and CLI publish, is
``<name>+<hex key id>+<base64(0x01 || public key)>``: the formats Go's ``golang.org/x/mod/sumdb/note``
reads. The key name is the log's origin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ALG_ED25519",
    "Checkpoint",
    "NoteError",
    "VerifierKey",
    "checkpoint_body",
    "key_id",
    "note_signers",
    "open_checkpoint",
    "parse_checkpoint_body",
    "parse_note",
    "signed_note",
]

ALG_ED25519 = 0x01
_DASH = "\u2014 "
# A key name (and our origin): printable, no space and no '+', as signed-note requires.
_NAME = re.compile(r"[!-*,-~]{1,255}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


class NoteError(ValueError):
    """A note, checkpoint or verifier key that is malformed or does not verify; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("note_malformed", "not standard base64") from None


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """The signed-note key hash: first 4 bytes of SHA-256(name || '\\n' || alg || public key)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class VerifierKey:
    name: str
    public_key: bytes
    alg: int = ALG_ED25519

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.alg, self.public_key)

    def text(self) -> str:
        """``<name>+<hex key id>+<base64(alg || public key)>``."""
        return f"{self.name}+{self.id.hex()}+{base64.b64encode(bytes([self.alg]) + self.public_key).decode()}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not _NAME.fullmatch(parts[0]) or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise NoteError("verifier_key_malformed", "a verifier key is <name>+<8 hex>+<base64 key>")
        raw = _b64decode(parts[2])
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("verifier_key_malformed", "only Ed25519 verifier keys (33 bytes) are known")
        key = cls(parts[0], raw[1:], raw[0])
        if key.id.hex() != parts[1]:
            raise NoteError("verifier_key_malformed", "the verifier key's hash does not match its key")
        return key


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """The ``tlog-checkpoint`` body: origin, tree size and base64 root, each on its own line."""
    if not _NAME.fullmatch(origin):
        raise ValueError("an origin is printable ASCII with no space or '+'")
    if type(size) is not int or size < 0 or len(root) != 32:
        raise ValueError("a checkpoint has a non-negative size and a 32-byte root")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def signed_note(body: str, name: str, kid: bytes, signature: bytes, *more: tuple[str, bytes, bytes]) -> str:
    """The note: the body, a blank line, one signature line per ``(name, key id, signature)``."""
    lines = "".join(
        f"{_DASH}{n} {base64.b64encode(k + s).decode()}\n" for n, k, s in ((name, kid, signature), *more)
    )
    return f"{body}\n{lines}"


def note_signers(note: str) -> list[tuple[str, bytes]]:
    """The ``(key name, key id)`` of each signature line of ``note``, in order (signatures unchecked)."""
    return [(name, kid) for name, kid, _ in parse_note(note)[1]]


def parse_note(text: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """(body, [(key name, key id, signature)]) of a signed note; raises ``NoteError`` when malformed."""
    if not isinstance(text, str) or not text.endswith("\n") or "\r" in text:
        raise NoteError("note_malformed", "a note is text ending in a newline, without CR")
    cut = text.rfind("\n\n")
    if cut < 0:
        raise NoteError("note_malformed", "a note has a blank line before its signatures")
    body, lines = text[: cut + 1], text[cut + 2 :].split("\n")[:-1]
    if not lines:
        raise NoteError("note_malformed", "a note has at least one signature line")
    signatures = []
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError("note_malformed", "a signature line starts with an em dash and a space")
        name, _, blob = line[len(_DASH) :].partition(" ")
        if not _NAME.fullmatch(name):
            raise NoteError("note_malformed", "a signature line's key name is not valid")
        raw = _b64decode(blob)
        if len(raw) < 5:
            raise NoteError("note_malformed", "a signature is a key id and at least one byte")
        signatures.append((name, raw[:4], raw[4:]))
    return body, signatures


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str

    @property
    def root_b64(self) -> str:
        return base64.b64encode(self.root).decode()


def parse_checkpoint_body(body: str) -> tuple[str, int, bytes]:
    """(origin, size, root) of a checkpoint body (extension lines after the root are allowed)."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("checkpoint_malformed", "a checkpoint body has origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not _NAME.fullmatch(origin) or not _DECIMAL.fullmatch(size_text):
        raise NoteError("checkpoint_malformed", "a checkpoint's origin or size is not valid")
    root = _b64decode(root_text)
    if len(root) != 32:
        raise NoteError("checkpoint_malformed", "a checkpoint's root is 32 bytes")
    return origin, int(size_text), root


Check = Callable[[bytes, bytes, bytes], object]  # (public key, message, signature): raises if invalid


def open_checkpoint(note: str, key: VerifierKey, check: Check) -> Checkpoint:
    """The checkpoint in ``note`` once a signature by ``key`` over its body verifies (``check`` raises on a
    bad signature); ``NoteError`` with ``checkpoint_unsigned`` / ``signature_invalid`` /
    ``origin_mismatch`` otherwise."""
    body, signatures = parse_note(note)
    origin, size, root = parse_checkpoint_body(body)
    mine = [sig for name, kid, sig in signatures if name == key.name and kid == key.id]
    if not mine:
        raise NoteError("checkpoint_unsigned", "no signature by the audit key on this checkpoint")
    for sig in mine:
        try:
            check(key.public_key, body.encode(), sig)
        except Exception:  # noqa: BLE001 - any refusal of the check is a bad signature
            raise NoteError("signature_invalid", "the checkpoint's signature does not verify") from None
    if origin != key.name:
        raise NoteError("origin_mismatch", "the checkpoint's origin is not the audit key's name")
    return Checkpoint(origin, size, root, note)
