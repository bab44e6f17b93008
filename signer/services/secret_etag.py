"""Check-and-set for secrets: the ETag a secret answers with, and the ``If-Match`` a writer sends back.

A secret's ETag is ``"r<revision>"``; the revision moves with every change of its record or of one of
its versions (metadata, a new value, a promotion, a version disabled, enabled or destroyed, a pin).
``If-Match`` takes that ETag (``W/`` allowed) or a version number (``3`` or ``"v3"``: the current
version must still be 3). The check is made inside the writing transaction and the write itself is
conditional on the revision read there, so of concurrent writers naming the same ETag or version
exactly one wins and the others get ``409 if_match_failed``: never a lost update.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from signer.errors import Conflict, InvalidRequest
from signer.store import SecretRecord

_ETAG = re.compile(r'\A(?:W/)?"r([0-9]{1,12})"\Z')
_VERSION = re.compile(r'\A(?:"v([0-9]{1,9})"|v?([0-9]{1,9}))\Z')


def etag(secret: SecretRecord) -> str:
    return f'"r{secret.revision}"'


def failed() -> Conflict:
    return Conflict(
        "the secret changed since the revision If-Match names; read it again", code="if_match_failed"
    )


@dataclass(frozen=True, slots=True)
class IfMatch:
    """What a writer expects: the record at ``revision``, or ``version`` current (either, not both)."""

    revision: int | None = None
    version: int | None = None

    @staticmethod
    def parse(header: str | None) -> IfMatch | None:
        """None without a header; refused (400 ``invalid_if_match``, never echoed) when unreadable."""
        if header is None:
            return None
        text = header.strip()
        found = _ETAG.match(text)
        if found:
            return IfMatch(revision=int(found.group(1)))
        found = _VERSION.match(text)
        if found:
            number = int(found.group(1) or found.group(2))
            if number >= 1:
                return IfMatch(version=number)
        raise InvalidRequest(
            'If-Match is the secret\'s ETag ("r<revision>") or a version number',
            code="invalid_if_match",
            field="If-Match",
        )

    def check(self, secret: SecretRecord) -> int:
        """The revision to write from (a conditional write keeps it atomic), or ``if_match_failed``."""
        if self.revision is not None and secret.revision != self.revision:
            raise failed()
        if self.version is not None and secret.current_version != self.version:
            raise failed()
        return secret.revision
