"""The key lifecycle graph (signer.services.key_states) against NIST SP 800-57 Part 1 §7, as a pure model.

Two independent descriptions are checked against the module: the edges written out here from the
standard's figure (each a (from, to) pair, no actions), and a Hypothesis state machine that drives
random actions and keeps its own history: once a key has left ``active`` for deactivated, compromised or
destroyed it never signs again; a compromise is never forgotten; a destroyed key stays destroyed; a
refused action changes nothing.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from signer.services.key_states import (
    COMPROMISED_STATES,
    DESTROYED_STATES,
    NEEDS_CONFIRMATION,
    TRANSITIONS,
    KeyAction,
    KeyState,
    may_sign,
    next_state,
    reachable,
    refusal_code,
)
from signer.store.records import KEY_STATES

# SP 800-57 Part 1 Rev. 5, §7 (Figure 5), with Rev. 4's destroyed-compromised state kept.
STANDARD_EDGES = {
    ("pre_activation", "active"),
    ("pre_activation", "compromised"),
    ("pre_activation", "destroyed"),
    ("active", "suspended"),
    ("active", "deactivated"),
    ("active", "compromised"),
    ("suspended", "active"),
    ("suspended", "deactivated"),
    ("suspended", "compromised"),
    ("deactivated", "compromised"),
    ("deactivated", "destroyed"),
    ("compromised", "destroyed_compromised"),
    ("destroyed", "destroyed_compromised"),
}
NEVER_ACTIVE_AGAIN = {"deactivated", "compromised", "destroyed", "destroyed_compromised"}


def test_the_graph_is_the_standards() -> None:
    edges = {(a.value, b.value) for a, moves in TRANSITIONS.items() for b in moves.values()}
    assert edges == STANDARD_EDGES
    assert {s.value for s in KeyState} == set(KEY_STATES) == set(TRANSITIONS)
    # One action leads to one state from a given state (no two actions share an edge).
    for moves in TRANSITIONS.values():
        assert len(set(moves.values())) == len(moves)


def test_no_way_back_to_active() -> None:
    for state in NEVER_ACTIVE_AGAIN:
        assert KeyState.ACTIVE not in reachable(KeyState(state))
    assert reachable(KeyState.DESTROYED_COMPROMISED) == frozenset()
    assert reachable(KeyState.PRE_ACTIVATION) == frozenset(KeyState) - {KeyState.PRE_ACTIVATION}


def test_only_active_signs_and_refusals_name_the_state() -> None:
    assert [s for s in KeyState if may_sign(s)] == [KeyState.ACTIVE]
    assert refusal_code("suspended") == "key_disabled"  # the code disable always gave
    assert refusal_code("destroyed_compromised") == "key_destroyed_compromised"
    assert refusal_code("disabled") == "key_not_active"  # a value no row can hold since 0018


def test_unknown_states_and_actions_have_no_edge() -> None:
    assert next_state("disabled", "activate") is None
    assert next_state("active", "enable") is None
    assert next_state("", "") is None
    assert NEEDS_CONFIRMATION == {KeyAction.COMPROMISE, KeyAction.DESTROY}


class Lifecycle(RuleBasedStateMachine):
    """A key driven through random actions; the model keeps what it has been through."""

    @initialize(inactive=st.booleans())
    def create(self, inactive: bool) -> None:
        self.state = KeyState.PRE_ACTIVATION if inactive else KeyState.ACTIVE
        self.history: list[KeyState] = [self.state]

    @rule(action=st.sampled_from(KeyAction))
    def act(self, action: KeyAction) -> None:
        before = self.state
        after = next_state(before, action)
        if after is None:
            assert action not in TRANSITIONS[before]
            return
        assert (before.value, after.value) in STANDARD_EDGES
        self.state = after
        self.history.append(after)

    @rule(state=st.text(max_size=12), action=st.text(max_size=12))
    def garbage(self, state: str, action: str) -> None:
        if state not in KEY_STATES or action not in {a.value for a in KeyAction}:
            assert next_state(state, action) is None

    @invariant()
    def signs_only_when_active(self) -> None:
        assert may_sign(self.state) == (self.state is KeyState.ACTIVE)

    @invariant()
    def never_active_again(self) -> None:
        left_for_good = [i for i, s in enumerate(self.history) if s.value in NEVER_ACTIVE_AGAIN]
        if left_for_good:
            assert KeyState.ACTIVE not in self.history[left_for_good[0] :]

    @invariant()
    def compromise_is_never_forgotten(self) -> None:
        if any(s in COMPROMISED_STATES for s in self.history):
            assert self.state in COMPROMISED_STATES

    @invariant()
    def destroyed_stays_destroyed(self) -> None:
        if any(s in DESTROYED_STATES for s in self.history):
            assert self.state in DESTROYED_STATES


Lifecycle.TestCase.settings = settings(max_examples=200, stateful_step_count=15, deadline=None)
test_lifecycle = Lifecycle.TestCase


def test_kms_names_each_refusal_as_aws_does() -> None:
    from signer.errors import Conflict
    from signer.services.kms import kms_error_type

    for state in ("suspended", "deactivated", "pre_activation"):
        assert kms_error_type(Conflict(code=refusal_code(state))) == "DisabledException"
    for state in ("compromised", "destroyed", "destroyed_compromised"):
        assert kms_error_type(Conflict(code=refusal_code(state))) == "KMSInvalidStateException"
