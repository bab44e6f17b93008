"""AWS Secrets Manager, by reference: the one home of boto3 (an import contract keeps it here).

Owns: the reference rule (a secret's ARN, ``arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME``, or its
name), one lazily built boto3 client per process (credentials from the operator's files or environment
variables, else botocore's default chain; TLS verified against ``ca_file`` when given; no retries, the
connection's timeout on connect and read), and mapping ``GetSecretValue`` to fields: a ``SecretString``
holding a JSON object gives one field per key (strings as they are, other JSON values as compact JSON
text); any other ``SecretString`` is one field ``value``; a ``SecretBinary`` is refused (422
``secret_not_text``: the signer's values are text). Versions: the signer's integer ``version`` is
refused (``backend_version_unsupported``); ``backend_version`` is a ``VersionId`` when it is a UUID and
a ``VersionStage`` label (``AWSCURRENT``, ``AWSPREVIOUS``, a custom label) otherwise; the answer names
the ``VersionId`` read.

It must never: call boto3 on the event loop (every call runs in a worker thread), put botocore's error
text (it may quote the ARN or a request id) or a credential in an exception, log or audit event, or
write anything to AWS.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ReadTimeoutError,
)

from signer.config import AwsSecretsManagerSettings
from signer.errors import Unprocessable
from signer.services.secret_backends.base import (
    Fetched,
    Selector,
    denied,
    fields_from_object,
    invalid_reference,
    missing,
    pick,
    timed_out,
    unavailable,
    unsupported_version,
)
from signer.store import SecretRecord

_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}\Z")
_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_STAGE = re.compile(r"[A-Za-z0-9_.-]{1,256}\Z")
_MISSING = frozenset({"ResourceNotFoundException", "InvalidRequestException"})
_DENIED = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredTokenException",
        "InvalidClientTokenId",
    }
)


class AwsSecretsManagerBackend:
    name = "aws_secrets_manager"

    def __init__(self, settings: AwsSecretsManagerSettings) -> None:
        self._settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    def check_reference(self, reference: str) -> str:
        if reference.startswith("arn:"):
            if not _ARN.match(reference):
                raise invalid_reference("an ARN must be arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME")
        elif not _NAME.match(reference):
            raise invalid_reference("an AWS secret is named by its ARN or by 1 to 512 of A-Za-z0-9/_+=.@-")
        return reference

    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                s = self._settings
                creds = s.credentials()
                keys: dict[str, Any] = {}
                if creds is not None:
                    key_id, secret, session = creds
                    keys = {
                        "aws_access_key_id": key_id.reveal(),
                        "aws_secret_access_key": secret.reveal(),
                        "aws_session_token": None if session is None else session.reveal(),
                    }
                config = Config(
                    connect_timeout=s.timeout_seconds,
                    read_timeout=s.timeout_seconds,
                    retries={"total_max_attempts": 1},
                )
                self._client = boto3.session.Session(region_name=s.region, **keys).client(
                    "secretsmanager",
                    endpoint_url=s.endpoint_url,
                    verify=str(s.ca_file) if s.ca_file is not None else True,
                    config=config,
                )
            return self._client

    def _get(self, reference: str, selector: Selector) -> dict[str, Any]:
        args: dict[str, Any] = {"SecretId": reference}
        if selector.backend_version is not None:
            key = "VersionId" if _UUID.match(selector.backend_version) else "VersionStage"
            args[key] = selector.backend_version
        try:
            result: dict[str, Any] = self._connect().get_secret_value(**args)
            return result
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _MISSING:
                raise missing() from None
            if code in _DENIED:
                raise denied() from None
            raise unavailable() from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise timed_out() from None
        except NoCredentialsError:
            raise denied() from None
        except BotoCoreError:
            raise unavailable() from None

    async def read(self, secret: SecretRecord, selector: Selector, names: Sequence[str] | None) -> Fetched:
        if selector.version is not None:
            raise unsupported_version(
                "AWS Secrets Manager versions are ids or stage labels: use backend_version"
            )
        if selector.backend_version is not None and not _STAGE.match(selector.backend_version):
            raise unsupported_version("backend_version is a VersionId (a UUID) or a VersionStage label")
        assert secret.reference is not None
        answer = await asyncio.to_thread(self._get, secret.reference, selector)
        text = answer.get("SecretString")
        if not isinstance(text, str):
            raise Unprocessable("the backend holds this secret as binary, not text", code="secret_not_text")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        fields = fields_from_object(parsed) if isinstance(parsed, dict) else {"value": text}
        version_id = answer.get("VersionId")
        return Fetched(pick(fields, names), None, version_id if isinstance(version_id, str) else None)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
