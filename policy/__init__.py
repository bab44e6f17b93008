"""The pure decision engine: who may do what, decided from arguments alone.

Standard library only: no I/O, no clock, no asyncio. Callers pass the request, the grants (and later the
policies and facts) and ``now``; the engine returns a ``Decision`` that names its reasons. Default deny;
deny wins; a rule that fails to evaluate denies. Import from this package root, never from its modules.
"""

from policy.decision import Decision, Effect, Reason
from policy.grants import OPERATIONS, Grant, GrantRequest, evaluate_grants

__all__ = ["OPERATIONS", "Decision", "Effect", "Grant", "GrantRequest", "Reason", "evaluate_grants"]
