"""Moved to ``signer.crypto.signatures``; this name stays only until signing.py and approvals.py import
it from there (the lead switches them at merge), then this module is deleted."""

from __future__ import annotations

from signer.crypto.signatures import P256_ORDER, check_ed25519, check_p256, p256_der

__all__ = ["P256_ORDER", "check_ed25519", "check_p256", "p256_der"]
