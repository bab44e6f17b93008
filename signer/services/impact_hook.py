"""How an action records its impact review in its own audit event, without importing the review.

The admin and secrets services hold an optional ``ImpactHook`` (set by the composition root to
``ImpactService.compact``): inside the action's transaction, before it changes anything, the hook
reads what the action will change and returns the compact report (counts and bounded id lists), which
the action's audit event carries as ``impact``. With no hook the event carries none. A review that fails
must not stop the action it describes: it is logged and the event says so.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from signer.errors import SignerError
from signer.store import Writer

ImpactHook = Callable[[Writer, str, str], Awaitable[dict[str, Any]]]

log = logging.getLogger("signer.impact")


async def recorded_impact(
    hook: ImpactHook | None, writer: Writer, action: str, target_id: str
) -> dict[str, Any]:
    """``{"impact": report}`` for the action's audit event, or nothing without a hook."""
    if hook is None:
        return {}
    try:
        return {"impact": await hook(writer, action, target_id)}
    except SignerError as exc:
        if exc.status >= 500:
            raise
        log.warning("impact review for %s failed: %s", action, exc.code)
        return {"impact": {"action": action, "error": exc.code}}
    except Exception:  # a fault in the review must not stop the revocation or deletion it describes
        log.exception("impact review for %s failed", action)
        return {"impact": {"action": action, "error": "impact_review_failed"}}
