"""The HSM layer: the only package in the project that imports ``pkcs11``.

Private keys are generated, used and destroyed inside a PKCS#11 token and never leave it. ``Hsm``
(in ``worker``) is the ``KeyVault`` implementation: one thread per process makes every PKCS#11 call,
callers await jobs with a deadline. ``provision`` writes a SoftHSM2 configuration and initialises tokens
(CLI, tests, benchmarks). The value types in ``types`` carry no PKCS#11 dependency.

Importing this package does not import python-pkcs11: ``Hsm`` and ``HsmStats`` are loaded on first use,
so the type names (and ``provision``, which must run where python-pkcs11 is not loaded) stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from signer.hsm.types import Curve, GeneratedKey, KekRotator, KeyAttributes, KeyVault, KeyWrapper

if TYPE_CHECKING:
    from signer.hsm.worker import Hsm, HsmStats

__all__ = [
    "Curve",
    "GeneratedKey",
    "Hsm",
    "HsmStats",
    "KekRotator",
    "KeyAttributes",
    "KeyVault",
    "KeyWrapper",
]


def __getattr__(name: str) -> Any:
    if name in ("Hsm", "HsmStats"):
        from signer.hsm import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'signer.hsm' has no attribute {name!r}")
