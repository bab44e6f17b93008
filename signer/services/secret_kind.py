"""Secrets as a resource kind: the kind, its read operation as a payload kind, sealing, and value rules.

Owns: the ``secret`` ``ResourceKind`` (not-found answer ``secret_not_found``, also the answer to a caller
holding no grant on the secret, so existence never leaks); the ``read_value`` ``PayloadKind`` that
carries a fetch through the decision pipeline (so grants and every policy rule judge reads as they judge
signing, and every outcome is audited by the pipeline with field names and version, never a value); the
``Sealer`` that seals a version's fields under a fresh data key wrapped by the organisation's KEK in the
token, and opens them again; and the rules a value, a field name and a generated value follow.

It must never: put a value or a data key in a log line, an exception message, an audit event or a
response other than the fetch's own; keep a value beyond the call, or an unwrapped key anywhere but the
bounded, self-wiping ``DataKeys`` cache; let a read open a
pending approval (the pending request would store the value as its result: ``approvable=False``).
"""

from __future__ import annotations

import base64
import re
import secrets as random
import string
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from signer.crypto.envelope import FieldBinding, new_data_key, open_field, seal_field
from signer.errors import Conflict, InvalidRequest, NotFound, SignerError, Unprocessable
from signer.hsm import KeyVault, KeyWrapper
from signer.identity import Role
from signer.services.data_keys import DataKeys
from signer.services.fetch_notes import FetchNotes
from signer.services.payloads import PayloadKind, Prepared, Preparer
from signer.services.payloads import register as register_payload
from signer.services.resources import ResourceKind, ResourceRef, register
from signer.services.sealed_versions import SealedVersions
from signer.store import Reader, SecretRecord, SecretVersionRecord, Store, Writer

__all__ = [
    "FETCH",
    "SECRETS",
    "Sealer",
    "check_field_name",
    "check_values",
    "generate_value",
    "organisation_of",
    "secret_ref",
]

MAX_FIELDS = 64
# Free names like STRIPE_SECRET or username: a letter or '_' first, then letters, digits, '_', '.', '-'.
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"


def not_found() -> SignerError:
    return NotFound("no such secret", code="secret_not_found")


def secret_ref(secret: SecretRecord) -> ResourceRef:
    # A secret lives at its folder: grants on a scope cover it as they cover keys under that scope.
    return ResourceRef("secret", secret.id, secret.folder, "active")


async def _load(reader: Reader | Writer, secret_id: str) -> SecretRecord | None:
    return await reader.secrets.get(secret_id)


SECRETS = register(
    ResourceKind(
        type="secret",
        id_field="secret_id",
        operations=frozenset({"list", "read_metadata", "read_value", "create", "update", "delete"}),
        load=_load,
        ref=secret_ref,
        not_found=not_found,
        unusable=lambda ref: None,
        # What approvers would read: metadata, never a value (reads are not approvable yet).
        approval_view=lambda secret: {"secret_id": secret.id, "name": secret.name, "folder": secret.folder},
        digest_fields=lambda secret: {"secret_id": secret.id, "version": secret.current_version},
    )
)


def organisation_of(folder: str) -> str:
    """The scope whose KEK seals a folder's secrets: its first segment."""
    return folder.split("/", 1)[0]


# -- values ----------------------------------------------------------------------------------------


def check_field_name(name: object) -> str:
    if not isinstance(name, str) or not FIELD_NAME.match(name):
        raise InvalidRequest(
            "field names are 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or '_'",
            code="invalid_field_name",
            field="fields",
        )
    return name


def check_values(fields: Mapping[str, Any], max_value_bytes: int) -> dict[str, bytes]:
    """The fields as UTF-8 bytes; refused (without echoing anything) if empty, oversized or misnamed."""
    if not isinstance(fields, Mapping) or not fields:
        raise InvalidRequest(
            "a secret needs at least one field", code="invalid_secret_fields", field="fields"
        )
    if len(fields) > MAX_FIELDS:
        raise InvalidRequest(
            f"a secret has at most {MAX_FIELDS} fields", code="too_many_fields", field="fields"
        )
    values: dict[str, bytes] = {}
    for name, value in fields.items():
        check_field_name(name)
        if not isinstance(value, str):
            raise InvalidRequest("field values are strings", code="invalid_secret_value", field="fields")
        try:
            raw = value.encode("utf-8", errors="strict")
        except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
            raise InvalidRequest(
                "field values are Unicode text", code="invalid_secret_value", field="fields"
            ) from None
        if not raw:
            raise InvalidRequest("a field value may not be empty", code="empty_secret_value", field="fields")
        if len(raw) > max_value_bytes:
            raise InvalidRequest(
                f"a field value may be at most {max_value_bytes} bytes",
                code="secret_value_too_large",
                field="fields",
            )
        values[name] = raw
    return values


_CLASSES = {
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "digits": string.digits,
    "symbols": "!#%+,-./:=@^_~",
}
GENERATION_KINDS = ("chars", "hex", "base64", "uuid")


def generate_value(rule: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """A value made by the service from ``rule``, and the rule as stored (no value in it).

    ``chars``: ``length`` characters (8-4096) from ``classes`` (lower, upper, digits, symbols), at
    least one of each; ``hex`` / ``base64``: ``bytes`` random bytes (8-4096) encoded; ``uuid``: a UUID4.
    """
    kind = rule.get("kind")
    if kind == "uuid":
        return str(uuid.uuid4()).encode(), {"kind": "uuid"}
    if kind in ("hex", "base64"):
        size = rule.get("bytes", 32)
        if type(size) is not int or not 8 <= size <= 4096:
            raise InvalidRequest("bytes must be 8 to 4096", code="invalid_generation_rule", field="generate")
        raw = random.token_bytes(size)
        encoded = raw.hex() if kind == "hex" else base64.b64encode(raw).decode("ascii")
        return encoded.encode("ascii"), {"kind": kind, "bytes": size}
    if kind == "chars":
        length = rule.get("length", 32)
        classes = rule.get("classes", ["lower", "upper", "digits"])
        if type(length) is not int or not 8 <= length <= 4096:
            raise InvalidRequest("length must be 8 to 4096", code="invalid_generation_rule", field="generate")
        if (
            not isinstance(classes, list)
            or not classes
            or any(c not in _CLASSES for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise InvalidRequest(
                "classes must name distinct lower, upper, digits or symbols",
                code="invalid_generation_rule",
                field="generate",
            )
        alphabet = "".join(_CLASSES[c] for c in classes)
        while True:
            value = "".join(random.choice(alphabet) for _ in range(length))
            if all(any(ch in _CLASSES[c] for ch in value) for c in classes):
                return value.encode("ascii"), {"kind": "chars", "length": length, "classes": list(classes)}
    raise InvalidRequest(
        "kind must be one of: " + ", ".join(GENERATION_KINDS),
        code="invalid_generation_rule",
        field="generate",
    )


# -- sealing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sealer:
    """Seals a version's fields under a fresh data key wrapped by the organisation's KEK, and opens them."""

    token: KeyWrapper

    async def seal(
        self, secret_id: str, version: int, folder: str, values: Mapping[str, bytes]
    ) -> tuple[str, bytes, dict[str, bytes]]:
        """(kek id, wrapped data key, sealed fields) for one new version."""
        kek_id = await self.token.kek_for_scope(organisation_of(folder))
        data_key = new_data_key()
        sealed = {
            name: seal_field(data_key, FieldBinding(secret_id, version, name, kek_id), value)
            for name, value in values.items()
        }
        wrapped = await self.token.wrap_data_key(kek_id, data_key)
        return kek_id, wrapped, sealed

    async def open(self, version: SecretVersionRecord, names: list[str]) -> dict[str, bytes]:
        return self.open_with(await self.data_key(version), version, names)

    async def data_key(self, version: SecretVersionRecord) -> bytes:
        """The version's data key, unwrapped by the token."""
        return await self.token.unwrap_data_key(version.kek_id, version.wrapped_key)

    @staticmethod
    def open_with(data_key: bytes, version: SecretVersionRecord, names: list[str]) -> dict[str, bytes]:
        return {
            name: open_field(
                data_key,
                FieldBinding(version.secret_id, version.version, name, version.kek_id),
                version.sealed_fields[name],
            )
            for name in names
        }


# -- the read, through the pipeline ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opener:
    """What a fetch needs to act once allowed: the store to read the version from, and the sealer."""

    store: Store
    sealer: Sealer
    clock: Callable[[], datetime]
    versions: SealedVersions
    notes: FetchNotes
    data_keys: DataKeys
    # The facts epoch this process knows (``FactsCache.epoch``): cached data keys live no longer.
    epoch: Callable[[], int]

    async def open(self, stored: SecretVersionRecord, names: list[str]) -> dict[str, bytes]:
        epoch = self.epoch()
        v = stored
        data_key = self.data_keys.get(v.secret_id, v.version, v.kek_id, v.wrapped_key, epoch)
        if data_key is None:
            data_key = await self.sealer.data_key(v)
            opened = self.sealer.open_with(data_key, v, names)
            # Kept only once it has opened the version's fields (so it is the right key).
            self.data_keys.put(v.secret_id, v.version, v.kek_id, v.wrapped_key, data_key, epoch)
            return opened
        return self.sealer.open_with(data_key, v, names)


def _parse_fetch(fields: Mapping[str, Any]) -> Preparer:
    opener = fields.get("opener")
    if not isinstance(opener, Opener):
        raise TypeError("a secret fetch is prepared by the secrets service")
    version = fields.get("version")
    field = fields.get("field")
    workload = fields.get("workload")
    source = fields.get("source")
    by = fields.get("by")
    if not isinstance(by, str):
        raise TypeError("a secret fetch names who fetches")
    if version is not None and (type(version) is not int or version < 1):
        raise InvalidRequest("version must be a positive integer", code="invalid_version", field="version")
    if field is not None:
        check_field_name(field)

    def prepare(secret: SecretRecord) -> Prepared:
        opened_version: list[int] = []

        async def acts(_: KeyVault, current: Any) -> dict[str, Any]:
            # The version as the (possibly cached) record names it; the commit checks under the write
            # lock that it is still current before the value leaves (``settles``).
            number = current.current_version if version is None else version
            stored = opener.versions.get(current.id, number)
            cache = False
            if stored is None:
                async with opener.store.read() as reader:
                    # On a miss, the current version as committed now (another process may have
                    # rotated it since the record was cached).
                    exists, stored = await reader.secrets.version_to_open(current.id, version)
                if not exists:
                    raise not_found()
                if stored is None:
                    raise NotFound("no such version of the secret", code="secret_version_not_found")
                number = stored.version
                cache = True
            opened_version.append(number)
            if field is not None and field not in stored.sealed_fields:
                raise NotFound("no such field in the secret", code="secret_field_not_found")
            names = sorted(stored.sealed_fields) if field is None else [field]
            opened = await opener.open(stored, names)
            if cache and len(names) == len(stored.sealed_fields):
                # Only a row whose every field opened (so is authentic) is kept.
                opener.versions.put(stored)
            try:
                values = {name: raw.decode("utf-8") for name, raw in opened.items()}
            except UnicodeDecodeError:
                raise Unprocessable("a stored value is not text", code="secret_not_text") from None
            return {
                "secret_id": current.id,
                "name": current.name,
                "folder": current.folder,
                "version": number,
                "field_names": names,
                "values": values,
            }

        summary = {
            "version": "current" if version is None else version,
            "fields": [field] if field is not None else "all",
            "workload": workload,
            "source": source,
        }

        async def settles(writer: Writer, committed: SecretRecord | None) -> None:
            # Under the write lock, with the record as the committed facts show it (read again when the
            # facts epoch moved, which every rotation and deletion moves): the secret still exists and,
            # for "current", the version opened is still its current one. Otherwise the value never
            # leaves. "Last fetched" commits with the audit event, at most once a second per secret
            # and principal in this process (``FetchNotes``).
            number = opened_version[-1]
            if committed is None or (version is None and committed.current_version != number):
                raise _changed()
            if opener.notes.due(secret.id, by):
                current = number if version is None else None
                if not await writer.secrets.record_fetch(
                    secret.id, opener.clock(), by, current_version=current
                ):
                    raise _changed()
                opener.notes.noted(secret.id, by)

        return Prepared(data=b"", summary=summary, acts=acts, settles=settles)

    # Preparers are typed for keys (the first kind); the pipeline hands each kind its own records.
    return cast(Preparer, prepare)


def _changed() -> SignerError:
    return Conflict("the secret changed while it was fetched; fetch again", code="secret_changed")


def _not_stored(_: Mapping[str, Any]) -> Preparer:
    # Reads never open a pending request (approvable=False), so no stored body is ever run again.
    raise Unprocessable("reads are not approvable", code="approval_not_supported_for_reads")


FETCH = register_payload(
    PayloadKind(
        operation="read_value",
        resource_type="secret",
        event_kind="secret.fetch",
        parse=_parse_fetch,
        parse_stored=_not_stored,
        fits=lambda secret: None,
        actors=frozenset({Role.SERVICE, Role.ADMIN}),
        actors_refusal="only service principals and admins read secret values",
        # Who read which version's which fields: never a value.
        audited_result=("version", "field_names"),
        approvable=False,
    )
)
