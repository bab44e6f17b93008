"""Secrets as a resource kind: the kind, its read operation as a payload kind, sealing, and value rules.

Owns: the ``secret`` ``ResourceKind`` (not-found answer ``secret_not_found``, also the answer to a caller
holding no grant on the secret, so existence never leaks; a disabled secret is unusable, ``409
secret_disabled``, told only to a caller a grant reaches); the ``read_value`` ``PayloadKind`` that
carries a fetch through the decision pipeline (so grants and every policy rule judge reads as they judge
signing, and every outcome is audited by the pipeline with field names and version, never a value); the
``Sealer`` that seals a version's fields under a fresh data key wrapped by the organisation's KEK in the
token, and opens them again; and the rules a value, a field name and a generated value follow.

A read that policy sends to approvers opens a pending request naming only the secret, the version that
was current then and its field names (``Prepared.pin``); approvers see the secret's metadata, never a
value. Once approved, nothing runs: the requester releases it once, itself (``released_by_requester``),
and the value is read at that moment from that version, never stored with the request.

It must never: put a value or a data key in a log line, an exception message, an audit event, a pending
request or a response other than the fetch's own; keep a value beyond the call, or an unwrapped key
anywhere but the bounded, self-wiping ``DataKeys`` cache.
"""

from __future__ import annotations

import base64
import re
import secrets as random
import string
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from signer import metrics
from signer.crypto.envelope import FieldBinding, new_data_key, open_field, seal_field
from signer.errors import Conflict, InvalidRequest, NotFound, SignerError
from signer.hsm import KeyVault, KeyWrapper
from signer.identity import Role
from signer.services.context import iso
from signer.services.data_keys import DataKeys
from signer.services.fetch_notes import FetchNotes
from signer.services.payloads import PayloadKind, Prepared, Preparer
from signer.services.payloads import register as register_payload
from signer.services.resources import ResourceKind, ResourceRef, register
from signer.services.sealed_versions import SealedVersions
from signer.services.secret_backends import SecretBackends, Selector
from signer.services.secret_backends.sealed import SealedBackend, refuse_unreadable
from signer.store import Reader, SecretRecord, SecretVersionRecord, Store, Writer

__all__ = [
    "FETCH",
    "SECRETS",
    "Sealer",
    "check_field_name",
    "check_values",
    "disabled",
    "generate_value",
    "organisation_of",
    "secret_ref",
]

MAX_FIELDS = 64
# Free names like STRIPE_SECRET or username: a letter or '_' first, then letters, digits, '_', '.', '-'.
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
BACKEND_VERSION = re.compile(r"[A-Za-z0-9_.-]{1,256}\Z")
BACKEND_VERSION_PATTERN = r"^[A-Za-z0-9_.-]{1,256}$"


def not_found() -> SignerError:
    return NotFound("no such secret", code="secret_not_found")


def secret_ref(secret: SecretRecord) -> ResourceRef:
    # A secret lives at its folder: grants on a scope cover it as they cover keys under that scope.
    return ResourceRef("secret", secret.id, secret.folder, secret.state)


def disabled() -> SignerError:
    return Conflict("the secret is disabled; an operator can enable it again", code="secret_disabled")


def _unusable(ref: ResourceRef) -> SignerError | None:
    # Asked only once a grant reaches the secret (a caller no grant reaches was told "no such secret").
    return None if ref.state == "active" else disabled()


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
        # A disabled secret answers no read of any version, through any backend, to those granted it.
        unusable=_unusable,
        # What approvers read: metadata, never a value.
        approval_view=lambda secret: {
            "secret_id": secret.id,
            "name": secret.name,
            "folder": secret.folder,
            "owner": f"{secret.owner_type}:{secret.owner}",
            "category": secret.category,
        },
        # The version and field names are in the request's body (pinned when it was opened), so a
        # rotation since does not change what was approved.
        digest_fields=lambda secret: {"secret_id": secret.id},
        summary=lambda secret: {"name": secret.name, "folder": secret.folder},
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
                FieldBinding(version.secret_id, version.version, name, version.aad_kek_id),
                version.sealed_fields[name],
            )
            for name in names
        }


# -- the read, through the pipeline ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opener:
    """What a fetch needs to act once allowed: the backends (the sealed one reads the store and opens
    with the sealer; the others fetch by reference)."""

    backends: SecretBackends
    clock: Callable[[], datetime]
    notes: FetchNotes


@dataclass(frozen=True, slots=True)
class CachedOpener:
    """Opens a sealed version's fields, keeping the unwrapped data key in the bounded ``DataKeys`` cache
    (wiped when the facts epoch moves: grants, tokens, policies, rotations and deletions move it)."""

    sealer: Sealer
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

    def forget(self, secret_id: str) -> None:
        self.data_keys.forget(secret_id)


def sealed_backend(store: Store, sealer: Sealer, epoch: Callable[[], int]) -> SealedBackend:
    """The default backend, opening through the data-key cache and keeping authentic version rows."""
    return SealedBackend(store, CachedOpener(sealer, DataKeys(), epoch), SealedVersions(), epoch)


def _parse_fetch(fields: Mapping[str, Any]) -> Preparer:
    """A fetch from the request's fields (``version``, ``field``, ``workload``, ``source``), or from an
    approved request's stored body (``version`` and ``fields``: exactly what was approved)."""
    opener = fields.get("opener")
    if not isinstance(opener, Opener):
        raise TypeError("a secret fetch is prepared by the secrets service")
    version = fields.get("version")
    backend_version = fields.get("backend_version")
    field = fields.get("field")
    approved = fields.get("fields")
    workload = fields.get("workload")
    source = fields.get("source")
    by = fields.get("by")
    if not isinstance(by, str):
        raise TypeError("a secret fetch names who fetches")
    if version is not None and (type(version) is not int or version < 1):
        raise InvalidRequest("version must be a positive integer", code="invalid_version", field="version")
    if backend_version is not None and (
        not isinstance(backend_version, str) or not BACKEND_VERSION.match(backend_version)
    ):
        raise InvalidRequest(
            "backend_version is 1 to 256 of A-Za-z0-9_.-", code="invalid_version", field="backend_version"
        )
    if field is not None:
        check_field_name(field)
    if approved is not None:
        if not isinstance(approved, list) or not approved or version is None:
            raise InvalidRequest("a stored read names its version and fields", code="invalid_request")
        for name in approved:
            check_field_name(name)

    def prepare(secret: SecretRecord) -> Prepared:
        opened_version: list[int] = []
        # A consumer pinned to a version (``SecretRecord.pins``, by workload) reads it when it names
        # none; an approved read names its version already.
        pinned: list[int] = []
        answer: list[dict[str, Any]] = []

        async def acts(_: KeyVault, current: Any) -> dict[str, Any]:
            backend = opener.backends.for_secret(current)
            # An approved read opens exactly the fields it was approved for; otherwise one or all.
            wanted = approved if approved is not None else ([field] if field is not None else None)
            chosen = version
            if chosen is None and workload is not None and current.backend == "sealed":
                pin_to = current.pins.get(workload)
                if pin_to is not None:
                    chosen = pin_to
                    pinned.append(pin_to)
            read = await backend.read(current, Selector(chosen, backend_version), wanted)
            if read.version is not None:
                opened_version.append(read.version)
            response: dict[str, Any] = {
                "secret_id": current.id,
                "name": current.name,
                "folder": current.folder,
                "version": read.version,
                "field_names": sorted(read.values),
                "values": read.values,
            }
            if pinned:
                response["pinned"] = True
            if current.backend != "sealed":
                response["backend"] = current.backend
                response["backend_version"] = read.backend_version
            answer.append(response)
            return response

        async def settles(writer: Writer, committed: SecretRecord | None) -> None:
            # Under the write lock, with the record as the committed facts show it (read again when the
            # facts epoch moved, which every rotation, deletion and version state change moves): the
            # secret still exists; for "current" of a sealed secret, the version opened is still its
            # current one (a current version is always enabled); for a named or pinned version, it is
            # still readable now (a row cached before a disable or destroy never leaves) and the pin
            # still holds. Otherwise the value never leaves. "Last fetched" commits with the audit
            # event, at most once a second per secret and principal in this process (``FetchNotes``).
            sealed_current = version is None and not pinned and secret.backend == "sealed"
            number = opened_version[-1] if opened_version else None
            if committed is None or (sealed_current and committed.current_version != number):
                raise _changed()
            if pinned and committed.pins.get(workload or "") != pinned[-1]:
                raise _changed()
            if secret.backend == "sealed" and not sealed_current and number is not None:
                row = await writer.secrets.version(secret.id, number)
                state = None if row is None else row.state
                if state not in ("enabled", "staged"):
                    opener.backends.sealed.forget(secret.id)
                refuse_unreadable(state, True)
                assert row is not None
                if answer and row.disable_at is not None:
                    # Consumers of a previous version see when its overlap ends.
                    answer[-1]["readable_until"] = iso(row.disable_at)
            if opener.notes.due(secret.id, by):
                current = number if sealed_current else None
                if not await writer.secrets.record_fetch(
                    secret.id, opener.clock(), by, current_version=current
                ):
                    raise _changed()
                opener.notes.noted(secret.id, by)

        async def pin(writer: Writer, current: Any) -> Prepared:
            # Waiting for approvers: fix the version current now and its field names; nothing else.
            if current.backend != "sealed":
                # The signer cannot pin a version another system holds without reading it there.
                raise Conflict(
                    "reads of a secret held by reference cannot wait for approval",
                    code="approval_not_supported_for_reference_reads",
                )
            fresh = await writer.secrets.get(current.id)
            if fresh is None:
                raise not_found()
            number = version
            if number is None and workload is not None:
                number = fresh.pins.get(workload)
            if number is None:
                number = fresh.current_version
            row = await writer.secrets.version(current.id, number)
            refuse_unreadable(None if row is None else row.state, version is not None)
            names = _field_names(row, field, approved)
            return _approved_read(number, names, workload, source, acts, settles)

        if approved is not None:
            assert version is not None
            return _approved_read(version, approved, workload, source, acts, settles)
        summary = {
            "version": "current" if version is None else version,
            "fields": [field] if field is not None else "all",
            "workload": workload,
            "source": source,
        }
        if secret.backend != "sealed":
            # Held by reference: the event names where it was read (the reference is metadata).
            summary.update(
                backend=secret.backend, reference=secret.reference, backend_version=backend_version
            )

        return Prepared(data=b"", summary=summary, acts=acts, pin=pin, settles=settles)

    # Preparers are typed for keys (the first kind); the pipeline hands each kind its own records.
    return cast(Preparer, prepare)


def _changed() -> SignerError:
    return Conflict("the secret changed while it was fetched; fetch again", code="secret_changed")


def _field_names(
    stored: SecretVersionRecord | None, field: str | None, approved: list[str] | None
) -> list[str]:
    """The fields a read opens: one, the approved ones, or all; refused if the version or one is gone."""
    if stored is None:
        raise NotFound("no such version of the secret", code="secret_version_not_found")
    wanted = approved if approved is not None else ([field] if field is not None else None)
    if wanted is None:
        return sorted(stored.sealed_fields)
    if any(name not in stored.sealed_fields for name in wanted):
        raise NotFound("no such field in the secret", code="secret_field_not_found")
    return sorted(wanted)


def _approved_read(
    version: int,
    names: list[str],
    workload: str | None,
    source: str | None,
    acts: Callable[[KeyVault, Any], Awaitable[dict[str, Any]]],
    settles: Callable[[Writer, SecretRecord | None], Awaitable[None]],
) -> Prepared:
    """A read bound to one version and its field names: what approvers approve (the body, digested)
    and read (the view: version, fields, workload), and what the requester's release opens."""
    return Prepared(
        data=b"",
        summary={"version": version, "fields": names, "workload": workload, "source": source},
        acts=acts,
        settles=settles,
        body={"version": version, "fields": names},
        view={"scheme": "secret_read", "version": version, "fields": names, "workload": workload},
    )


FETCH = register_payload(
    PayloadKind(
        operation="read_value",
        resource_type="secret",
        event_kind="secret.fetch",
        parse=_parse_fetch,
        parse_stored=_parse_fetch,
        fits=lambda secret: None,
        actors=frozenset({Role.SERVICE, Role.ADMIN}),
        actors_refusal="only service principals and admins read secret values",
        # Who read which version's which fields: never a value.
        audited_result=("version", "field_names", "backend_version"),
        released_by_requester=True,
        count=lambda secret, operation, outcome: metrics.secret_fetch(outcome),
    )
)
