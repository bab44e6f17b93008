"""The MAC on webhook deliveries: receivers check it with the group's webhook secret.

``sha256=`` + hex HMAC-SHA256 over ``timestamp || "." || body``; the timestamp is inside the MAC so a
receiver can refuse a replay far from its clock. The secret is an argument (derived per group by the
auth service, never stored) and is never written anywhere by this module.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["webhook_signature"]


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
