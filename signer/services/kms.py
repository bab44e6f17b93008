"""The AWS KMS Sign API for tools that speak only KMS: SigV4 credentials issued to principals, and the
four operations such a tool calls (``Sign``, ``GetPublicKey``, ``DescribeKey``, ``ListKeys``).

A KMS credential is an access key id and a secret access key that an admin issues to a service
principal. The secret must be readable again (SigV4 is an HMAC under it), so it is stored sealed like a
secret's field: AES-256-GCM under a fresh data key wrapped by a token-held KEK, bound to the access key
id; the principal, expiry and revocation are a ``tokens`` row of kind ``kms`` with the access key id as
its id (``DELETE /v1/tokens/{access_key_id}`` revokes it, disabling the principal ends it, and the
signing pipeline's commit re-checks it like a bearer token). ``Sign`` is blind digest signing: it runs
as ``sign_raw`` through the one pipeline, so it needs the ``sign_raw`` grant and a ``raw_digest`` rule
in force, and is limited, approved and audited (``sign.raw``) exactly as ``POST /v1/keys/{id}/sign/
digest``. Answers and errors take the shapes botocore parses (``__type``, ``message``). Never returns
or logs a secret access key except once, in the answer to its issue.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from signer.audit import EventTarget
from signer.crypto.envelope import FieldBinding, new_data_key, open_field, seal_field
from signer.crypto.sigv4 import check_sigv4, der_signature, parse_sigv4, public_key_spki
from signer.errors import Conflict, Forbidden, InvalidRequest, NotFound, SignerError, Unauthenticated
from signer.hsm import KeyWrapper
from signer.identity import Role
from signer.services.auth import AuthService
from signer.services.context import Caller, Clock, RequestContext, iso, require_role
from signer.services.keys import KeyService
from signer.services.signing import SigningService
from signer.store import KmsCredentialRecord, Store, TokenRecord, Writer

__all__ = ["KmsService", "kms_error_type"]

KMS_KEK_SCOPE = "signer-kms-credentials"
ACCOUNT = "000000000000"  # the account id in the ARNs the signer answers (there is no AWS account)
SECRET_FIELD = "secret_access_key"  # noqa: S105 - a field name, not a secret
MAX_RAW_MESSAGE = 4096  # KMS's own limit for MessageType RAW
_CACHED_SECRETS = 1024
_GENERIC = "missing or invalid credentials"
_SPECS = {"secp256k1": "ECC_SECG_P256K1", "p256": "ECC_NIST_P256"}
TARGETS = ("Sign", "GetPublicKey", "DescribeKey", "ListKeys")
_DISABLED_CODES = frozenset({"key_disabled", "key_deactivated", "key_pre_activation"})


# The key's state as AWS names one; every state but active is not enabled, a destroyed key unavailable.
_KMS_KEY_STATE = {"active": "Enabled", "destroyed": "Unavailable", "destroyed_compromised": "Unavailable"}


def kms_error_type(exc: SignerError) -> str:
    """The KMS exception name a client's SDK maps ``exc`` to (botocore reads ``__type``)."""
    if exc.code in ("signature_invalid", "signature_expired"):
        return "InvalidSignatureException"
    if exc.code in _DISABLED_CODES:
        # Suspended, deactivated or not yet active: AWS's disabled key. A compromised or destroyed key
        # falls to the 409 below (KMSInvalidStateException, as for a key pending deletion).
        return "DisabledException"
    return {
        400: "ValidationException",
        401: "UnrecognizedClientException",
        403: "AccessDeniedException",
        404: "NotFoundException",
        409: "KMSInvalidStateException",
        413: "ValidationException",
        422: "UnsupportedOperationException",
        429: "ThrottlingException",
        504: "DependencyTimeoutException",
    }.get(exc.status, "KMSInternalException")


def _binding(access_key_id: str, kek_id: str) -> FieldBinding:
    return FieldBinding(f"kms-credential/{access_key_id}", 1, SECRET_FIELD, kek_id)


def _arn(region: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT}:key/{key_id}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _string(document: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise InvalidRequest(f"{name} is required and must be a string", code="invalid_field", field=name)
    return value


class KmsService:
    def __init__(
        self,
        store: Store,
        auth: AuthService,
        wrapper: KeyWrapper,
        keys: KeyService,
        signing: SigningService,
        *,
        credential_ttl: int,
        clock: Clock,
    ) -> None:
        self._store = store
        self._auth = auth
        self._wrapper = wrapper
        self._keys = keys
        self._signing = signing
        self._ttl = credential_ttl
        self._clock = clock
        # access key id -> (the sealed secret it was opened from, the secret): one unwrap per process.
        self._secrets: dict[str, tuple[bytes, bytes]] = {}
        self._digest_key = auth.derived_secret("kms-credential")

    # -- credentials ------------------------------------------------------------------------------

    async def issue(
        self, ctx: RequestContext, principal_id: str, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        """A new credential for a service principal; the secret access key is shown once, here."""
        require_role(ctx, Role.ADMIN)
        now = self._clock()
        ttl = self._ttl if ttl_seconds is None else ttl_seconds
        access_key_id = "AKSG" + base64.b32encode(secrets.token_bytes(10)).decode("ascii")
        secret = base64.b64encode(secrets.token_bytes(30)).decode("ascii")
        kek_id = await self._wrapper.kek_for_scope(KMS_KEK_SCOPE)
        data_key = new_data_key()
        sealed = seal_field(data_key, _binding(access_key_id, kek_id), secret.encode("ascii"))
        wrapped = await self._wrapper.wrap_data_key(kek_id, data_key)
        expires = now + timedelta(seconds=ttl) if ttl > 0 else None

        async def unit(writer: Writer) -> dict[str, Any]:
            principal = await writer.principals.get(principal_id)
            if principal is None:
                raise NotFound("no such principal", code="principal_not_found")
            if principal.disabled_at is not None:
                raise Forbidden("principal is disabled", code="principal_disabled")
            if principal.role != Role.SERVICE.value:
                raise Conflict("KMS credentials are for service principals", code="role_mismatch")
            digest = hmac.new(self._digest_key, secret.encode("ascii"), hashlib.sha256).digest()
            await writer.tokens.insert(
                TokenRecord(
                    id=access_key_id,
                    principal_id=principal.id,
                    kind="kms",
                    digest=digest,
                    family_id=access_key_id,
                    created_at=now,
                    expires_at=expires,
                )
            )
            await writer.kms_credentials.insert(KmsCredentialRecord(access_key_id, kek_id, wrapped, sealed))
            writer.append_audit(
                ctx.audit_event(
                    "kms_credential.issue",
                    now,
                    resource=EventTarget("principal", principal.id),
                    principal_id=principal.id,
                    access_key_id=access_key_id,
                    expires_at=iso(expires) if expires is not None else None,
                )
            )
            return {
                "principal_id": principal.id,
                "access_key_id": access_key_id,
                "secret_access_key": secret,
                "expires_at": iso(expires) if expires is not None else None,
                "revoke": f"DELETE /v1/tokens/{access_key_id}",
            }

        return await self._store.submit(unit)

    async def authenticate(
        self,
        authorization: str | None,
        request_id: str,
        *,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[RequestContext, str]:
        """The caller behind a SigV4-signed request, and the region it signed for."""
        credential = parse_sigv4(authorization)
        if credential.service != "kms":
            raise Unauthenticated(_GENERIC)
        async with self._store.read() as reader:
            epoch = await reader.epoch()
            token = await reader.tokens.get(credential.access_key_id)
            stored = await reader.kms_credentials.get(credential.access_key_id)
        if token is None or stored is None or token.kind != "kms":
            raise Unauthenticated(_GENERIC)
        secret = await self._secret(stored)
        check_sigv4(
            credential,
            secret,
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            now=self._clock(),
        )
        if token.revoked_at is not None:
            raise Unauthenticated("credential has been revoked", code="token_revoked")
        if token.expires_at is not None and self._clock() >= token.expires_at:
            raise Unauthenticated("credential has expired", code="token_expired")
        if token.principal_disabled_at is not None:
            raise Unauthenticated("principal is disabled", code="principal_disabled")
        caller = Caller(
            principal_id=token.principal_id,
            name=token.principal_name,
            role=Role(token.principal_role),
            token_id=token.id,
        )
        return RequestContext(request_id=request_id, caller=caller, epoch=epoch), credential.region

    async def _secret(self, stored: KmsCredentialRecord) -> bytes:
        hit = self._secrets.get(stored.id)
        if hit is not None and hit[0] == stored.sealed_secret:
            return hit[1]
        data_key = await self._wrapper.unwrap_data_key(stored.kek_id, stored.wrapped_key)
        secret = open_field(data_key, _binding(stored.id, stored.kek_id), stored.sealed_secret)
        if len(self._secrets) >= _CACHED_SECRETS:
            self._secrets.pop(next(iter(self._secrets)))
        self._secrets[stored.id] = (stored.sealed_secret, secret)
        return secret

    # -- the operations -----------------------------------------------------------------------------

    async def handle(
        self, ctx: RequestContext, target: str, document: Mapping[str, Any], region: str
    ) -> dict[str, Any]:
        if target == "Sign":
            return await self._sign(ctx, document, region)
        if target == "GetPublicKey":
            return await self._get_public_key(ctx, document, region)
        if target == "DescribeKey":
            return await self._describe_key(ctx, document, region)
        if target == "ListKeys":
            return await self._list_keys(ctx, document, region)
        raise InvalidRequest(
            "this KMS operation is not served (Sign, GetPublicKey, DescribeKey, ListKeys are)",
            code="unsupported_kms_operation",
        )

    async def _key(self, ctx: RequestContext, document: Mapping[str, Any]) -> dict[str, Any]:
        """The key a KeyId names (a key id, ``alias/<label>``, or an ARN of either) among those the
        caller may see; the same not-found answer whether it is missing or not granted."""
        key_ref = _string(document, "KeyId")
        assert key_ref is not None
        if key_ref.startswith("arn:"):
            key_ref = key_ref.split(":", 5)[-1]
            key_ref = key_ref.removeprefix("key/")
        if key_ref.startswith("alias/"):
            label = key_ref.removeprefix("alias/")
            matches = [k for k in await self._visible_keys(ctx) if k["label"] == label]
            if len(matches) != 1:
                raise NotFound("no key you hold a grant on has that alias", code="key_not_found")
            return matches[0]
        return await self._keys.get(ctx, key_ref)

    async def _visible_keys(self, ctx: RequestContext) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = await self._keys.list_keys(ctx, limit=500, after=after)
            found.extend(k for k in page["items"] if k["curve"] in _SPECS)
            after = page["next"]
            if after is None:
                return found

    async def _sign(self, ctx: RequestContext, document: Mapping[str, Any], region: str) -> dict[str, Any]:
        key = await self._key(ctx, document)
        if key["curve"] not in _SPECS:
            raise InvalidRequest("the key is not an ECC signing key", code="unsupported_key", field="KeyId")
        if document.get("SigningAlgorithm") != "ECDSA_SHA_256":
            raise InvalidRequest(
                "SigningAlgorithm must be ECDSA_SHA_256", code="invalid_field", field="SigningAlgorithm"
            )
        message_type = document.get("MessageType", "RAW")
        encoded = _string(document, "Message")
        assert encoded is not None
        try:
            message = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("Message is not base64", code="invalid_base64", field="Message") from None
        if message_type == "DIGEST":
            if len(message) != 32:
                raise InvalidRequest("a DIGEST message is 32 bytes", code="invalid_digest", field="Message")
            digest = message
        elif message_type == "RAW":
            if not 0 < len(message) <= MAX_RAW_MESSAGE:
                raise InvalidRequest(
                    "a RAW message is 1 to 4096 bytes", code="invalid_field", field="Message"
                )
            digest = hashlib.sha256(message).digest()
        else:
            raise InvalidRequest("MessageType is RAW or DIGEST", code="invalid_field", field="MessageType")
        result = await self._signing.sign_digest(ctx, key["id"], "0x" + digest.hex())
        if result.get("state") == "pending_approval":
            # KMS has no "wait": the signature is fetched from the approval once approvers decide.
            raise Forbidden(
                "the signature waits for approvers; nothing was signed",
                code="approval_required",
                approval={k: result[k] for k in ("id", "url", "result_url") if k in result},
            )
        if "signature_der" in result:
            der = bytes.fromhex(result["signature_der"].removeprefix("0x"))
        else:
            der = der_signature(int(result["r"], 16), int(result["s"], 16))
        return {"KeyId": _arn(region, key["id"]), "Signature": _b64(der), "SigningAlgorithm": "ECDSA_SHA_256"}

    async def _get_public_key(
        self, ctx: RequestContext, document: Mapping[str, Any], region: str
    ) -> dict[str, Any]:
        key = await self._key(ctx, document)
        if key["curve"] not in _SPECS:
            raise InvalidRequest("the key is not an ECC signing key", code="unsupported_key", field="KeyId")
        spki = public_key_spki(key["curve"], bytes.fromhex(key["public_key"].removeprefix("0x")))
        spec = _SPECS[key["curve"]]
        return {
            "KeyId": _arn(region, key["id"]),
            "PublicKey": _b64(spki),
            "KeySpec": spec,
            "CustomerMasterKeySpec": spec,
            "KeyUsage": "SIGN_VERIFY",
            "SigningAlgorithms": ["ECDSA_SHA_256"],
        }

    async def _describe_key(
        self, ctx: RequestContext, document: Mapping[str, Any], region: str
    ) -> dict[str, Any]:
        key = await self._key(ctx, document)
        spec = _SPECS.get(key["curve"], "ECC_SECG_P256K1")
        enabled = key["state"] == "active"
        created = datetime.fromisoformat(key["created_at"].replace("Z", "+00:00"))
        return {
            "KeyMetadata": {
                "AWSAccountId": ACCOUNT,
                "KeyId": key["id"],
                "Arn": _arn(region, key["id"]),
                "CreationDate": created.timestamp(),
                "Enabled": enabled,
                "Description": key["label"],
                "KeyUsage": "SIGN_VERIFY",
                "KeyState": _KMS_KEY_STATE.get(key["state"], "Disabled"),
                "Origin": "EXTERNAL",
                "KeyManager": "CUSTOMER",
                "KeySpec": spec,
                "CustomerMasterKeySpec": spec,
                "SigningAlgorithms": ["ECDSA_SHA_256"],
            }
        }

    async def _list_keys(
        self, ctx: RequestContext, document: Mapping[str, Any], region: str
    ) -> dict[str, Any]:
        limit = document.get("Limit", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidRequest("Limit is 1 to 1000", code="invalid_field", field="Limit")
        marker = _string(document, "Marker", required=False)
        page = await self._keys.list_keys(ctx, limit=limit, after=marker)
        keys = [
            {"KeyId": k["id"], "KeyArn": _arn(region, k["id"])} for k in page["items"] if k["curve"] in _SPECS
        ]
        answer: dict[str, Any] = {"Keys": keys, "Truncated": page["next"] is not None}
        if page["next"] is not None:
            answer["NextMarker"] = page["next"]
        return answer
