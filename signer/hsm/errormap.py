"""The one place where a PKCS#11 failure becomes a service error and a recovery decision.

Every exception raised by python-pkcs11 (or by ``signer.hsm.ckapi``, which raises the same classes) on
the worker thread goes through ``translate``: it says what the caller will see (a ``SignerError`` with a
stable code, whose message never carries a PIN, a handle, a path or the module's own text) and what the
worker may do about it before giving up (log in again, refresh a handle, back off, reconnect).
``startup_error`` is its counterpart for ``Hsm.start``: the refusals (``ConfigurationError``) a process
gives when it cannot open the token at all.
"""

from __future__ import annotations

import re
from enum import Enum

import pkcs11.exceptions as pk

from signer.errors import (
    ConfigurationError,
    Forbidden,
    HsmUnavailable,
    InvalidRequest,
    NotFound,
    SignerError,
    Unprocessable,
)

__all__ = ["Recovery", "startup_error", "translate"]


class Recovery(Enum):
    """What the worker may try after a failure, at most once per job unless said otherwise."""

    NONE = "none"  # the failure is the answer
    RELOGIN = "relogin"  # session or login lost: re-open the session and log in once, retry once
    REFRESH_HANDLE = "refresh_handle"  # a cached object handle went stale: find the key again, retry once
    BACKOFF = "backoff"  # transient: up to 3 retries with exponential backoff inside the deadline
    RECONNECT = "reconnect"  # token or device trouble: fail now; re-initialise the library before next use
    PIN_REFUSED = "pin_refused"  # never log in with this PIN again: a real HSM locks it after a few tries


_SESSION_LOST = (pk.SessionHandleInvalid, pk.SessionClosed, pk.UserNotLoggedIn)
# A KEK handle goes stale like a signing key's (SoftHSM re-indexes after a write): PKCS#11 names it by role.
_STALE_HANDLE = (
    pk.ObjectHandleInvalid,
    pk.KeyHandleInvalid,
    pk.WrappingKeyHandleInvalid,
    pk.UnwrappingKeyHandleInvalid,
)
_TRANSIENT = (pk.FunctionFailed, pk.OperationActive)
_TOKEN_TROUBLE = (
    pk.TokenNotPresent,
    pk.TokenNotRecognised,
    pk.DeviceRemoved,
    pk.DeviceError,
    pk.DeviceMemory,
    pk.GeneralError,
    pk.SessionCount,
    pk.HostMemory,
    pk.NoSuchToken,
    pk.MultipleTokensReturned,
)
_PIN_TROUBLE = (pk.PinIncorrect, pk.PinLocked, pk.PinExpired, pk.PinInvalid, pk.UserPinNotInitialized)
_CONFINEMENT = (pk.AttributeSensitive, pk.KeyUnextractable, pk.AttributeReadOnly, pk.KeyNotWrappable)
_UNSUPPORTED = (
    pk.MechanismInvalid,
    pk.MechanismParamInvalid,
    pk.FunctionNotSupported,
    pk.KeyTypeInconsistent,
    pk.DomainParamsInvalid,
    pk.TemplateInconsistent,
    pk.TemplateIncomplete,
    pk.AttributeTypeInvalid,
    pk.AttributeValueInvalid,
)
_BAD_INPUT = (pk.DataInvalid, pk.DataLenRange)

_UNMAPPED = re.compile(r"Unmapped error code (0x[0-9a-fA-F]+)")
# python-pkcs11 raises a bare PKCS11Error for CKR_CRYPTOKI_NOT_INITIALIZED; its text is the only clue.
_NOT_INITIALISED_TEXT = "not initialized"
_CKR_ACTION_PROHIBITED = 0x1B
_CKR_KEY_FUNCTION_NOT_PERMITTED = 0x68
_CKR_CRYPTOKI_NOT_INITIALIZED = 0x190


def _unmapped_code(exc: pk.PKCS11Error) -> int | None:
    match = _UNMAPPED.search(str(exc))
    return int(match.group(1), 16) if match else None


def translate(exc: BaseException) -> tuple[Recovery, SignerError]:
    """What the caller sees for ``exc`` and what the worker may try first. Never reads PINs or handles."""
    if isinstance(exc, SignerError):
        return Recovery.NONE, exc
    if isinstance(exc, _SESSION_LOST):
        return Recovery.RELOGIN, HsmUnavailable("HSM session lost")
    if isinstance(exc, _STALE_HANDLE):
        return Recovery.REFRESH_HANDLE, HsmUnavailable("HSM object handle invalid")
    if isinstance(exc, _TRANSIENT):
        return Recovery.BACKOFF, HsmUnavailable("HSM busy")
    if isinstance(exc, _TOKEN_TROUBLE):
        return Recovery.RECONNECT, HsmUnavailable("HSM token not usable")
    if isinstance(exc, _PIN_TROUBLE):
        # A PIN that worked at start no longer does: retrying would burn the token's PIN tries.
        return Recovery.PIN_REFUSED, HsmUnavailable("HSM refused the login")
    if isinstance(exc, _CONFINEMENT):
        return Recovery.NONE, Forbidden("the token refuses to reveal or export this key", code="key_confined")
    if isinstance(exc, pk.NoSuchKey):
        return Recovery.NONE, NotFound("key not found", code="key_not_found")
    if isinstance(exc, _UNSUPPORTED):
        return Recovery.NONE, Unprocessable(
            "the token does not support this operation", code="unsupported_operation"
        )
    if isinstance(exc, _BAD_INPUT):
        return Recovery.NONE, InvalidRequest("the token rejected the data to sign", code="invalid_data")
    if isinstance(exc, pk.PKCS11Error):
        code = _unmapped_code(exc)
        if code == _CKR_ACTION_PROHIBITED:
            return Recovery.NONE, Forbidden("the token prohibits this action", code="key_confined")
        if code == _CKR_KEY_FUNCTION_NOT_PERMITTED:
            return Recovery.NONE, Forbidden(
                "the key may not be used this way", code="key_usage_not_permitted"
            )
        if code == _CKR_CRYPTOKI_NOT_INITIALIZED or _NOT_INITIALISED_TEXT in str(exc):
            return Recovery.RECONNECT, HsmUnavailable("HSM library not initialised")
        return Recovery.NONE, SignerError("unexpected HSM error", code="hsm_error")
    return Recovery.NONE, SignerError("unexpected HSM error", code="hsm_error")


def startup_error(exc: BaseException, module_path: str, token_label: str) -> ConfigurationError:
    """Why ``Hsm.start`` refuses to run: a clear message naming the token or module, never the PIN."""
    if isinstance(exc, ConfigurationError):
        return exc
    if isinstance(exc, OSError) or (isinstance(exc, pk.PKCS11Error) and "while loading" in str(exc)):
        return ConfigurationError(f"PKCS#11 module cannot be loaded: {module_path}")
    if isinstance(exc, pk.NoSuchToken):
        return ConfigurationError(f"token {token_label!r} not found")
    if isinstance(exc, pk.MultipleTokensReturned):
        return ConfigurationError(f"more than one token is labelled {token_label!r}")
    if isinstance(exc, pk.PinIncorrect | pk.PinInvalid | pk.PinLenRange):
        return ConfigurationError(f"wrong PIN for token {token_label!r}")
    if isinstance(exc, pk.PinLocked):
        return ConfigurationError(f"PIN locked for token {token_label!r}")
    if isinstance(exc, pk.PinExpired):
        return ConfigurationError(f"PIN expired for token {token_label!r}")
    if isinstance(exc, pk.UserPinNotInitialized):
        return ConfigurationError(f"user PIN not initialised on token {token_label!r}")
    return ConfigurationError(f"token {token_label!r} cannot be opened ({type(exc).__name__})")
