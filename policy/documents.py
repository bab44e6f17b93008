"""Policy documents as values: one version of one policy, its canonical form and digest, where it attaches.

A ``PolicyDocument`` (built by ``policy.parsing``) is canonical: addresses lower-case, lists sorted and
de-duplicated, defaults filled in. ``as_dict`` writes it back, parsing that again gives an equal
document, and ``digest`` is the sha256 of its canonical JSON, so equal meaning gives an equal digest and
every decision can name exactly what it was made under. Documents attach to a scope (covering every
resource below it) or to one resource by reference (``resource_type``, ``resource_id``: a key or a
secret; narrower than any scope; ``key_id=`` is the older spelling of a key reference). A
``PolicySet`` is the grants plus the attached documents the engine judges a request against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policy.canonical import canonical_json, sha256_digest
from policy.decision import PolicyRef
from policy.errors import PolicyInputError
from policy.grants import Grant
from policy.names import MAX_SCOPE_DEPTH
from policy.request import RESOURCE_TYPES, PolicyRequest
from policy.rules import Rule
from policy.scopes import is_scope, path_contains, scope_segments


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One version of one policy. ``digest`` is computed from the canonical form."""

    policy_id: str
    version: int
    rules: tuple[Rule, ...]
    description: str = ""
    digest: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        ids = [rule.id for rule in self.rules]
        if len(ids) != len(set(ids)):
            raise PolicyInputError("duplicate_rule_id", "rule ids must be unique within a document")
        object.__setattr__(self, "digest", sha256_digest(self.as_dict()))

    @property
    def label(self) -> str:
        return f"{self.policy_id}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.policy_id,
            "version": self.version,
            "description": self.description,
            "rules": [rule.as_dict() for rule in self.rules],
        }

    def canonical_json(self) -> bytes:
        return canonical_json(self.as_dict())


@dataclass(frozen=True, slots=True)
class AttachedPolicy:
    """A document attached to a scope (and so to everything below it) or to one resource by reference.

    ``resource_type`` and ``resource_id`` name the resource (``key`` or ``secret``); ``key_id`` is kept
    as the older spelling of a key reference and always equals ``resource_id`` for a key."""

    document: PolicyDocument
    scope: str | None = None
    key_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    # Narrowness: a scope's segment count; a resource is narrower than every scope.
    depth: int = field(init=False, repr=False, compare=False)
    _path: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.key_id is not None:
            if self.resource_id is not None and (self.resource_type, self.resource_id) != (
                "key",
                self.key_id,
            ):
                raise PolicyInputError("invalid_attachment", "key_id and the resource reference disagree")
            object.__setattr__(self, "resource_type", "key")
            object.__setattr__(self, "resource_id", self.key_id)
        if (self.resource_type is None) != (self.resource_id is None):
            raise PolicyInputError("invalid_attachment", "a resource reference names a type and an id")
        if self.resource_type is not None and self.resource_type not in RESOURCE_TYPES:
            raise PolicyInputError("invalid_attachment", "a document is attached to an unknown resource type")
        if self.resource_id is not None and not (isinstance(self.resource_id, str) and self.resource_id):
            raise PolicyInputError("invalid_attachment", "a resource reference names a non-empty id")
        if self.resource_type == "key":
            object.__setattr__(self, "key_id", self.resource_id)
        if (self.scope is None) == (self.resource_id is None):
            raise PolicyInputError("invalid_attachment", "attach a document to exactly one scope or resource")
        if self.scope is not None and not is_scope(self.scope):
            raise PolicyInputError("invalid_scope", "a document is attached to an invalid scope")
        path = scope_segments(self.scope) if self.scope is not None else ()
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "depth", len(path) if self.scope is not None else MAX_SCOPE_DEPTH + 1)

    @property
    def attached_to(self) -> str:
        return f"scope:{self.scope}" if self.scope is not None else f"{self.resource_type}:{self.resource_id}"

    def applies_to(self, request: PolicyRequest) -> bool:
        if self.scope is not None:
            return path_contains(self._path, request.scope_path)
        return request.resource_type == self.resource_type and self.resource_id == request.resource_id

    def ref(self) -> PolicyRef:
        doc = self.document
        return PolicyRef(doc.policy_id, doc.version, doc.digest, self.attached_to)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Everything the engine judges against: the grants and the attached documents."""

    grants: tuple[Grant, ...] = ()
    documents: tuple[AttachedPolicy, ...] = ()
    # The engine's memo of merged rule sets, keyed by which documents apply. A set is immutable, so an
    # entry never goes stale; a service that keeps one set per policy epoch merges once per epoch.
    merge_cache: dict[tuple[int, ...], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def with_candidate(self, candidate: AttachedPolicy) -> PolicySet:
        """This set with ``candidate`` in place of the document with the same id at the same attachment
        (or added, if there is none): the set to evaluate in shadow or dry-run of a new version."""
        same = (candidate.document.policy_id, candidate.attached_to)
        kept = tuple(a for a in self.documents if (a.document.policy_id, a.attached_to) != same)
        return PolicySet(self.grants, (*kept, candidate))
