"""Resources: what a request acts on, named by a ``ResourceRef``, and the registry of resource kinds.

Grants, policy requests, approval requests, audit events and the facts cache name what they are about
by a ``ResourceRef(type, id, scope, state)``; everything a kind does differently sits in its
``ResourceKind`` here: how to load one by id, which operations it has, the field that names it in events
and views (``key_id``), its not-found answer, the state in which it may be used, and the fragment
approvers read about it. Keys are the first kind; a new kind is one more ``register`` call. This module
owns the kinds' descriptions only: it never decides (``authorization`` and the pipeline do), and a kind's
not-found answer is also the answer to a caller no grant reaches (or a no-access grant closes), so
existence never leaks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from signer.errors import Conflict, NotFound, SignerError
from signer.services.key_states import may_sign, refusal_code
from signer.store import KeyRecord, Reader, Writer


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """One resource as authorisation sees it: its kind, id, the scope it lives in, and its state."""

    type: str
    id: str
    scope: str
    state: str


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """Everything the core needs to know about one kind of resource.

    ``load(reader, id)`` returns the record or None; ``ref(record)`` names it; ``not_found()`` is the
    answer for a missing one and for one the caller holds no grant on; ``unusable(ref)`` the refusal for a
    state in which it may not be used (None when usable); ``approval_view(record)`` and
    ``digest_fields(record)`` what approvers read about it and what an approval digest binds of it;
    ``summary(record)`` the few fields that name it for a person in reports (a key's label and scope)."""

    type: str
    id_field: str
    operations: frozenset[str]
    load: Callable[[Reader | Writer, str], Awaitable[Any | None]]
    ref: Callable[[Any], ResourceRef]
    not_found: Callable[[], SignerError]
    unusable: Callable[[ResourceRef], SignerError | None]
    approval_view: Callable[[Any], Mapping[str, Any]]
    digest_fields: Callable[[Any], Mapping[str, Any]]
    summary: Callable[[Any], Mapping[str, Any]] = lambda record: {}

    def names(self, resource_id: str) -> dict[str, str]:
        """The field that names one of this kind in events and views: ``{"key_id": id}``."""
        return {self.id_field: resource_id}


_KINDS: dict[str, ResourceKind] = {}


def register(kind: ResourceKind) -> ResourceKind:
    if kind.type in _KINDS:
        raise ValueError(f"resource kind {kind.type!r} is already registered")
    _KINDS[kind.type] = kind
    return kind


def resource_kind(type_: str) -> ResourceKind:
    return _KINDS[type_]


def known_kind(type_: str) -> ResourceKind | None:
    """The registered kind of that type, or None (for a type a caller named)."""
    return _KINDS.get(type_)


# What a grant names when it is not one resource: a scope (a folder prefix) covering every resource of
# every kind at or below it.
SCOPE = "scope"
# Operations that act on what does not exist yet: a grant of them says nothing about existing resources.
MAKING = frozenset({"create"})


def grant_operations(type_: str) -> frozenset[str]:
    """The operations a grant may list: a kind's own on one of its resources, any kind's on a scope."""
    if type_ == SCOPE:
        return frozenset().union(*(kind.operations for kind in _KINDS.values()))
    return _KINDS[type_].operations


# -- keys ------------------------------------------------------------------------------------------


def key_ref(key: KeyRecord) -> ResourceRef:
    return ResourceRef("key", key.id, key.scope, key.state)


async def _load_key(reader: Reader | Writer, key_id: str) -> KeyRecord | None:
    return await reader.keys.get(key_id)


def _key_unusable(ref: ResourceRef) -> SignerError | None:
    """Only an active key signs; any other state refuses with a code naming it (``key_disabled``...)."""
    if may_sign(ref.state):
        return None
    return Conflict(
        f"the key is {ref.state.replace('_', ' ')}: only an active key signs",
        code=refusal_code(ref.state),
        state=ref.state,
    )


KEYS = register(
    ResourceKind(
        type="key",
        id_field="key_id",
        operations=frozenset(
            {"sign_transaction", "sign_message", "sign_typed_data", "sign_raw", "sign_authorization"}
        ),
        load=_load_key,
        ref=key_ref,
        not_found=lambda: NotFound("no such key", code="key_not_found"),
        unusable=_key_unusable,
        approval_view=lambda key: {"key_id": key.id, "from": key.address, "key_label": key.label},
        digest_fields=lambda key: {"key_id": key.id, "curve": key.curve, "signer": key.address},
        summary=lambda key: {"label": key.label, "scope": key.scope},
    )
)
