"""Strict request bodies: size first, then hostile-JSON checks, then the typed model.

The size is checked from ``Content-Length`` before a byte is read, and again while reading (a chunked
body with no length stops at the limit). JSON with duplicate keys, NaN or Infinity, absurdly long numbers
or deep nesting is refused with a 400 rather than a stack trace. Models refuse unknown fields, so extra
fields never slip into a request (no mass assignment).
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar, get_args

import yaml
from aiohttp import web
from pydantic import BaseModel, ValidationError

from signer.errors import InvalidRequest, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)

MAX_DEPTH = 32


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # The key is the client's own text: not repeated back.
            raise InvalidRequest("duplicate key in a JSON object", code="malformed_json")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise InvalidRequest(f"{name} is not allowed in JSON", code="malformed_json")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Refuse deep nesting BEFORE json.loads: a dependency (py_ecc, via eth-account) raises the
    recursion limit so far that the C parser can overflow the stack and kill the process."""
    # Nesting can never exceed the number of opening brackets, in strings or not: a body with no more
    # than the limit (every ordinary request) needs no scan.
    if text.count("{") + text.count("[") <= limit:
        return
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                raise InvalidRequest("JSON nests too deeply", code="malformed_json")
        else:
            depth -= 1


# json.loads with these hooks would build the same decoder on every call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def loads_strict(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("body is not UTF-8", code="malformed_json") from None
    _check_depth(text)
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise InvalidRequest("JSON nests too deeply", code="malformed_json") from None
    except ValueError as exc:
        # json.JSONDecodeError and the int-digits limit; neither message carries more than a position.
        if isinstance(exc, json.JSONDecodeError):
            raise InvalidRequest(
                f"malformed JSON at line {exc.lineno} column {exc.colno}", code="malformed_json"
            ) from None
        raise InvalidRequest("a number in the body is too long", code="malformed_json") from None
    return value


async def read_json(request: web.Request, max_bytes: int) -> Any:
    if request.content_type not in ("application/json", "application/problem+json"):
        raise InvalidRequest(
            "send a JSON body with Content-Type: application/json", code="unsupported_media_type"
        )
    return loads_strict(await read_bytes(request, max_bytes))


async def read_bytes(request: web.Request, max_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``max_bytes``."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    content = request.content
    if content.is_eof():
        # The whole body has arrived already (a small one comes with its head): it is in memory, so
        # take it in one call rather than through the chunk iterator's awaits. A body that failed to
        # arrive raises its error here as the iterator would.
        whole = content.read_nowait()
        if len(whole) > max_bytes:
            raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
        if not whole:
            raise InvalidRequest("request body is empty", code="malformed_json")
        return whole
    chunks: list[bytes] = []
    total = 0
    async for chunk in content.iter_chunked(16 * 1024):
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    if not total:
        raise InvalidRequest("request body is empty", code="malformed_json")
    return b"".join(chunks)


class _StrictYamlLoader(yaml.SafeLoader):
    """YAML as plain data only: no aliases (a few bytes must not expand to gigabytes), no duplicate
    keys (the last would silently win), string keys only."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise InvalidRequest("YAML aliases are not allowed", code="malformed_yaml")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise InvalidRequest("YAML keys must be strings", code="malformed_yaml")
            if key in seen:
                raise InvalidRequest("duplicate key in a YAML mapping", code="malformed_yaml")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def loads_yaml_strict(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not UTF-8", code="malformed_yaml") from None
    _check_depth(text)
    try:
        return yaml.load(text, Loader=_StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        raise InvalidRequest("malformed YAML", code="malformed_yaml") from None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The request model a field holds (directly, optionally, or in a list), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _declared_path(
    model: type[BaseModel], loc: tuple[Any, ...]
) -> tuple[list[str | int], type[BaseModel] | None]:
    """The longest prefix of ``loc`` made of names the models declare (and list indexes), with the model
    it ends in: a key the client chose (a dict key, an unknown field) is never repeated back."""
    path: list[str | int] = []
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            path.append(part)
        elif current is not None and part in current.model_fields:
            path.append(part)
            current = _model_in(current.model_fields[part].annotation)
        else:
            break
    return path, current


def validate(model: type[M], value: Any) -> M:
    if not isinstance(value, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_request")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        # include_input=False and our own messages: no error repeats a value it was sent.
        first = exc.errors(include_input=False, include_url=False)[0]
        path, container = _declared_path(model, tuple(first["loc"]))
        field = ".".join(str(part) for part in path) or None
        kind = first["type"]
        if kind == "extra_forbidden":
            allowed = sorted(container.model_fields) if container is not None else []
            raise InvalidRequest(
                f"unknown field in {field or 'the body'} (allowed: {', '.join(allowed)})",
                code="unknown_field",
                field=field,
                allowed=allowed,
            ) from None
        code = {"missing": "missing_field", "invalid_timestamp": "invalid_timestamp"}.get(
            kind, "invalid_field"
        )
        message = (
            f"missing field: {field}"
            if code == "missing_field"
            else f"invalid value for {field}: {first['msg']}"
        )
        raise InvalidRequest(message, code=code, field=field) from None


async def parse_body(request: web.Request, model: type[M], max_bytes: int) -> M:
    return validate(model, await read_json(request, max_bytes))
