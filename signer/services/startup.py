"""Start-up self-test: the token signs a fixed input with throw-away keys and an independent library checks.

If the token, the module or our own plumbing is broken, the process refuses to start rather than find out
on the first real request.
"""

from __future__ import annotations

from signer.crypto.signatures import check_ed25519, check_p256
from signer.errors import ConfigurationError, SignerError
from signer.eth import recoverable_signature
from signer.hsm import Curve, KeyVault


async def self_test(hsm: KeyVault) -> None:
    for curve in (Curve.SECP256K1, Curve.P256, Curve.ED25519):
        try:
            public_key, data, signature = await hsm.self_test(curve)
            if curve is Curve.SECP256K1:
                recoverable_signature(data, signature, public_key)
            elif curve is Curve.P256:
                check_p256(public_key, data, signature)
            else:
                check_ed25519(public_key, data, signature)
        except SignerError as exc:
            raise ConfigurationError(f"HSM self-test failed for {curve.value}: {exc.code}") from None
