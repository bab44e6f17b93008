"""A key's lifecycle (NIST SP 800-57 Part 1 §7): its states, the transitions between them, as pure data.

Nothing here reads a clock, a database or the token: ``next_state(state, action)`` answers what a
transition leads to, or None when the graph has no such edge, and the keys service alone applies it
(in one transaction, audited). Only ``active`` signs; every other state refuses with a code that
names it (``refusal_code``). The graph (state, then where each action leads; ``.``: refused)::

    state                  activate  suspend    deactivate   compromise             destroy
    pre_activation         active    .          .            compromised            destroyed
    active                 .         suspended  deactivated  compromised            .
    suspended              active    .          deactivated  compromised            .
    deactivated            .         .          .            compromised            destroyed
    compromised            .         .          .            .                      destroyed_compromised
    destroyed              .         .          .            destroyed_compromised  .
    destroyed_compromised  .         .          .            .                      .

Nothing returns to ``active`` from ``deactivated``, ``compromised``, ``destroyed`` or
``destroyed_compromised``; ``destroyed_compromised`` has no way out. The old ``disable`` and ``enable``
are ``suspend`` and ``activate``, and a key stored as ``disabled`` before this graph is ``suspended``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class KeyState(StrEnum):
    PRE_ACTIVATION = "pre_activation"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DEACTIVATED = "deactivated"
    COMPROMISED = "compromised"
    DESTROYED = "destroyed"
    DESTROYED_COMPROMISED = "destroyed_compromised"


class KeyAction(StrEnum):
    ACTIVATE = "activate"
    SUSPEND = "suspend"
    DEACTIVATE = "deactivate"
    COMPROMISE = "compromise"
    DESTROY = "destroy"


S = KeyState
A = KeyAction
_STATE_VALUES = frozenset(s.value for s in KeyState)

# state -> action -> the state it leads to. An absent edge is a refused transition.
TRANSITIONS: Mapping[KeyState, Mapping[KeyAction, KeyState]] = MappingProxyType(
    {
        S.PRE_ACTIVATION: MappingProxyType(
            {A.ACTIVATE: S.ACTIVE, A.COMPROMISE: S.COMPROMISED, A.DESTROY: S.DESTROYED}
        ),
        S.ACTIVE: MappingProxyType(
            {A.SUSPEND: S.SUSPENDED, A.DEACTIVATE: S.DEACTIVATED, A.COMPROMISE: S.COMPROMISED}
        ),
        S.SUSPENDED: MappingProxyType(
            {A.ACTIVATE: S.ACTIVE, A.DEACTIVATE: S.DEACTIVATED, A.COMPROMISE: S.COMPROMISED}
        ),
        S.DEACTIVATED: MappingProxyType({A.COMPROMISE: S.COMPROMISED, A.DESTROY: S.DESTROYED}),
        S.COMPROMISED: MappingProxyType({A.DESTROY: S.DESTROYED_COMPROMISED}),
        S.DESTROYED: MappingProxyType({A.COMPROMISE: S.DESTROYED_COMPROMISED}),
        S.DESTROYED_COMPROMISED: MappingProxyType({}),
    }
)

# Irreversible and high-risk: the caller must confirm by naming the key's label.
NEEDS_CONFIRMATION: frozenset[KeyAction] = frozenset({A.COMPROMISE, A.DESTROY})

# States whose private key has been destroyed in the token.
DESTROYED_STATES: frozenset[KeyState] = frozenset({S.DESTROYED, S.DESTROYED_COMPROMISED})

# States whose key must never be trusted again, whatever it signed.
COMPROMISED_STATES: frozenset[KeyState] = frozenset({S.COMPROMISED, S.DESTROYED_COMPROMISED})


def next_state(state: str, action: str) -> KeyState | None:
    """The state ``action`` moves a key in ``state`` to, or None: no such state, action or edge."""
    try:
        return TRANSITIONS[KeyState(state)].get(KeyAction(action))
    except ValueError:
        return None


def may_sign(state: str) -> bool:
    """Only an active key signs."""
    return state == S.ACTIVE


def refusal_code(state: str) -> str:
    """The stable code of a refusal to use a key in ``state``: ``key_disabled`` for a suspended key (the
    code ``disable``, now ``suspend``, has always produced: clients match on it), otherwise
    ``key_<state>`` (``key_destroyed``...)."""
    if state == "suspended":
        return "key_disabled"
    return "key_" + state if state in _STATE_VALUES else "key_not_active"


def reachable(state: KeyState) -> frozenset[KeyState]:
    """Every state reachable from ``state`` by one or more transitions."""
    seen: set[KeyState] = set()
    todo = list(TRANSITIONS[state].values())
    while todo:
        nxt = todo.pop()
        if nxt not in seen:
            seen.add(nxt)
            todo.extend(TRANSITIONS[nxt].values())
    return frozenset(seen)
