"""The few raw PKCS#11 calls python-pkcs11 0.10.1 does not expose, bound with ctypes.

python-pkcs11 can only log in while opening a session and always calls ``C_Logout`` before
``C_CloseSession``; with login being per process, that would log out the one long-lived session the
worker keeps and leak a session handle whenever a login fails. This module reaches the same loaded
module (``dlopen`` of the same path returns the same instance) through its ``C_GetFunctionList`` table,
so it also works for vendor modules that only export that symbol.

It owns: ``C_Login``/``C_Logout`` of the user, ``C_CloseSession`` without logout, ``C_GetSessionInfo``,
``C_CloseAllSessions``. It must never be used from any thread but the HSM worker's (every call here
goes through ``signer.hsm.worker``'s single thread), and never puts a PIN anywhere but the C buffer it
wipes after the call. Failures are raised as python-pkcs11's own exception classes, so the one mapping
function in ``signer.hsm.errors`` sees a single vocabulary.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import pkcs11.exceptions as pk

from signer.config import Secret

__all__ = ["CkApi", "SessionInfo", "raise_for_rv"]

_CK_ULONG = ctypes.c_ulong
_CK_RV = ctypes.c_ulong

CKR_OK = 0x0
CKU_USER = 1
CKS_RW_USER_FUNCTIONS = 3
CKS_RO_USER_FUNCTIONS = 1

# Return values the worker reacts to, as python-pkcs11's classes (its own table is a private cdef).
_RV_ERRORS: dict[int, type[pk.PKCS11Error]] = {
    0x05: pk.GeneralError,
    0x06: pk.FunctionFailed,
    0x07: pk.ArgumentsBad,
    0x30: pk.DeviceError,
    0x31: pk.DeviceMemory,
    0x32: pk.DeviceRemoved,
    0x90: pk.OperationActive,
    0xA0: pk.PinIncorrect,
    0xA1: pk.PinInvalid,
    0xA2: pk.PinLenRange,
    0xA3: pk.PinExpired,
    0xA4: pk.PinLocked,
    0xB0: pk.SessionClosed,
    0xB3: pk.SessionHandleInvalid,
    0xE0: pk.TokenNotPresent,
    0xE1: pk.TokenNotRecognised,
    0x100: pk.UserAlreadyLoggedIn,
    0x101: pk.UserNotLoggedIn,
    0x102: pk.UserPinNotInitialized,
    0x104: pk.AnotherUserAlreadyLoggedIn,
}


def raise_for_rv(rv: int, function: str) -> None:
    if rv == CKR_OK:
        return
    cls = _RV_ERRORS.get(rv)
    if cls is not None:
        raise cls()
    # Same text python-pkcs11 uses for codes it does not know, so one mapper handles both.
    raise pk.PKCS11Error(f"Unmapped error code {hex(rv)} from {function}")


class _FunctionList(ctypes.Structure):
    # Prefix of CK_FUNCTION_LIST (PKCS#11 v2.40 order); only the entries used here are typed.
    _fields_ = (
        ("version_major", ctypes.c_ubyte),
        ("version_minor", ctypes.c_ubyte),
        ("C_Initialize", ctypes.c_void_p),
        ("C_Finalize", ctypes.c_void_p),
        ("C_GetInfo", ctypes.c_void_p),
        ("C_GetFunctionList", ctypes.c_void_p),
        ("C_GetSlotList", ctypes.c_void_p),
        ("C_GetSlotInfo", ctypes.c_void_p),
        ("C_GetTokenInfo", ctypes.c_void_p),
        ("C_GetMechanismList", ctypes.c_void_p),
        ("C_GetMechanismInfo", ctypes.c_void_p),
        ("C_InitToken", ctypes.c_void_p),
        ("C_InitPIN", ctypes.c_void_p),
        ("C_SetPIN", ctypes.c_void_p),
        ("C_OpenSession", ctypes.c_void_p),
        ("C_CloseSession", ctypes.c_void_p),
        ("C_CloseAllSessions", ctypes.c_void_p),
        ("C_GetSessionInfo", ctypes.c_void_p),
        ("C_GetOperationState", ctypes.c_void_p),
        ("C_SetOperationState", ctypes.c_void_p),
        ("C_Login", ctypes.c_void_p),
        ("C_Logout", ctypes.c_void_p),
    )


class _CkSessionInfo(ctypes.Structure):
    _fields_ = (
        ("slotID", _CK_ULONG),
        ("state", _CK_ULONG),
        ("flags", _CK_ULONG),
        ("ulDeviceError", _CK_ULONG),
    )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    slot_id: int
    state: int

    @property
    def user_logged_in(self) -> bool:
        return self.state in (CKS_RW_USER_FUNCTIONS, CKS_RO_USER_FUNCTIONS)


_SessionFn = ctypes.CFUNCTYPE(_CK_RV, _CK_ULONG)
_LoginFn = ctypes.CFUNCTYPE(_CK_RV, _CK_ULONG, _CK_ULONG, ctypes.c_char_p, _CK_ULONG)
_InfoFn = ctypes.CFUNCTYPE(_CK_RV, _CK_ULONG, ctypes.POINTER(_CkSessionInfo))


class CkApi:
    """Raw calls on an already loaded and initialised module (python-pkcs11 did ``C_Initialize``)."""

    def __init__(self, module_path: str) -> None:
        # OSError propagates: the caller turns it into "module cannot be loaded" without the OS text.
        dll = ctypes.CDLL(module_path)
        get_list = dll.C_GetFunctionList
        get_list.restype = _CK_RV
        get_list.argtypes = (ctypes.POINTER(ctypes.POINTER(_FunctionList)),)
        table = ctypes.POINTER(_FunctionList)()
        raise_for_rv(int(get_list(ctypes.byref(table))), "C_GetFunctionList")
        funcs = table.contents
        self._dll = dll  # keeps the library referenced for the lifetime of the bound pointers
        self._login = _LoginFn(funcs.C_Login)
        self._logout = _SessionFn(funcs.C_Logout)
        self._close_session = _SessionFn(funcs.C_CloseSession)
        self._close_all = _SessionFn(funcs.C_CloseAllSessions)
        self._session_info = _InfoFn(funcs.C_GetSessionInfo)

    def login_user(self, session_handle: int, pin: Secret) -> bool:
        """Log the user in; False when the token already was (login is per process, not per session)."""
        raw = pin.reveal().encode("utf-8")
        buffer = ctypes.create_string_buffer(raw, len(raw))
        try:
            rv = int(self._login(session_handle, CKU_USER, buffer, len(raw)))
        finally:
            ctypes.memset(buffer, 0, len(buffer))
        if rv == 0x100:  # CKR_USER_ALREADY_LOGGED_IN
            return False
        raise_for_rv(rv, "C_Login")
        return True

    def logout(self, session_handle: int) -> None:
        raise_for_rv(int(self._logout(session_handle)), "C_Logout")

    def close_session(self, session_handle: int) -> None:
        raise_for_rv(int(self._close_session(session_handle)), "C_CloseSession")

    def close_all_sessions(self, slot_id: int) -> None:
        raise_for_rv(int(self._close_all(slot_id)), "C_CloseAllSessions")

    def session_info(self, session_handle: int) -> SessionInfo:
        info = _CkSessionInfo()
        raise_for_rv(int(self._session_info(session_handle, ctypes.byref(info))), "C_GetSessionInfo")
        return SessionInfo(slot_id=int(info.slotID), state=int(info.state))
