"""One token's PKCS#11 state and the operations on it; every method runs on the HSM worker thread.

``TokenSession`` holds the loaded library, the token, the one long-lived logged-in session and a cache
of private-key handles for one ``Hsm``. It does the PKCS#11 work and raises python-pkcs11's exceptions
(or ``SignerError`` for checks of its own); ``signer.hsm.worker`` decides about retries and turns the
rest into service errors through ``signer.hsm.errormap``.

It must never be touched from any thread but the worker's: python-pkcs11 0.10.1 initialises the module
without locking callbacks and releases the GIL around each call, and two threads inside SoftHSM 2.6.1 at
once crash the process. It never closes a session through python-pkcs11 (that logs the whole process
out); sessions are closed and logged in through ``signer.hsm.ckapi``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pkcs11
import pkcs11.exceptions as pk
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from signer.config import Secret
from signer.errors import IntegrityError
from signer.hsm.ckapi import CkApi
from signer.hsm.curves import (
    EC_PARAMS,
    curve_from_params,
    decode_ec_point,
    hsm_id_bytes,
    validate_signature,
)
from signer.hsm.types import Curve, GeneratedKey, KeyAttributes

__all__ = ["SELF_TEST_DIGEST", "SELF_TEST_MESSAGE", "KeyNotOnToken", "TokenSession", "WorkerContext"]

log = logging.getLogger("signer.hsm")

SELF_TEST_MESSAGE = b"signer HSM self-test"
SELF_TEST_DIGEST = hashlib.sha256(SELF_TEST_MESSAGE).digest()
_SELF_TEST_LABEL = "signer-self-test"
_ID_BYTES = 16
# Key-encryption keys for secrets: one AES-256 key per scope, labelled with this prefix and the scope.
KEK_LABEL_PREFIX = "signer-kek:"
# A KEK made by a rotation before it becomes the scope's (``signer.hsm.kek_rotation``), and one a
# rotation replaced (kept so rows not yet rewrapped still open, until an operator destroys it).
KEK_NEXT_PREFIX = "signer-kek-next:"
KEK_RETIRED_PREFIX = "signer-kek-retired:"
_KEK_LABELS = (KEK_LABEL_PREFIX, KEK_NEXT_PREFIX, KEK_RETIRED_PREFIX)
# The audit checkpoint key (Ed25519, in the token, sign only): found by this label, made on first use.
AUDIT_KEY_LABEL = "signer-audit-checkpoint"
# An audit key made by a rotation (``audit_key`` never picks one of these as the first key). A retired
# audit key keeps its public half on the token, so the rollback anchor's notes still open; its private
# half is destroyed.
AUDIT_KEY_ROTATED_LABEL = "signer-audit-checkpoint-rotated"
_AUDIT_LABELS = (AUDIT_KEY_LABEL, AUDIT_KEY_ROTATED_LABEL)
# The audit field key (a generic secret, sign only with CKM_SHA256_HMAC): HMACs of audit fields that
# could identify a value or a token. Found by this label, made on first use.
AUDIT_HMAC_LABEL = "signer-audit-hmac"
# The audit anchor kept in the token (a CKO_DATA object): the newest checkpoint's size and hashes.
AUDIT_ANCHOR_LABEL = "signer-audit-anchor"
_HMAC_KEY_BYTES = 32
_KEK_BYTES = 32

_CONFINEMENT_ATTRS = [
    Attribute.SENSITIVE,
    Attribute.EXTRACTABLE,
    Attribute.ALWAYS_SENSITIVE,
    Attribute.NEVER_EXTRACTABLE,
    Attribute.LOCAL,
    Attribute.TOKEN,
]

# Start-up failures that come from another process writing the token file at the same moment.
# Never a wrong PIN: a real HSM locks the PIN after a few tries, so a refused PIN is never retried.
_RACY_AT_START = (
    pk.GeneralError,
    pk.NoSuchToken,
    pk.TokenNotRecognised,
    pk.TokenNotPresent,
    pk.FunctionFailed,
    pk.UserPinNotInitialized,
)
_CONNECT_ATTEMPTS = 5
_CONNECT_FIRST_BACKOFF = 0.05

# Users per loaded module and per token in this process, so that closing one Hsm neither finalises
# the library nor logs out a token another Hsm still uses. Worker thread only, like everything here.
_module_users: dict[str, int] = {}


class TokenFileLock:
    """An inter-process lock around everything that reads or writes the token's object files.

    SoftHSM 2.6's file store is not safe when one process writes objects while another indexes them:
    with two workers, keys were seen (and even left on disk) half-written, with an empty CKA_ID and
    CKA_SENSITIVE reading false, which made a starting worker refuse to run. Generation, deletion,
    searches, logins and re-initialisations therefore take this lock; signing with a cached handle
    does not touch the files and stays unlocked. The lock file sits beside SOFTHSM2_CONF (or at
    SIGNER_HSM_LOCK_FILE); with neither set (a vendor module) there is nothing to lock.
    """

    def __init__(self) -> None:
        path = os.environ.get("SIGNER_HSM_LOCK_FILE")
        conf = os.environ.get("SOFTHSM2_CONF")
        if not path and conf:
            path = os.path.join(os.path.dirname(os.path.abspath(conf)), ".signer-token.lock")
        self._path = path
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> TokenFileLock:
        if self._path is None:
            return self
        if self._depth == 0:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        if self._path is None:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


_token_users: dict[tuple[str, str], int] = {}


def _private_template(token: bool) -> dict[Attribute, Any]:
    return {
        Attribute.TOKEN: token,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
        # Refuses C_CopyObject, which could otherwise clone the key with weaker attributes.
        Attribute.COPYABLE: False,
    }


def _public_template(token: bool) -> dict[Attribute, Any]:
    return {
        Attribute.TOKEN: token,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
        Attribute.DERIVE: False,
    }


def _kek_template(label: str, key_id: bytes) -> dict[Attribute, Any]:
    """An AES key that lives in the token, never leaves it, and can only wrap and unwrap."""
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.LABEL: label,
        Attribute.ID: key_id,
        Attribute.VALUE_LEN: _KEK_BYTES,
        Attribute.WRAP: True,
        Attribute.UNWRAP: True,
        Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False,
        Attribute.SIGN: False,
        Attribute.VERIFY: False,
        Attribute.DERIVE: False,
        Attribute.COPYABLE: False,
    }


def _hmac_key_template(key_id: bytes) -> dict[Attribute, Any]:
    """A generic secret that lives in the token, never leaves it, and can only compute HMACs."""
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.LABEL: AUDIT_HMAC_LABEL,
        Attribute.ID: key_id,
        Attribute.VALUE_LEN: _HMAC_KEY_BYTES,
        Attribute.SIGN: True,
        Attribute.VERIFY: False,
        Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
        Attribute.COPYABLE: False,
    }


# A data key exists in the token only for the length of one wrap or unwrap, as a session object.
_DATA_KEY_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: False,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: False,
    Attribute.EXTRACTABLE: True,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
}

# What SoftHSM answers when a wrapped key was altered or wrapped under another key.
_UNWRAP_REFUSED = (
    pk.WrappedKeyInvalid,
    pk.WrappedKeyLenRange,
    pk.EncryptedDataInvalid,
    pk.EncryptedDataLenRange,
    pk.MechanismParamInvalid,
)


def _attributes_of(key: pkcs11.Object) -> KeyAttributes:
    # python-pkcs11 silently leaves out attributes the token cannot report; a missing one is read as
    # the unsafe value, so a key we cannot vouch for is never called confined.
    raw = key.get_attributes(_CONFINEMENT_ATTRS)
    return KeyAttributes(
        sensitive=raw.get(Attribute.SENSITIVE) is True,
        extractable=raw.get(Attribute.EXTRACTABLE) is not False,
        always_sensitive=raw.get(Attribute.ALWAYS_SENSITIVE) is True,
        never_extractable=raw.get(Attribute.NEVER_EXTRACTABLE) is True,
        local=raw.get(Attribute.LOCAL) is True,
        token=raw.get(Attribute.TOKEN) is True,
    )


def _curve_of(key: pkcs11.Object) -> Curve | None:
    raw = key.get_attributes([Attribute.KEY_TYPE, Attribute.EC_PARAMS])
    if raw.get(Attribute.KEY_TYPE) not in (KeyType.EC, KeyType.EC_EDWARDS):
        return None
    return curve_from_params(raw.get(Attribute.EC_PARAMS))


class KeyNotOnToken(Exception):
    """No private key with this id in this process's view of a token that is otherwise fine.

    Not yet an answer: SoftHSM's view can be stale (see ``TokenSession.reconnect``), so the worker may
    rescan once before it tells the caller ``key_not_found``.
    """


@dataclass(frozen=True)
class WorkerContext:
    """The live PKCS#11 objects, handed to ``Hsm._run_on_worker`` callables (tests and diagnostics)."""

    lib: Any
    token: Any
    session: Any
    ckapi: CkApi
    slot_id: int
    find_private_key: Callable[[str], Any]


class TokenSession:
    """The token behind one ``Hsm``: library, token, one logged-in session, cached key handles."""

    def __init__(self, module_path: str, token_label: str, pin: Secret) -> None:
        self.module_path = module_path
        # python-pkcs11 keeps one library object per path string: two spellings of one module (a
        # symlink) would initialise it twice. Resolve once; errors still name the configured path.
        self._module = os.path.realpath(module_path)
        self.token_label = token_label
        self._pin = pin
        self._lib: Any = None
        self._ckapi: CkApi | None = None
        self._token: Any = None
        self._session: Any = None
        self._keys: dict[str, tuple[Any, Curve | None]] = {}
        self._keks: dict[str, Any] = {}
        self._hmac_key: Any = None
        self._registered = False
        self._files = TokenFileLock()
        # When this process last read the token's object list from scratch (connect or reconnect).
        self.indexed_at = float("-inf")

    def __repr__(self) -> str:
        return f"TokenSession(module={self.module_path!r}, token={self.token_label!r})"

    @property
    def connected(self) -> bool:
        return self._session is not None

    # -- lifecycle ---------------------------------------------------------------------------------

    def connect(self, deadline: float) -> None:
        with self._files:
            self._connect_unlocked(deadline)

    def _connect_unlocked(self, deadline: float) -> None:
        """Load the module, find the token by label, open the session and log in (start-up).

        SoftHSM rewrites the token file on every login, and a process that reads it at that moment
        (C_Initialize, C_Login) gets CKR_GENERAL_ERROR or does not see the token at all (measured:
        about 2% of starts while another process logs in; processes of one service start together).
        Such failures are retried from a fresh C_Initialize a few times with a short back-off; a
        wrong PIN or a module that cannot be loaded is never retried, and neither is anything when
        another Hsm in this process already uses the module (re-initialising it would cut them off).
        """
        delay = _CONNECT_FIRST_BACKOFF
        attempts = 1 if _module_users.get(self._module) else _CONNECT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._load_and_open()
                break
            except _RACY_AT_START:
                if attempt == attempts or time.monotonic() + delay >= deadline:
                    raise
                log.warning("HSM token %r not readable yet (attempt %d); retrying", self.token_label, attempt)
                time.sleep(delay)
                delay *= 2
        self._register()
        self.indexed_at = time.monotonic()

    def _load_and_open(self) -> None:
        """Load (or re-initialise) the module, find the token and open a logged-in session."""
        if self._lib is None:
            self._lib = pkcs11.lib(self._module)
        else:
            self._reinitialise()
        if self._ckapi is None:
            self._ckapi = CkApi(self._module)
        self._open_session(find_token=True)

    def _reinitialise(self) -> None:
        try:
            self._lib.finalize()
        except pk.PKCS11Error:
            log.debug("C_Finalize failed; initialising anyway")
        self._lib.initialize()

    def reopen_session(self) -> None:
        with self._files:
            self._reopen_session_unlocked()

    def _reopen_session_unlocked(self) -> None:
        """Replace a lost session (closed, logged out, handle invalid) with a new logged-in one."""
        self._drop_session()
        self._open_session(find_token=False)

    def reconnect(self) -> None:
        with self._files:
            self._reconnect_unlocked()

    def _reconnect_unlocked(self) -> None:
        """Re-initialise the library and start over: the cure once the token was gone, and a rescan.

        SoftHSM keeps failing (CKR_GENERAL_ERROR from C_GetTokenInfo, invalid object handles) after a
        token directory that vanished comes back, until the library is finalised and initialised
        again. It is also the only way to make SoftHSM 2.6 re-read a token's object list: a process
        re-indexes only when the token's generation counter moved since it last looked, and its own
        writes move that counter without re-indexing, so keys another process created in between stay
        invisible to it for good. Other ``Hsm`` objects on the same module lose their sessions too and
        log in again.
        """
        # Handles do not survive C_Finalize: SoftHSM numbers objects afresh, so a kept handle could
        # name another key (a KEK's stale handle made unwraps fail as altered data keys).
        self.forget_handles()
        self._session = None
        self._token = None
        self._load_and_open()
        self._register()
        self.indexed_at = time.monotonic()

    def close(self) -> None:
        with self._files:
            self._close_unlocked()

    def _close_unlocked(self) -> None:
        """Log out (unless another Hsm uses the token), close the session, finalise if last user."""
        if self._registered:
            self._registered = False
            token_key = (self._module, self.token_label)
            _token_users[token_key] -= 1
            _module_users[self._module] -= 1
            last_on_token = _token_users[token_key] == 0
            last_on_module = _module_users[self._module] == 0
        else:
            last_on_token = last_on_module = False
        session, self._session = self._session, None
        self.forget_handles()
        if session is not None and self._ckapi is not None:
            if last_on_token:
                self._quietly(self._ckapi.logout, session.handle)
            self._quietly(self._ckapi.close_session, session.handle)
        if last_on_module and self._lib is not None:
            self._quietly(self._lib.finalize)
        self._token = None

    def abandon(self) -> None:
        """After a failed ``connect``: finalise the module unless another Hsm in the process uses it."""
        self._session = None
        self._token = None
        if not self._registered and self._lib is not None and not _module_users.get(self._module):
            self._quietly(self._lib.finalize)

    def context(self) -> WorkerContext:
        return WorkerContext(
            lib=self._lib,
            token=self._token,
            session=self._session,
            ckapi=self._api,
            slot_id=int(self._token.slot.slot_id),
            find_private_key=lambda hsm_id: self._private_key(hsm_id)[0],
        )

    def forget_handles(self) -> None:
        self._keys.clear()
        self._keks.clear()
        self._hmac_key = None

    def probe_token(self) -> None:
        """C_GetTokenInfo on our slot: raises when the token is gone (SoftHSM: CKR_GENERAL_ERROR)."""
        self._token.slot.get_token()

    def _register(self) -> None:
        if not self._registered:
            self._registered = True
            _module_users[self._module] = _module_users.get(self._module, 0) + 1
            key = (self._module, self.token_label)
            _token_users[key] = _token_users.get(key, 0) + 1

    @property
    def _api(self) -> CkApi:
        if self._ckapi is None:
            raise pk.PKCS11Error("Initialisation error (not initialized): module not loaded")
        return self._ckapi

    def _open_session(self, *, find_token: bool) -> None:
        if find_token or self._token is None:
            self._token = self._lib.get_token(token_label=self.token_label)
        # Opened without a PIN: python-pkcs11 would leak the handle if its own login failed, and its
        # close() logs out. The login is ours, on this handle; "already logged in" is fine (per process).
        session = self._token.open(rw=True)
        try:
            self._api.login_user(session.handle, self._pin)
        except BaseException:
            self._quietly(self._api.close_session, session.handle)
            raise
        self._session = session

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        self.forget_handles()
        if session is not None and self._ckapi is not None:
            self._quietly(self._ckapi.close_session, session.handle)

    @staticmethod
    def _quietly(fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except pk.PKCS11Error as exc:
            log.debug("ignored %s during HSM cleanup", type(exc).__name__)

    # -- health ------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Session valid and logged in, token answering; raises the PKCS#11 error that says which not."""
        info = self._api.session_info(self._session.handle)
        if not info.user_logged_in:
            raise pk.UserNotLoggedIn()
        self.probe_token()

    # -- keys --------------------------------------------------------------------------------------

    def _search(self, template: dict[Attribute, Any]) -> list[Any]:
        with self._files:
            return self.__search_unlocked(template)

    def __search_unlocked(self, template: dict[Attribute, Any]) -> list[Any]:
        """C_FindObjects*, fully consumed here, on a session known to be valid.

        python-pkcs11 leaves a search it could not start marked active (with its session lock held)
        and finishes it from ``__del__``, i.e. from whichever thread frees it. Checking the session
        first turns the usual cause (a lost session) into a clean error before any search exists.
        """
        self._api.session_info(self._session.handle)
        return list(self._session.get_objects(template))

    def _private_key(self, hsm_id: str) -> tuple[Any, Curve | None]:
        cached = self._keys.get(hsm_id)
        if cached is not None:
            return cached
        found = self._search({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: hsm_id_bytes(hsm_id)})
        if not found:
            # An empty search is also what SoftHSM answers when the session is logged out (private
            # objects are invisible) or the token directory is gone: check both before saying "no key".
            self.ping()
            raise KeyNotOnToken()
        if len(found) > 1:
            raise IntegrityError("several private keys share one id on the token")
        entry = (found[0], _curve_of(found[0]))
        self._keys[hsm_id] = entry
        return entry

    def _generate(self, curve: Curve, label: str, *, token: bool) -> tuple[bytes, Any, Any]:
        key_id = os.urandom(_ID_BYTES)
        if curve is Curve.ED25519:
            key_type, mechanism = KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN
        else:
            key_type, mechanism = KeyType.EC, Mechanism.EC_KEY_PAIR_GEN
        params = self._session.create_domain_parameters(
            key_type, {Attribute.EC_PARAMS: EC_PARAMS[curve]}, local=True
        )
        public, private = params.generate_keypair(
            id=key_id,
            label=label,
            store=token,
            mechanism=mechanism,
            public_template=_public_template(token),
            private_template=_private_template(token),
        )
        return key_id, public, private

    def _catch_up(self) -> None:
        """Let SoftHSM take in other processes' changes before we write (a search re-indexes).

        Our own write moves the token's generation counter without re-indexing; catching up first
        narrows the window in which another process's new key could be hidden from us to the write
        itself (the worker's rescan on a miss covers that remainder).
        """
        self._search({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: b"\x00"})

    def generate_key(self, curve: Curve, label: str) -> GeneratedKey:
        with self._files:
            return self._generate_key_unlocked(curve, label)

    def _generate_key_unlocked(self, curve: Curve, label: str) -> GeneratedKey:
        self._catch_up()
        key_id, public, private = self._generate(curve, label, token=True)
        hsm_id = key_id.hex()
        public_key = decode_ec_point(curve, public[Attribute.EC_POINT])
        attributes = _attributes_of(private)
        self._keys[hsm_id] = (private, curve)
        return GeneratedKey(hsm_id=hsm_id, curve=curve, public_key=public_key, attributes=attributes)

    def sign(self, hsm_id: str, curve: Curve, data: bytes) -> bytes:
        key, key_curve = self._private_key(hsm_id)
        if key_curve is not curve:
            raise IntegrityError("the key on the token is not of the requested curve", code="curve_mismatch")
        mechanism = Mechanism.EDDSA if curve is Curve.ED25519 else Mechanism.ECDSA
        return validate_signature(curve, key.sign(data, mechanism=mechanism))

    def key_attributes(self, hsm_id: str) -> KeyAttributes:
        return _attributes_of(self._private_key(hsm_id)[0])

    def _private_keys(self) -> Iterator[Any]:
        yield from self._search({Attribute.CLASS: ObjectClass.PRIVATE_KEY})

    def list_keys(self) -> list[tuple[str, str, Curve | None]]:
        with self._files:
            return self._list_keys_unlocked()

    def _list_keys_unlocked(self) -> list[tuple[str, str, Curve | None]]:
        keys = []
        for key in self._private_keys():
            raw = key.get_attributes([Attribute.ID, Attribute.LABEL, Attribute.KEY_TYPE, Attribute.EC_PARAMS])
            curve = None
            if raw.get(Attribute.KEY_TYPE) in (KeyType.EC, KeyType.EC_EDWARDS):
                curve = curve_from_params(raw.get(Attribute.EC_PARAMS))
            keys.append(
                (bytes(raw.get(Attribute.ID) or b"").hex(), str(raw.get(Attribute.LABEL) or ""), curve)
            )
        return sorted(keys)

    def unconfined_keys(self) -> list[str]:
        with self._files:
            return self._unconfined_keys_unlocked()

    def _unconfined_keys_unlocked(self) -> list[str]:
        unconfined = []
        for key in self._private_keys():
            if not _attributes_of(key).confined:
                raw_id = key.get_attributes([Attribute.ID]).get(Attribute.ID)
                unconfined.append(bytes(raw_id or b"").hex())
        return sorted(unconfined)

    def self_test(self, curve: Curve) -> tuple[bytes, bytes, bytes]:
        with self._files:
            return self._self_test_unlocked(curve)

    def _self_test_unlocked(self, curve: Curve) -> tuple[bytes, bytes, bytes]:
        _, public, private = self._generate(curve, _SELF_TEST_LABEL, token=False)
        try:
            public_key = decode_ec_point(curve, public[Attribute.EC_POINT])
            if curve is Curve.ED25519:
                data, mechanism = SELF_TEST_MESSAGE, Mechanism.EDDSA
            else:
                data, mechanism = SELF_TEST_DIGEST, Mechanism.ECDSA
            signature = validate_signature(curve, private.sign(data, mechanism=mechanism))
        finally:
            for obj in (private, public):
                self._quietly(obj.destroy)
        return public_key, data, signature

    def destroy_key(self, hsm_id: str) -> None:
        with self._files:
            self._destroy_key_unlocked(hsm_id)

    def _destroy_key_unlocked(self, hsm_id: str) -> None:
        key_id = hsm_id_bytes(hsm_id)
        objects = self._search({Attribute.ID: key_id})
        private = [o for o in objects if o.object_class == ObjectClass.PRIVATE_KEY]
        if not private:
            self.ping()
            raise KeyNotOnToken()
        self._keys.pop(hsm_id, None)
        self._catch_up()
        # Private half first: if anything fails after it, what remains is a harmless public key.
        for obj in sorted(objects, key=lambda o: o.object_class != ObjectClass.PRIVATE_KEY):
            obj.destroy()

    # -- the audit checkpoint key -------------------------------------------------------------------

    def audit_key(self) -> GeneratedKey:
        with self._files:
            return self._audit_key_unlocked()

    def _audit_key_unlocked(self) -> GeneratedKey:
        """The audit key (Ed25519 under ``AUDIT_KEY_LABEL``), generated in the token the first time.

        Like a KEK, two processes generating at once leave two keys: every process then uses the one
        with the smallest id, so all sign with one key.
        """
        template = {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: AUDIT_KEY_LABEL}
        found = self._search(template)
        if not found:
            self._catch_up()
            self._generate(Curve.ED25519, AUDIT_KEY_LABEL, token=True)
            found = self._search(template)
        ids = sorted(bytes(k.get_attributes([Attribute.ID]).get(Attribute.ID) or b"") for k in found)
        ids = [i for i in ids if i]
        if not ids:
            raise IntegrityError("the audit key on the token has no id", code="audit_key_invalid")
        private, curve = self._private_key(ids[0].hex())
        if curve is not Curve.ED25519:
            raise IntegrityError("the audit key on the token is not Ed25519", code="audit_key_invalid")
        public = self._search({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: ids[0]})
        if len(public) != 1:
            raise IntegrityError("the audit key's public half is not on the token", code="audit_key_invalid")
        return GeneratedKey(
            hsm_id=ids[0].hex(),
            curve=Curve.ED25519,
            public_key=decode_ec_point(Curve.ED25519, public[0][Attribute.EC_POINT]),
            attributes=_attributes_of(private),
        )

    def new_audit_key(self) -> GeneratedKey:
        """A fresh Ed25519 audit key for a rotation (sensitive, never extractable, sign only)."""
        with self._files:
            return self._generate_key_unlocked(Curve.ED25519, AUDIT_KEY_ROTATED_LABEL)

    def _audit_private(self, hsm_id: str) -> Any:
        found = self._search({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: hsm_id_bytes(hsm_id)})
        found = [
            k for k in found if str(k.get_attributes([Attribute.LABEL]).get(Attribute.LABEL)) in _AUDIT_LABELS
        ]
        if not found:
            self.ping()
            raise KeyNotOnToken()
        return found[0]

    def audit_key_by_id(self, hsm_id: str) -> GeneratedKey:
        """An audit key (first or rotated) by its token id: public half and attributes; ``KeyNotOnToken``
        once its private half is gone."""
        with self._files:
            private = self._audit_private(hsm_id)
            public = self._search(
                {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: hsm_id_bytes(hsm_id)}
            )
            if len(public) != 1 or _curve_of(private) is not Curve.ED25519:
                raise IntegrityError("the audit key on the token is not whole", code="audit_key_invalid")
            return GeneratedKey(
                hsm_id=hsm_id,
                curve=Curve.ED25519,
                public_key=decode_ec_point(Curve.ED25519, public[0][Attribute.EC_POINT]),
                attributes=_attributes_of(private),
            )

    def audit_public_keys(self) -> list[tuple[str, bytes]]:
        """(hsm_id, Ed25519 public key) of every audit key's public half on the token, retired ones too."""
        out = []
        with self._files:
            for label in _AUDIT_LABELS:
                for obj in self._search({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label}):
                    raw_id = bytes(obj.get_attributes([Attribute.ID]).get(Attribute.ID) or b"")
                    if raw_id:
                        out.append((raw_id.hex(), decode_ec_point(Curve.ED25519, obj[Attribute.EC_POINT])))
        return sorted(out)

    def destroy_audit_private(self, hsm_id: str) -> None:
        """Destroy a retired audit key's private half (its public half stays); nothing if already gone."""
        with self._files:
            try:
                private = self._audit_private(hsm_id)
            except KeyNotOnToken:
                return
            self._keys.pop(hsm_id, None)
            self._catch_up()
            private.destroy()

    # -- key-encryption keys (secrets) -------------------------------------------------------------

    def kek_for_scope(self, scope: str) -> str:
        with self._files:
            return self._kek_for_scope_unlocked(scope)

    def _kek_for_scope_unlocked(self, scope: str) -> str:
        """The hex CKA_ID of the scope's KEK, generated in the token the first time it is asked for.

        Found by label on later starts. Two processes that generate one at the same moment leave two
        keys under one label: every process then picks the one with the smallest id, and anything
        wrapped under the other still opens, because a version stores the id of the KEK that wrapped it.
        """
        label = KEK_LABEL_PREFIX + scope
        found = self._search({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label})
        if not found:
            self._catch_up()
            key_id = os.urandom(_ID_BYTES)
            key = self._session.generate_key(
                KeyType.AES,
                _KEK_BYTES * 8,
                id=key_id,
                label=label,
                store=True,
                mechanism=Mechanism.AES_KEY_GEN,
                template=_kek_template(label, key_id),
            )
            self._keks[key_id.hex()] = key
            return key_id.hex()
        ids = sorted(bytes(k.get_attributes([Attribute.ID]).get(Attribute.ID) or b"").hex() for k in found)
        ids = [i for i in ids if i]
        if not ids:
            raise IntegrityError("a key-encryption key on the token has no id", code="kek_invalid")
        return ids[0]

    def _kek(self, kek_id: str) -> Any:
        cached = self._keks.get(kek_id)
        if cached is not None:
            return cached
        found = self._search({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.ID: hsm_id_bytes(kek_id)})
        found = [
            k
            for k in found
            if str(k.get_attributes([Attribute.LABEL]).get(Attribute.LABEL) or "").startswith(_KEK_LABELS)
        ]
        if not found:
            self.ping()
            raise KeyNotOnToken()
        if len(found) > 1:
            raise IntegrityError("several key-encryption keys share one id on the token", code="kek_invalid")
        self._keks[kek_id] = found[0]
        return found[0]

    def kek_attributes(self, kek_id: str) -> KeyAttributes:
        return _attributes_of(self._kek(kek_id))

    def wrap_data_key(self, kek_id: str, data_key: bytes) -> bytes:
        """``data_key`` wrapped under the KEK with CKM_AES_KEY_WRAP_PAD (RFC 5649).

        The raw key is imported as a session object only to be wrapped, and destroyed at once.
        """
        kek = self._kek(kek_id)
        template = dict(_DATA_KEY_TEMPLATE)
        template.update({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES})
        template[Attribute.VALUE] = data_key
        imported = self._session.create_object(template)
        try:
            return bytes(kek.wrap_key(imported, mechanism=Mechanism.AES_KEY_WRAP_PAD))
        finally:
            self._quietly(imported.destroy)

    def unwrap_data_key(self, kek_id: str, wrapped: bytes) -> bytes:
        """The data key ``wrapped`` holds: unwrapped into a session object, read, and destroyed."""
        unwrapped = self._unwrap(kek_id, wrapped, dict(_DATA_KEY_TEMPLATE))
        try:
            return bytes(unwrapped[Attribute.VALUE])
        finally:
            self._quietly(unwrapped.destroy)

    def _unwrap(self, kek_id: str, wrapped: bytes, template: dict[Attribute, Any]) -> Any:
        """``wrapped`` unwrapped by the KEK into a session object (the caller destroys it).

        A refusal through a KEK handle kept from earlier is tried once more through a handle found
        afresh: after another user of the module re-initialised it, a kept handle can name another
        key, and that must not read as an altered data key.
        """
        kept = kek_id in self._keks
        for attempt in (0, 1):
            kek = self._kek(kek_id)
            try:
                return kek.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.AES,
                    wrapped,
                    mechanism=Mechanism.AES_KEY_WRAP_PAD,
                    store=False,
                    template=template,
                )
            except (*_UNWRAP_REFUSED, pk.GeneralError) as exc:
                if kept and attempt == 0:
                    self._keks.pop(kek_id, None)
                    continue
                if isinstance(exc, pk.GeneralError):
                    # SoftHSM 2.6 answers CKR_GENERAL_ERROR when the RFC 5649 integrity check fails.
                    # If the session and token still answer, that is what it was; otherwise the
                    # worker's recovery runs.
                    self.ping()
                raise IntegrityError("a sealed data key does not open", code="secret_integrity") from None
        raise AssertionError("unreachable")

    # -- KEK rotation (``signer.services.kek_rotation``) --------------------------------------------

    def new_kek(self, scope: str) -> str:
        """A fresh KEK for ``scope``, labelled as the next one (not yet used to seal anything)."""
        with self._files:
            self._catch_up()
            label = KEK_NEXT_PREFIX + scope
            key_id = os.urandom(_ID_BYTES)
            key = self._session.generate_key(
                KeyType.AES,
                _KEK_BYTES * 8,
                id=key_id,
                label=label,
                store=True,
                mechanism=Mechanism.AES_KEY_GEN,
                template=_kek_template(label, key_id),
            )
            self._keks[key_id.hex()] = key
            return key_id.hex()

    def activate_kek(self, scope: str, new_id: str) -> list[str]:
        """Make ``new_id`` the KEK ``kek_for_scope`` answers, and relabel every other one of the scope as
        retired; the ids retired now. Idempotent (a resumed rotation runs it again).

        The new key takes the scope's label before the old ones leave it, so a crash in between leaves
        two candidates (both open what they wrapped), never none (which would make a new KEK).
        """
        with self._files:
            new = self._kek(new_id)
            active = KEK_LABEL_PREFIX + scope
            new[Attribute.LABEL] = active
            retired: list[str] = []
            for key in self._search({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: active}):
                key_id = bytes(key.get_attributes([Attribute.ID]).get(Attribute.ID) or b"").hex()
                if key_id != new_id:
                    key[Attribute.LABEL] = KEK_RETIRED_PREFIX + scope
                    retired.append(key_id)
            return sorted(retired)

    def rewrap_data_key(self, old_id: str, new_id: str, wrapped: bytes) -> bytes:
        """``wrapped`` (a data key under ``old_id``) wrapped under ``new_id``, inside the token.

        The data key is unwrapped into a sensitive session object (its value cannot be read out), wrapped
        at once under the new KEK and destroyed: it never enters this process in the clear.
        """
        template = dict(_DATA_KEY_TEMPLATE)
        template[Attribute.SENSITIVE] = True
        unwrapped = self._unwrap(old_id, wrapped, template)
        try:
            rewrapped = bytes(self._kek(new_id).wrap_key(unwrapped, mechanism=Mechanism.AES_KEY_WRAP_PAD))
        finally:
            self._quietly(unwrapped.destroy)
        # Written back only if it opens under the new KEK found afresh (RFC 5649's integrity check): a
        # row must never hold a key wrapped under a KEK other than the one it names.
        self._keks.pop(new_id, None)
        try:
            check = self._unwrap(new_id, rewrapped, template)
        except IntegrityError:
            raise IntegrityError("a rewrapped data key does not open", code="kek_invalid") from None
        self._quietly(check.destroy)
        return rewrapped

    def destroy_retired_kek(self, kek_id: str) -> None:
        """Destroy a retired KEK (never the one a scope seals with: refused unless labelled retired)."""
        with self._files:
            key = self._kek(kek_id)
            label = str(key.get_attributes([Attribute.LABEL]).get(Attribute.LABEL) or "")
            if not label.startswith(KEK_RETIRED_PREFIX):
                raise IntegrityError("only a retired key-encryption key is destroyed", code="kek_not_retired")
            self._catch_up()
            key.destroy()
            self._keks.pop(kek_id, None)

    # -- the audit field key and the audit anchor ----------------------------------------------------

    def audit_hmac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under the audit field key (generated in the token the first time).

        Two processes generating at once leave two keys: every process uses the one with the smallest
        id, so all compute the same HMACs.
        """
        key = self._hmac_key
        if key is None:
            with self._files:
                template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: AUDIT_HMAC_LABEL}
                found = self._search(template)
                if not found:
                    self._catch_up()
                    key_id = os.urandom(_ID_BYTES)
                    self._session.generate_key(
                        KeyType.GENERIC_SECRET,
                        _HMAC_KEY_BYTES * 8,
                        id=key_id,
                        label=AUDIT_HMAC_LABEL,
                        store=True,
                        mechanism=Mechanism.GENERIC_SECRET_KEY_GEN,
                        template=_hmac_key_template(key_id),
                    )
                    found = self._search(template)
                ranked = sorted(
                    (bytes(k.get_attributes([Attribute.ID]).get(Attribute.ID) or b""), i)
                    for i, k in enumerate(found)
                )
                ranked = [r for r in ranked if r[0]]
                if not ranked:
                    raise IntegrityError(
                        "the audit field key on the token has no id", code="audit_key_invalid"
                    )
                key = found[ranked[0][1]]
                if not _attributes_of(key).confined:
                    raise IntegrityError(
                        "the audit field key could leave the token", code="audit_key_invalid"
                    )
                self._hmac_key = key
        return bytes(key.sign(data, mechanism=Mechanism.SHA256_HMAC))

    def read_anchor(self) -> bytes | None:
        """The value of the audit anchor data object, or None when the token holds none."""
        with self._files:
            found = self._search({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: AUDIT_ANCHOR_LABEL})
            if not found:
                return None
            return max(bytes(obj[Attribute.VALUE]) for obj in found)

    def write_anchor(self, value: bytes, *, force: bool) -> bool:
        """Store ``value`` (8 bytes of big-endian size first) as the audit anchor, unless the token
        already holds one of the same or a larger size (``force``: replace whatever is there, for an
        acknowledged rollback). True when written."""
        with self._files:
            template = {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: AUDIT_ANCHOR_LABEL}
            found = self._search(template)
            if not force and any(bytes(o[Attribute.VALUE])[:8] >= value[:8] for o in found):
                return False
            self._catch_up()
            self._session.create_object(
                {
                    Attribute.CLASS: ObjectClass.DATA,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.MODIFIABLE: True,
                    Attribute.LABEL: AUDIT_ANCHOR_LABEL,
                    Attribute.APPLICATION: "signer",
                    Attribute.VALUE: value,
                }
            )
            for obj in found:
                obj.destroy()
            return True
