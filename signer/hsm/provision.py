"""Token provisioning: write a SoftHSM2 configuration and initialise a token with a label and PINs.

The CLI (``signer init``), the test fixtures and the benchmarks all create tokens through this module, so
there is one way to do it. It talks to the PKCS#11 module through ``ctypes`` on the module's exported
``C_*`` functions, because python-pkcs11 0.10.1 has no ``C_InitToken``; it never imports ``pkcs11``.

It owns: the softhsm2.conf layout (file backend, token directory 0700, conf 0600) and the one-off
SO-login that sets the user PIN. It must never: print, log or put a PIN into an exception message or a
command line (``softhsm2-util`` reads PINs from the tty and would put them in ``ps`` if given as
arguments; here they travel in memory or on a child's stdin); run in a process where the same PKCS#11
module is already initialised (``C_Finalize`` at the end would tear down the other user's state, so an
already-initialised module is refused instead). The CLI therefore runs ``init_token`` in a fresh
subprocess: ``init_token_in_subprocess`` does that, passing the PINs on the child's stdin.

SoftHSM reads ``SOFTHSM2_CONF`` from the environment at ``C_Initialize``: the caller sets it (see
``softhsm_env``) before calling ``init_token`` in-process.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from signer.config import Secret, default_module_path
from signer.errors import ConfigurationError

__all__ = [
    "EXIT_CREATED",
    "EXIT_EXISTS",
    "EXIT_FAILED",
    "SoftHsmToken",
    "init_token",
    "init_token_in_subprocess",
    "provision_softhsm",
    "softhsm_env",
    "write_softhsm_conf",
]

# PKCS#11 v2.40 constants used below (the values are fixed by the standard).
_CKR_OK = 0x0
_CKR_PIN_INCORRECT = 0xA0
_CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
_CKF_TOKEN_INITIALIZED = 0x400
_CKF_RW_SESSION = 0x2
_CKF_SERIAL_SESSION = 0x4
_CKU_SO = 0
_LABEL_LEN = 32

# Exit codes of ``python -m signer.hsm.provision`` (the CLI and softhsm/bootstrap rely on them).
EXIT_CREATED = 0
EXIT_EXISTS = 10
EXIT_FAILED = 2

_CK_ULONG = ctypes.c_ulong


class _CkVersion(ctypes.Structure):
    _fields_ = (("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte))


class _CkTokenInfo(ctypes.Structure):
    # Natural alignment: PKCS#11 headers only pack structures on Windows.
    _fields_ = (
        ("label", ctypes.c_ubyte * 32),
        ("manufacturerID", ctypes.c_ubyte * 32),
        ("model", ctypes.c_ubyte * 16),
        ("serialNumber", ctypes.c_ubyte * 16),
        ("flags", _CK_ULONG),
        ("ulMaxSessionCount", _CK_ULONG),
        ("ulSessionCount", _CK_ULONG),
        ("ulMaxRwSessionCount", _CK_ULONG),
        ("ulRwSessionCount", _CK_ULONG),
        ("ulMaxPinLen", _CK_ULONG),
        ("ulMinPinLen", _CK_ULONG),
        ("ulTotalPublicMemory", _CK_ULONG),
        ("ulFreePublicMemory", _CK_ULONG),
        ("ulTotalPrivateMemory", _CK_ULONG),
        ("ulFreePrivateMemory", _CK_ULONG),
        ("hardwareVersion", _CkVersion),
        ("firmwareVersion", _CkVersion),
        ("utcTime", ctypes.c_ubyte * 16),
    )


def write_softhsm_conf(conf_path: Path, token_dir: Path) -> None:
    """Write a SoftHSM2 config with a file backend whose tokens live in ``token_dir``.

    The token directory is created 0700 and the config 0600: the token files hold the key objects
    (encrypted under the PIN-derived key) and must not be readable by other local users.
    """
    token_dir = token_dir.resolve()
    token_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token_dir.chmod(0o700)
    conf_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = (
        "# Written by signer.hsm.provision\n"
        f"directories.tokendir = {token_dir}/\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    # Create with 0600 from the start rather than chmod after: no window where the file is world-readable.
    fd = os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    conf_path.chmod(0o600)


def softhsm_env(conf_path: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment (a copy of ``base`` or ``os.environ``) with ``SOFTHSM2_CONF`` set to ``conf_path``."""
    env = dict(os.environ if base is None else base)
    env["SOFTHSM2_CONF"] = str(conf_path.resolve())
    return env


def _padded_label(label: str) -> bytes:
    raw = label.encode("utf-8")
    if not raw or len(raw) > _LABEL_LEN:
        raise ConfigurationError(f"token label must be 1 to {_LABEL_LEN} bytes of UTF-8")
    return raw.ljust(_LABEL_LEN, b" ")


class _Module:
    """The handful of exported C_* functions ``init_token`` needs, bound with ctypes."""

    def __init__(self, module_path: str) -> None:
        try:
            self._dll = ctypes.CDLL(module_path)
        except OSError:
            raise ConfigurationError(f"PKCS#11 module cannot be loaded: {module_path}") from None

    def call(self, name: str, *args: object) -> int:
        try:
            fn = getattr(self._dll, name)
        except AttributeError:
            raise ConfigurationError(f"PKCS#11 module does not export {name}") from None
        fn.restype = _CK_ULONG
        return int(fn(*args))

    def check(self, name: str, *args: object) -> None:
        rv = self.call(name, *args)
        if rv == _CKR_PIN_INCORRECT:
            raise ConfigurationError(f"{name} refused the PIN (CKR_PIN_INCORRECT)")
        if rv != _CKR_OK:
            raise ConfigurationError(f"{name} failed with CKR 0x{rv:X}")


def _pin_buffer(pin: Secret) -> ctypes.Array[ctypes.c_char]:
    value = pin.reveal().encode("utf-8")
    if not value:
        raise ConfigurationError("PIN must not be empty")
    return ctypes.create_string_buffer(value, len(value))


def _wipe(buffer: ctypes.Array[ctypes.c_char]) -> None:
    # Best effort: the Python str behind Secret cannot be wiped, but the C copies we made can.
    ctypes.memset(buffer, 0, len(buffer))


def init_token(module_path: str, label: str, so_pin: Secret, user_pin: Secret) -> bool:
    """Initialise a free slot's token with ``label``, SO PIN and user PIN; False if the label exists.

    Idempotent: when an initialised token already carries ``label`` nothing is changed and False is
    returned. Needs ``SOFTHSM2_CONF`` in the environment for SoftHSM. Must run in a process where the
    module is not initialised yet (typically one that has not loaded python-pkcs11 at all); use
    ``init_token_in_subprocess`` from a process that may have. Raises ``ConfigurationError`` (without
    PINs) on any failure.
    """
    padded = _padded_label(label)
    module = _Module(module_path)  # loading runs no PKCS#11 code; C_Initialize comes last
    so_buf = _pin_buffer(so_pin)
    user_buf = _pin_buffer(user_pin)
    rv = module.call("C_Initialize", None)
    if rv != _CKR_OK:
        _wipe(so_buf)
        _wipe(user_buf)
        if rv == _CKR_CRYPTOKI_ALREADY_INITIALIZED:
            # Someone else in this process owns the module: finalising it under them would break them.
            raise ConfigurationError(
                "PKCS#11 module is already initialised in this process; run init_token in a fresh process"
            )
        raise ConfigurationError(f"C_Initialize failed with CKR 0x{rv:X}")
    try:
        slot = _find_slot(module, padded)
        if slot is None:
            return False
        module.check("C_InitToken", _CK_ULONG(slot), so_buf, _CK_ULONG(len(so_buf)), padded)
        session = _CK_ULONG(0)
        module.check(
            "C_OpenSession",
            _CK_ULONG(slot),
            _CK_ULONG(_CKF_SERIAL_SESSION | _CKF_RW_SESSION),
            None,
            None,
            ctypes.byref(session),
        )
        try:
            module.check("C_Login", session, _CK_ULONG(_CKU_SO), so_buf, _CK_ULONG(len(so_buf)))
            try:
                module.check("C_InitPIN", session, user_buf, _CK_ULONG(len(user_buf)))
            finally:
                module.call("C_Logout", session)
        finally:
            module.call("C_CloseSession", session)
        return True
    finally:
        _wipe(so_buf)
        _wipe(user_buf)
        module.call("C_Finalize", None)


def _find_slot(module: _Module, padded_label: bytes) -> int | None:
    """The first slot with an uninitialised token, or None if ``padded_label`` is already in use."""
    count = _CK_ULONG(0)
    module.check("C_GetSlotList", ctypes.c_ubyte(1), None, ctypes.byref(count))
    slots = (_CK_ULONG * max(count.value, 1))()
    module.check("C_GetSlotList", ctypes.c_ubyte(1), slots, ctypes.byref(count))
    free: int | None = None
    for slot in list(slots)[: count.value]:
        info = _CkTokenInfo()
        module.check("C_GetTokenInfo", _CK_ULONG(slot), ctypes.byref(info))
        if info.flags & _CKF_TOKEN_INITIALIZED:
            if bytes(info.label) == padded_label:
                return None
        elif free is None:
            free = int(slot)
    if free is None:
        raise ConfigurationError("no free slot to initialise a token in")
    return free


def init_token_in_subprocess(
    module_path: str,
    label: str,
    so_pin: Secret,
    user_pin: Secret,
    conf_path: Path | None = None,
    *,
    timeout: float = 60.0,
) -> bool:
    """Run ``init_token`` in a fresh Python process (PINs on its stdin, never in argv or the environment).

    ``conf_path``, when given, becomes the child's ``SOFTHSM2_CONF``. Safe to call from a process that
    already uses the module through python-pkcs11.
    """
    env = softhsm_env(conf_path) if conf_path is not None else dict(os.environ)
    request = json.dumps(
        {"module": module_path, "label": label, "so_pin": so_pin.reveal(), "user_pin": user_pin.reveal()}
    )
    try:
        done = subprocess.run(  # fixed argv: our own interpreter and module
            [sys.executable, "-m", "signer.hsm.provision"],
            input=request,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigurationError("token initialisation timed out") from None
    if done.returncode in (EXIT_CREATED, EXIT_EXISTS):
        return done.returncode == EXIT_CREATED
    # The child only ever prints its own ConfigurationError messages, which never carry a PIN.
    reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
    raise ConfigurationError(f"token initialisation failed: {reason}")


@dataclass(frozen=True)
class SoftHsmToken:
    """A token made by ``provision_softhsm``: where it lives and how to log in (PINs stay masked)."""

    module_path: str
    conf_path: Path
    label: str
    so_pin: Secret
    user_pin: Secret

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        return softhsm_env(self.conf_path, base)


def provision_softhsm(
    base_dir: Path, labels: Iterable[str], *, module_path: str | None = None
) -> list[SoftHsmToken]:
    """A throw-away SoftHSM installation under ``base_dir``: config, token directory, one token per label.

    PINs are random. Tokens are initialised in subprocesses, so this is safe to call from a process
    that already uses python-pkcs11; but SoftHSM only sees tokens that existed when it was initialised,
    so create every token a process needs before that process first opens the module. The caller
    points ``SOFTHSM2_CONF`` at ``token.conf_path`` (``token.env()``) before using the tokens.
    """
    module = module_path or default_module_path()
    conf = base_dir / "softhsm2.conf"
    write_softhsm_conf(conf, base_dir / "tokens")
    tokens = []
    for label in labels:
        token = SoftHsmToken(
            module_path=module,
            conf_path=conf.resolve(),
            label=label,
            so_pin=Secret(secrets.token_urlsafe(18)),
            user_pin=Secret(secrets.token_urlsafe(18)),
        )
        if not init_token_in_subprocess(module, label, token.so_pin, token.user_pin, conf):
            raise ConfigurationError(f"token {label!r} already exists in {base_dir}")
        tokens.append(token)
    return tokens


def _main() -> int:
    """``python -m signer.hsm.provision``: JSON {module, label, so_pin, user_pin} on stdin.

    Exit 0 when the token was initialised, 10 when a token with that label already existed, 2 on
    failure with the reason (never a PIN) on stderr. ``signer init`` and ``softhsm/bootstrap`` use it.
    """
    try:
        request = json.loads(sys.stdin.read())
        module, label = str(request["module"]), str(request["label"])
        so_pin, user_pin = Secret(str(request["so_pin"]).strip()), Secret(str(request["user_pin"]).strip())
    except (ValueError, KeyError, TypeError):
        # The request holds PINs: say what is wrong with its shape, never echo it.
        print("expected JSON {module, label, so_pin, user_pin} on stdin", file=sys.stderr)
        return EXIT_FAILED
    try:
        created = init_token(module, label, so_pin, user_pin)
    except ConfigurationError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_CREATED if created else EXIT_EXISTS


if __name__ == "__main__":
    sys.exit(_main())
