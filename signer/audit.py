"""The audit log's format: canonical JSON events, the SHA-256 hash chain over them, export and verification.

Pure functions and values only (standard library and ``policy``'s encoder, no I/O, no clock): the store
uses them to chain events inside its write transaction, and an auditor uses the very same code offline
to verify an export.
The encoder itself is ``policy.canonical_json``, the project's one canonical JSON (ASCII with escapes);
where orjson is installed (the service depends on it) it writes the bytes of the common case, an event
whose text is plain ASCII, and anything else takes the standard library's path; both give the same
bytes for every value (a property test holds them to it), so an offline verifier needs only Python. An
event is a JSON object of strings, integers, booleans, nulls, lists and objects; floats are refused
because two encoders may print the same float differently, and a hash over text must have exactly one
text per value. The caller guarantees that no secret is in an event (HMAC sensitive fields first).

A record's ``hash`` is ``sha256(bytes.fromhex(prev_hash) || canonical_event)``; the first record chains
on ``GENESIS_HASH``. The chain alone proves order and integrity of what is present; proving that nothing
was cut from the tail needs an anchor outside the log (a signed checkpoint): pass it as
``expected_head`` to the verifiers.

Events are built typed: ``Writer.append_audit`` takes only an ``AuditEvent``, made by
``AuditEvent.of(kind, at=, outcome=, actor=, request_id=, resource=, error=, **fields)`` or, in a
service holding a ``RequestContext``, by ``ctx.audit_event(kind, at, outcome=, resource=, error=,
**fields)`` (actor and request id from the context). The JSON keeps the keys events always had (kind,
at, request_id, actor, outcome, then the family's own fields); ``resource`` ({type, id}) and ``error``
({code, status}) are added only when given. Converting an old call site::

    writer.append_audit({"kind": K, "outcome": "allowed", "request_id": ctx.request_id,
                         "at": iso(now), "actor": ctx.actor(), **F})
    ->  writer.append_audit(ctx.audit_event(K, now, **F))              # outcome defaults to allowed
    {..., "outcome": _outcome(exc), "error": {"code": exc.code, "status": exc.status}}
    ->  ctx.audit_event(K, now, outcome=Outcome(_outcome(exc)), error=ErrorRef(exc.code, exc.status), **F)

A path that learns its outcome late (the sign path: one base event, then allowed, pending_approval,
duplicate or a refusal) starts from a draft: ``draft = ctx.audit_draft(K, now, resource=EventTarget("key",
key_id), key_id=key_id)``, then ``writer.append_audit(draft.event(Outcome.ALLOWED, decision=...))``.
``at`` is a datetime and is always written by ``format_at``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from policy import canonical_json as _policy_canonical_json
from policy import check_canonical, parse_canonical

try:
    import orjson
except ImportError:  # an auditor's machine: the standard library writes every byte
    orjson = None  # type: ignore[assignment]

__all__ = [
    "GENESIS_HASH",
    "AuditDraft",
    "AuditEvent",
    "AuditRecord",
    "ChainVerifier",
    "ErrorRef",
    "EventTarget",
    "Outcome",
    "VerifyResult",
    "canonical_json",
    "chain_hash",
    "export_jsonl",
    "format_at",
    "make_event",
    "parse_at",
    "verify_chain",
    "verify_jsonl",
]

GENESIS_HASH = "0" * 64

# Fields every event carries (``make_event`` takes them as parameters, so nothing can shadow them).
EVENT_FIELDS = ("kind", "at", "request_id", "actor", "outcome")
EXPORT_FIELDS = ("seq", "at", "request_id", "kind", "event", "prev_hash", "hash")

_HEX64 = re.compile(r"[0-9a-f]{64}")


# -- canonical JSON ---------------------------------------------------------------------------------
#
# The encoder's home is ``policy.canonical`` (pure, standard library, importable by everyone): this
# module only adds orjson's faster spelling of the same bytes for the common all-ASCII event.


def canonical_json(obj: Any) -> bytes:
    """``policy.canonical_json``: the one byte string for ``obj`` (sorted keys, no whitespace, integers
    only, ASCII with ``\\uXXXX`` escapes), written by orjson where that gives the very same bytes.

    Raises ``ValueError`` for floats, NaN, non-string keys, unpaired surrogates and any type JSON does
    not have. ASCII output is deliberate: control characters, CR, LF, ANSI escapes, U+2028 and bidi
    overrides all travel as escapes, so they round-trip losslessly yet can never split, recolour or
    visually reorder an exported line. Keys sort by code point.
    """
    if orjson is not None:
        check_canonical(obj)
        try:
            fast = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            pass  # integers beyond 64 bits, Mappings that are not dicts: the standard path below
        else:
            # The standard encoder escapes every non-ASCII character and DEL; orjson writes them raw.
            # Without either, the two texts are the same bytes.
            if fast.isascii() and b"\x7f" not in fast:
                return fast
    return _canonical_text(obj)


# The reference encoding (standard library alone); a property test holds the fast path to it.
_canonical_text = _policy_canonical_json


def parse_event(raw: bytes) -> Any:
    """``policy.parse_canonical`` (the value, only if ``raw`` is exactly its canonical encoding), read
    by orjson where that gives the same answer: anything orjson reads differently, or not at all, goes
    to the standard library's parser, which decides. About twice as fast on an export's events."""
    if orjson is not None:
        try:
            value = orjson.loads(raw)
            if canonical_json(value) == raw:
                return value
        except (orjson.JSONDecodeError, ValueError, TypeError):
            pass
    return parse_canonical(raw)


# -- the chain --------------------------------------------------------------------------------------


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """``sha256(bytes.fromhex(prev_hash) || canonical).hexdigest()``."""
    if not _HEX64.fullmatch(prev_hash):
        raise ValueError("prev_hash must be 64 lower-case hex digits")
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


# len(format_at(moment)) for a year from 1000 to 9999: "YYYY-MM-DDTHH:MM:SS.ffffffZ".
_AT_TEXT_LENGTH = 27


def format_at(moment: datetime) -> str:
    """An aware datetime as the audit log writes it: UTC, microseconds, ``Z``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    u = moment.astimezone(UTC)
    if u.year < 1000:
        # strftime's %Y does not pad years before 1000 on every platform: keep its text for them.
        return u.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as that strftime, in half the time (once per audit event, on the request path).
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 - %-formatting is the fast one here
        u.year,
        u.month,
        u.day,
        u.hour,
        u.minute,
        u.second,
        u.microsecond,
    )


def parse_at(text: str) -> datetime:
    """Parse an ISO 8601 timestamp with a zero UTC offset (``Z`` or ``+00:00``) into an aware datetime."""
    if not isinstance(text, str) or not text[:1].isdigit():
        raise ValueError("timestamp must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("timestamp must be an ISO 8601 string") from None
    if moment.tzinfo is None or moment.utcoffset() != UTC.utcoffset(None):
        raise ValueError("timestamp must be in UTC")
    return moment.astimezone(UTC)


def make_event(
    kind: str,
    *,
    at: datetime,
    outcome: str,
    actor: Any = None,
    request_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build an event dict with the common fields first; the caller vouches that nothing in it is secret."""
    event: dict[str, Any] = {
        "kind": kind,
        "at": format_at(at),
        "request_id": request_id,
        "actor": actor,
        "outcome": outcome,
    }
    event.update(fields)
    return event


# -- the typed event --------------------------------------------------------------------------------


class Outcome(StrEnum):
    """What happened to what an event records. ``refused``: an admin call turned down (403, 400 after
    authentication, 404, 409); ``denied``: a signing refusal (kept as signing has always written it)."""

    ALLOWED = "allowed"
    DENIED = "denied"
    REFUSED = "refused"
    FAILED = "failed"
    PENDING_APPROVAL = "pending_approval"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class EventTarget:
    """What an event is about: a resource type (``key``, ``grant``, ``policy``, ...) and its id (None
    when the id is not known or may not be written, e.g. a refused request that named it)."""

    type: str
    id: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"type": self.type, "id": self.id}


@dataclass(frozen=True, slots=True)
class ErrorRef:
    """The stable code and HTTP status of a refusal: never its message, never the refused input."""

    code: str
    status: int

    def as_dict(self) -> dict[str, str | int]:
        return {"code": self.code, "status": self.status}


# Names an event's own fields cannot take: the builder writes them.
RESERVED_FIELDS = frozenset((*EVENT_FIELDS, "resource", "error"))


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """An event whose outcome is not known yet: everything but the outcome (and error), decided once
    at the start of a request and finished on each path (``draft.event(Outcome.ALLOWED, decision=...)``).
    The shape of the sign path's base event, kept typed."""

    kind: str
    at: datetime
    actor: Mapping[str, Any] | None
    request_id: str | None
    resource: EventTarget | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)

    def event(
        self, outcome: Outcome, *, kind: str | None = None, error: ErrorRef | None = None, **fields: Any
    ) -> AuditEvent:
        """The finished event; ``fields`` add to (or replace) the draft's own fields, and ``kind``
        replaces the draft's where one path records another kind (a refused vote, say)."""
        return AuditEvent.of(
            self.kind if kind is None else kind,
            at=self.at,
            outcome=outcome,
            actor=self.actor,
            request_id=self.request_id,
            resource=self.resource,
            error=error,
            **{**self.fields, **fields},
        )


class AuditEvent(Mapping[str, Any]):
    """One audit event, built by ``AuditEvent.of`` (or ``RequestContext.audit_event`` in the services):
    the only thing ``Writer.append_audit`` takes. A read-only mapping of the JSON it is written as."""

    __slots__ = ("_at", "_body")

    _body: dict[str, Any]
    # The instant "at" names, in UTC, when the builder had it as a datetime (None otherwise): the
    # writer's record needs it, and parsing the text back gives this very value.
    _at: datetime | None

    def __init__(self, body: dict[str, Any], at: datetime | None = None) -> None:
        object.__setattr__(self, "_body", body)
        object.__setattr__(self, "_at", at)

    @classmethod
    def of(
        cls,
        kind: str,
        *,
        at: datetime,
        outcome: Outcome,
        actor: Mapping[str, Any] | None,
        request_id: str | None,
        resource: EventTarget | None = None,
        error: ErrorRef | None = None,
        **fields: Any,
    ) -> AuditEvent:
        """Every required field by name; ``fields`` are the event family's own (no secrets: HMAC them).

        ``resource`` and ``error`` are written only when given (``"resource": {"type", "id"}``,
        ``"error": {"code", "status"}``). Raises ``ValueError`` for an empty kind, a naive ``at``, an
        unknown outcome or a field named like one the builder writes.
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError("event kind must be a non-empty string")
        if request_id is not None and not isinstance(request_id, str):
            raise ValueError("event request_id must be a string or None")
        clash = RESERVED_FIELDS.intersection(fields)
        if clash:
            raise ValueError(f"event fields may not be named {sorted(clash)}")
        text = format_at(at)
        body: dict[str, Any] = {
            "kind": kind,
            "at": text,
            "request_id": request_id,
            "actor": None if actor is None else dict(actor),
            "outcome": outcome.value if type(outcome) is Outcome else Outcome(outcome).value,
        }
        if resource is not None:
            body["resource"] = resource.as_dict()
        if error is not None:
            body["error"] = error.as_dict()
        body.update(fields)
        # parse_at(text) is this instant (format_at refused a naive one and keeps every microsecond),
        # for the usual "YYYY-MM-DDTHH:MM:SS.ffffffZ"; any other text is left to be parsed.
        return cls(body, at.astimezone(UTC) if len(text) == _AT_TEXT_LENGTH else None)

    def as_dict(self) -> dict[str, Any]:
        """A shallow copy of the fields, as ``dict(event)`` makes it, without the Mapping protocol's
        per-key calls (``Writer.append_audit`` copies every event it chains)."""
        return dict(self._body)

    def __getitem__(self, name: str) -> Any:
        return self._body[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._body)

    def __len__(self) -> int:
        return len(self._body)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("an AuditEvent is immutable")

    def __repr__(self) -> str:
        return f"AuditEvent({self._body!r})"

    @property
    def kind(self) -> str:
        return str(self._body["kind"])

    def with_fields(self, **fields: Any) -> AuditEvent:
        """A copy with more of the family's own fields (the required ones cannot be replaced)."""
        clash = RESERVED_FIELDS.intersection(fields)
        if clash:
            raise ValueError(f"event fields may not be named {sorted(clash)}")
        return AuditEvent({**self._body, **fields}, self._at)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One committed (or about to be committed) link of the chain, as stored and as exported."""

    seq: int
    at: datetime
    request_id: str | None
    kind: str
    event: str  # the canonical JSON text that was hashed
    prev_hash: str
    hash: str

    def to_export(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": format_at(self.at),
            "request_id": self.request_id,
            "kind": self.kind,
            "event": self.event,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def export_jsonl(records: Iterable[AuditRecord | Mapping[str, Any]]) -> Iterator[str]:
    """One canonical JSON line (with its ``\\n``) per record; the ``event`` travels as the hashed text."""
    for record in records:
        if isinstance(record, AuditRecord):
            fields: Mapping[str, Any] = record.to_export()
        else:
            fields = {name: record[name] for name in EXPORT_FIELDS}
        yield canonical_json(fields).decode("utf-8") + "\n"


# -- verification -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``checked`` records verified before the first failure; ``first_bad_seq`` is the position (the
    sequence number the chain expected there) where it first broke; ``reason`` is a stable code."""

    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str | None


class ChainVerifier:
    """Checks records one by one, so an export of any size verifies in constant memory.

    Reasons: ``malformed_record``, ``seq_mismatch`` (a gap, a reorder, an insertion or a duplicate),
    ``prev_hash_mismatch``, ``hash_mismatch``, ``event_not_canonical``, ``field_mismatch`` (the
    record's at/kind/request_id disagree with its hashed event), ``truncated`` and ``head_mismatch``
    (only with an ``expected_head``).
    """

    def __init__(self, *, first_seq: int = 1, prev_hash: str = GENESIS_HASH) -> None:
        self._next_seq = first_seq
        self._prev = prev_hash
        self.checked = 0
        self.failure: VerifyResult | None = None

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def last_hash(self) -> str:
        return self._prev

    def _fail(self, reason: str) -> bool:
        self.failure = VerifyResult(False, self.checked, self._next_seq, reason)
        return False

    def feed(self, record: AuditRecord | Mapping[str, Any]) -> bool:
        """Check the next record; after the first failure every later call returns False."""
        if self.failure is not None:
            return False
        if isinstance(record, AuditRecord):
            record = record.to_export()
        if not isinstance(record, Mapping):
            return self._fail("malformed_record")
        seq, event, prev, digest = (record.get(k) for k in ("seq", "event", "prev_hash", "hash"))
        if (
            type(seq) is not int
            or not isinstance(event, str)
            or not isinstance(prev, str)
            or not isinstance(digest, str)
            or not _HEX64.fullmatch(prev)
            or not _HEX64.fullmatch(digest)
            or set(record) != set(EXPORT_FIELDS)
        ):
            return self._fail("malformed_record")
        if seq != self._next_seq:
            return self._fail("seq_mismatch")
        if prev != self._prev:
            return self._fail("prev_hash_mismatch")
        try:
            raw = event.encode("utf-8")
        except UnicodeEncodeError:
            return self._fail("malformed_record")
        if chain_hash(prev, raw) != digest:
            return self._fail("hash_mismatch")
        try:
            body = parse_event(raw)
        except ValueError:
            return self._fail("event_not_canonical")
        if not isinstance(body, dict) or not _fields_agree(record, body):
            return self._fail("field_mismatch")
        self.checked += 1
        self._next_seq += 1
        self._prev = digest
        return True

    def result(self, expected_head: tuple[int, str] | None = None) -> VerifyResult:
        """The verdict; with ``expected_head`` = (seq, hash) from a trusted anchor, a cut tail shows."""
        if self.failure is not None:
            return self.failure
        if expected_head is not None:
            head_seq, head_hash = expected_head
            last_seq = self._next_seq - 1
            if last_seq < head_seq:
                return VerifyResult(False, self.checked, self._next_seq, "truncated")
            if last_seq > head_seq or self._prev != head_hash:
                return VerifyResult(False, self.checked, last_seq, "head_mismatch")
        return VerifyResult(True, self.checked, None, None)


def _fields_agree(record: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    # The row's at/kind/request_id are copies for indexing; they are not hashed, so they must match
    # the hashed event or an edit of them would go unnoticed.
    if record.get("kind") != body.get("kind") or record.get("request_id") != body.get("request_id"):
        return False
    try:
        return parse_at(record["at"]) == parse_at(body["at"])
    except (KeyError, ValueError):
        return False


def verify_chain(
    events: Iterable[AuditRecord | Mapping[str, Any]],
    *,
    first_seq: int = 1,
    prev_hash: str = GENESIS_HASH,
    expected_head: tuple[int, str] | None = None,
) -> VerifyResult:
    """Verify exported records {seq, at, request_id, kind, event, prev_hash, hash} in order.

    By default the chain must start at seq 1 on ``GENESIS_HASH``; to verify a slice, pass the seq and
    hash it starts after (``first_seq``, ``prev_hash``) from a trusted source.
    """
    verifier = ChainVerifier(first_seq=first_seq, prev_hash=prev_hash)
    for record in events:
        if not verifier.feed(record):
            break
    return verifier.result(expected_head)


def verify_jsonl(
    lines: Iterable[str | bytes],
    *,
    first_seq: int = 1,
    prev_hash: str = GENESIS_HASH,
    expected_head: tuple[int, str] | None = None,
) -> VerifyResult:
    """Verify an exported JSONL stream; a line that is not a canonical JSON record is flagged where it is."""
    verifier = ChainVerifier(first_seq=first_seq, prev_hash=prev_hash)
    for line in lines:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        if text.endswith("\n"):
            text = text[:-1]
        try:
            record = parse_canonical(text)
        except ValueError:
            verifier.feed(None)  # type: ignore[arg-type]  # flagged as malformed at this position
            break
        if not verifier.feed(record):
            break
    return verifier.result(expected_head)
