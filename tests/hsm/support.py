"""Test-only helpers for the HSM suite: independent signature checks and the PKCS#11 fault shim.

Signatures made by the token are checked with libraries that share no code with SoftHSM or
python-pkcs11: coincurve (libsecp256k1) for secp256k1, pyca/cryptography (OpenSSL) for P-256 and
Ed25519. The fault shim (``faultshim.c``) is compiled here, per test session, and never shipped.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import coincurve
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from signer.hsm import Curve

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

CKR_FUNCTION_FAILED = 0x06
CKR_DEVICE_ERROR = 0x30
CKR_OPERATION_ACTIVE = 0x90
CKR_SESSION_HANDLE_INVALID = 0xB3
CKR_TOKEN_NOT_PRESENT = 0xE0


def is_high_s(signature: bytes) -> bool:
    return int.from_bytes(signature[32:], "big") > SECP256K1_N // 2


def verify_secp256k1(public_key: bytes, digest: bytes, signature: bytes) -> bool:
    """coincurve over DER built from r and s; s is folded to low-s first (libsecp256k1 only accepts
    that form, and (r, s) verifies exactly when (r, n - s) does)."""
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if s > SECP256K1_N // 2:
        s = SECP256K1_N - s
    return coincurve.PublicKey(public_key).verify(encode_dss_signature(r, s), digest, hasher=None)


def verify_secp256k1_openssl(public_key: bytes, digest: bytes, signature: bytes) -> bool:
    """The raw r||s, high s included, checked by OpenSSL: a second opinion with no normalisation."""
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), public_key)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def verify_p256(public_key: bytes, digest: bytes, signature: bytes) -> bool:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def verify(curve: Curve, public_key: bytes, data: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    if curve is Curve.SECP256K1:
        return verify_secp256k1(public_key, data, signature)
    if curve is Curve.P256:
        return verify_p256(public_key, data, signature)
    return verify_ed25519(public_key, data, signature)


@dataclass
class FaultShim:
    """Control of the compiled fault shim loaded in this process (see faultshim.c for the faults)."""

    path: Path
    dll: ctypes.CDLL

    @classmethod
    def build(cls, out_dir: Path) -> FaultShim | None:
        gcc = shutil.which("gcc") or shutil.which("cc")
        header = Path("/usr/include/p11-kit-1/p11-kit/pkcs11.h")
        if gcc is None or not header.exists():
            return None
        source = Path(__file__).with_name("faultshim.c")
        out = out_dir / "libfaultshim.so"
        subprocess.run(
            [
                gcc,
                "-shared",
                "-fPIC",
                "-O2",
                "-Wall",
                "-Werror",
                f"-I{header.parent.parent}",
                str(source),
                "-o",
                str(out),
                "-ldl",
                "-lpthread",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        dll = ctypes.CDLL(str(out))
        dll.shim_fail_sign_init.argtypes = (ctypes.c_ulong, ctypes.c_long, ctypes.c_uint, ctypes.c_uint)
        dll.shim_fail_after_sign.argtypes = (ctypes.c_ulong, ctypes.c_long)
        dll.shim_sign_delay_ms.argtypes = (ctypes.c_ulong,)
        dll.shim_sign_init_calls.restype = ctypes.c_ulong
        dll.shim_injected.restype = ctypes.c_ulong
        dll.shim_threads_seen.restype = ctypes.c_uint
        dll.shim_login_calls.restype = ctypes.c_ulong
        return cls(path=out, dll=dll)

    def reset(self) -> None:
        self.dll.shim_reset()

    def fail_sign_init(self, rv: int, count: int = -1, percent: int = 0, seed: int = 1) -> None:
        self.dll.shim_fail_sign_init(rv, count, percent, seed)

    def fail_after_sign(self, rv: int, count: int = 1) -> None:
        self.dll.shim_fail_after_sign(rv, count)

    def sign_delay_ms(self, ms: int) -> None:
        self.dll.shim_sign_delay_ms(ms)

    @property
    def sign_init_calls(self) -> int:
        return int(self.dll.shim_sign_init_calls())

    @property
    def injected(self) -> int:
        return int(self.dll.shim_injected())

    @property
    def login_calls(self) -> int:
        return int(self.dll.shim_login_calls())

    @property
    def threads_seen(self) -> int:
        return int(self.dll.shim_threads_seen())
