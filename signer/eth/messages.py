"""Signable messages: EIP-191 ``personal_sign`` digests and strict EIP-712 (v4) typed-data digests.

Both kinds of digest start with 0x19, a byte no RLP transaction can start with, so a message
signature can never be replayed as a transaction. The EIP-712 encoder here is our own and strict on
purpose: eth-account's encoder silently coerces (``"false"`` -> false, text into ``bytes``, a missing
struct or string -> zeros, any value into ``bool``), ignores fixed array lengths, accepts extra
message fields and any ``EIP712Domain`` field order. Here every value must match its declared type
exactly, every struct must carry exactly its declared fields, the domain type must be the canonical
one, and type graphs that no finite value can satisfy are refused, all with ``InvalidRequest`` code
``invalid_typed_data``. The tests check the digests against eth-account and the EIP-712 reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from signer.errors import InvalidRequest
from signer.eth.primitives import (
    address_bytes,
    keccak256,
    parse_address,
    parse_hex_bytes,
    parse_quantity,
)

PERSONAL_MESSAGE_PREFIX: Final = b"\x19Ethereum Signed Message:\n"


def personal_message_digest(message: bytes) -> bytes:
    """EIP-191 version 0x45 (``personal_sign``).

    keccak256("\\x19Ethereum Signed Message:\\n" + len(message) + message), the length in decimal ASCII.
    """
    if not isinstance(message, bytes):
        raise InvalidRequest("message must be bytes", code="invalid_field", field="message")
    return keccak256(PERSONAL_MESSAGE_PREFIX + str(len(message)).encode("ascii") + message)


# ---------------------------------------------------------------------------------------------------
# EIP-712

CODE: Final = "invalid_typed_data"
DOMAIN_TYPE: Final = "EIP712Domain"
# The domain fields in the only order EIP-712 defines; ethers refuses any other, MetaMask would hash
# a reordered type differently from everyone else, so a reordered EIP712Domain is refused.
DOMAIN_FIELDS: Final = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
)
_DOMAIN_TYPES: Final = dict(DOMAIN_FIELDS)
_TOP_LEVEL: Final = frozenset(("types", "primaryType", "domain", "message"))
# Nesting of structs and arrays in one value. Real protocols (Permit2, Seaport, Safe) stay below 6;
# the bound keeps a hostile recursive type far from Python's recursion limit.
MAX_DEPTH: Final = 32
MAX_ARRAY_DIMENSIONS: Final = 8

# Names are bounded (64 characters) so that every path in an error message stays short.
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,63}")
_TYPE_REFERENCE = re.compile(r"([A-Za-z_$][A-Za-z0-9_$]{0,63})((?:\[(?:[1-9][0-9]{0,5})?\])*)")
_DIMENSION = re.compile(r"\[([0-9]*)\]")
_ATOMIC_LIKE = re.compile(r"(u?int[0-9]*|bytes[0-9]*|bool|address|string)")
_ATOMIC: Final = frozenset(
    ["bool", "address", "string", "bytes"]
    + [f"uint{8 * k}" for k in range(1, 33)]
    + [f"int{8 * k}" for k in range(1, 33)]
    + [f"bytes{k}" for k in range(1, 33)]
)


def _bad(field: str, message: str, **extra: Any) -> InvalidRequest:
    # Paths are built from caller-chosen names; bound them so an error stays small.
    return InvalidRequest(message, code=CODE, field=field[:256], **extra)


@dataclass(frozen=True, slots=True)
class _FieldType:
    text: str  # as written, e.g. "Person[2][]": it goes verbatim into encodeType
    base: str
    dimensions: tuple[int | None, ...]  # in written order; the last one is the outermost array

    def element(self) -> _FieldType:
        inner = self.text[: self.text.rindex("[")]
        return _FieldType(inner, self.base, self.dimensions[:-1])


Types = dict[str, tuple[tuple[str, _FieldType], ...]]


@dataclass(frozen=True, slots=True)
class TypedDataDigest:
    """A validated EIP-712 request and its digest: keccak256(0x1901 || domain_separator || message_hash).

    ``domain`` and ``message`` are canonical and JSON-serialisable as they are: integers are ``int``,
    addresses EIP-55, byte strings lower-case ``0x`` hex, booleans ``bool``. ``as_json`` additionally
    writes integers as decimal strings, for readers that lose precision beyond 2**53.
    """

    digest: bytes
    domain: dict[str, Any]
    primary_type: str
    message: dict[str, Any]
    types: dict[str, list[dict[str, str]]]
    domain_separator: bytes
    message_hash: bytes

    def as_json(self) -> dict[str, Any]:
        """The canonical full message (integers as decimal strings, bytes as 0x hex); it re-parses to
        the same digest."""
        return {
            "types": self.types,
            "primaryType": self.primary_type,
            "domain": _to_json(self.domain),
            "message": _to_json(self.message),
        }


def _to_json(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    return {key: _to_json(item) for key, item in value.items()}


def _parse_field_type(text: Any, where: str) -> _FieldType:
    if not isinstance(text, str):
        raise _bad(where, "a field type must be a string")
    match = _TYPE_REFERENCE.fullmatch(text)
    if match is None:
        raise _bad(where, "malformed field type")
    dimensions = tuple(int(size) if size else None for size in _DIMENSION.findall(match.group(2)))
    if len(dimensions) > MAX_ARRAY_DIMENSIONS:
        raise _bad(where, "too many array dimensions")
    return _FieldType(text, match.group(1), dimensions)


def _parse_types(raw: Any, positions: Mapping[str, int]) -> Types:
    """The declared structs. Errors name a struct by its position in the caller's ``types`` object
    (``positions``) and a member by its index, never by a name the caller chose."""
    if not isinstance(raw, Mapping) or not raw:
        raise _bad("types", "types must be a non-empty object")
    types: Types = {}
    for name, definition in raw.items():
        where = f"types[{positions[name]}]"
        if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or _ATOMIC_LIKE.fullmatch(name):
            raise _bad(where, "a struct name must be an identifier that is not a Solidity type")
        if not isinstance(definition, list):
            raise _bad(where, "a struct definition must be a list of {name, type}")
        fields: list[tuple[str, _FieldType]] = []
        seen: set[str] = set()
        for index, member in enumerate(definition):
            member_where = f"{where}[{index}]"
            if not isinstance(member, Mapping) or set(member) != {"name", "type"}:
                raise _bad(member_where, "a struct member must be exactly {name, type}")
            member_name = member["name"]
            if not isinstance(member_name, str) or not _IDENTIFIER.fullmatch(member_name):
                raise _bad(member_where, "a member name must be an identifier")
            if member_name in seen:
                raise _bad(member_where, "duplicate member name")
            seen.add(member_name)
            fields.append((member_name, _parse_field_type(member["type"], f"{member_where}.type")))
        types[name] = tuple(fields)
    for name, members in types.items():
        for index, (_, field_type) in enumerate(members):
            if field_type.base == DOMAIN_TYPE:
                raise _bad(
                    f"types[{positions[name]}][{index}].type", "EIP712Domain cannot be used as a member type"
                )
            if field_type.base not in _ATOMIC and field_type.base not in types:
                raise _bad(f"types[{positions[name]}][{index}].type", "undefined type")
    _refuse_unterminated_cycles(types, positions)
    return types


def _refuse_unterminated_cycles(types: Types, positions: Mapping[str, int]) -> None:
    """Refuse a struct that must contain itself: a cycle of members that are the struct directly or
    through fixed-size arrays only. A dynamic array on the cycle can be empty, so it terminates."""
    edges = {
        name: {
            member.base
            for _, member in fields
            if member.base in types and all(size is not None for size in member.dimensions)
        }
        for name, fields in types.items()
    }
    done: set[str] = set()
    for root in edges:
        if root in done:
            continue
        # Iterative depth-first search: "on_path" are the grey nodes of the classic three-colour walk.
        on_path: set[str] = {root}
        stack = [(root, iter(sorted(edges[root])))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                raise _bad(f"types[{positions[child]}]", "recursive type that no finite value can satisfy")
            elif child not in done:
                on_path.add(child)
                stack.append((child, iter(sorted(edges[child]))))


def _encode_type(primary: str, types: Types) -> str:
    dependencies: set[str] = set()
    pending = [primary]
    while pending:
        for _, member in types[pending.pop()]:
            if member.base in types and member.base not in dependencies and member.base != primary:
                dependencies.add(member.base)
                pending.append(member.base)
    return "".join(
        f"{name}({','.join(f'{member.text} {member_name}' for member_name, member in types[name])})"
        for name in [primary, *sorted(dependencies)]
    )


class _Encoder:
    """encodeData / hashStruct over validated types, canonicalising values as it goes."""

    def __init__(self, types: Types, positions: Mapping[str, int]) -> None:
        self.types = types
        self.positions = positions
        self._type_hashes: dict[str, bytes] = {}

    def _struct(self, name: str) -> str:
        """A struct as errors name it: its position in the caller's ``types`` (the domain by name)."""
        return DOMAIN_TYPE if name == DOMAIN_TYPE else f"types[{self.positions[name]}]"

    def _member(self, name: str, where: str, index: int, member_name: str) -> str:
        # The domain's members are the EIP's names; a caller's struct's members go by index.
        return f"{where}.{member_name}" if name == DOMAIN_TYPE else f"{where}[{index}]"

    def type_hash(self, name: str) -> bytes:
        cached = self._type_hashes.get(name)
        if cached is None:
            cached = keccak256(_encode_type(name, self.types).encode("ascii"))
            self._type_hashes[name] = cached
        return cached

    def hash_struct(self, name: str, value: Any, where: str, depth: int) -> tuple[bytes, dict[str, Any]]:
        if depth > MAX_DEPTH:
            raise _bad(where, "typed data nested too deeply")
        if not isinstance(value, Mapping):
            raise _bad(where, f"expected an object of the struct {self._struct(name)}")
        members = self.types[name]
        declared = {member_name for member_name, _ in members}
        if any(key not in declared for key in value):
            # Named by where it is and its struct's position, never by the caller's undeclared key.
            raise _bad(where, f"a field that is not a member of the struct {self._struct(name)}")
        encoded = [self.type_hash(name)]
        canonical: dict[str, Any] = {}
        for index, (member_name, member) in enumerate(members):
            member_where = self._member(name, where, index, member_name)
            if member_name not in value:
                raise _bad(member_where, "missing field")
            word, canonical[member_name] = self.encode_value(
                member, value[member_name], member_where, depth + 1
            )
            encoded.append(word)
        return keccak256(b"".join(encoded)), canonical

    def encode_value(self, field_type: _FieldType, value: Any, where: str, depth: int) -> tuple[bytes, Any]:
        """The 32-byte word for ``value`` in encodeData, and the canonical value."""
        if field_type.dimensions:
            if depth > MAX_DEPTH:
                raise _bad(where, "typed data nested too deeply")
            if not isinstance(value, list):
                raise _bad(where, "expected an array")
            size = field_type.dimensions[-1]
            if size is not None and len(value) != size:
                raise _bad(where, f"expected exactly {size} elements")
            element = field_type.element()
            words: list[bytes] = []
            items: list[Any] = []
            for index, item in enumerate(value):
                word, canonical = self.encode_value(element, item, f"{where}[{index}]", depth + 1)
                words.append(word)
                items.append(canonical)
            return keccak256(b"".join(words)), items
        if field_type.base in self.types:
            return self.hash_struct(field_type.base, value, where, depth)
        try:
            return _encode_atomic(field_type.base, value, where)
        except InvalidRequest as error:
            if error.code == CODE:
                raise
            # Keep the precise defect (invalid_hex, invalid_address, ...) as the reason.
            raise _bad(where, error.message, reason=error.code) from None


def _encode_atomic(kind: str, value: Any, where: str) -> tuple[bytes, Any]:
    if kind == "string":
        if not isinstance(value, str):
            raise _bad(where, "expected a string")
        try:
            return keccak256(value.encode("utf-8")), value
        except UnicodeEncodeError:
            raise _bad(where, "string is not valid Unicode") from None
    if kind == "bytes":
        data = parse_hex_bytes(value, where)
        return keccak256(data), "0x" + data.hex()
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(where, "expected true or false")
        return (b"\x00" * 31 + (b"\x01" if value else b"\x00")), value
    if kind == "address":
        address = parse_address(value, where)
        return b"\x00" * 12 + address_bytes(address), address
    if kind.startswith("bytes"):
        data = parse_hex_bytes(value, where, length=int(kind[5:]))
        return data.ljust(32, b"\x00"), "0x" + data.hex()
    if kind.startswith("uint"):
        number = parse_quantity(value, where, maximum=2 ** int(kind[4:]) - 1)
        return number.to_bytes(32, "big"), number
    bits = int(kind[3:])
    number = _parse_signed(value, where)
    if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise _bad(where, "value is out of range", reason="value_out_of_range")
    return number.to_bytes(32, "big", signed=True), number


def _parse_signed(value: Any, where: str) -> int:
    if isinstance(value, str) and value.startswith("-"):
        return -parse_quantity(value[1:], where)
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return value
    return parse_quantity(value, where)


def _domain_fields(
    raw_types: Mapping[str, Any], domain: Mapping[str, Any]
) -> tuple[tuple[str, _FieldType], ...]:
    if any(key not in _DOMAIN_TYPES for key in domain):
        allowed = ", ".join(name for name, _ in DOMAIN_FIELDS)
        raise _bad("domain", f"a field that is not an EIP-712 domain field (allowed: {allowed})")
    expected = [{"name": name, "type": kind} for name, kind in DOMAIN_FIELDS if name in domain]
    if DOMAIN_TYPE in raw_types:
        declared = raw_types[DOMAIN_TYPE]
        if (
            not isinstance(declared, list)
            or [dict(m) if isinstance(m, Mapping) else m for m in declared] != expected
        ):
            raise _bad(
                f"types.{DOMAIN_TYPE}",
                "EIP712Domain must list the domain's fields in EIP-712 order with their standard types",
            )
    return tuple((member["name"], _FieldType(member["type"], member["type"], ())) for member in expected)


def typed_data_digest(obj: Mapping[str, Any]) -> TypedDataDigest:
    """Validate an EIP-712 v4 request ``{types, primaryType, domain, message}`` and compute its digest.

    Raises ``InvalidRequest`` code ``invalid_typed_data`` (``field`` names the place) for unknown or
    missing top-level fields, undefined or malformed types, a primaryType that is not a defined
    struct, an ``EIP712Domain`` that disagrees with ``domain``, message fields missing from or not
    declared in their type, values that do not fit their type, wrong fixed array lengths, and
    recursive types that cannot terminate.
    """
    if not isinstance(obj, Mapping):
        raise _bad("typedData", "typed data must be an object")
    if any(key not in _TOP_LEVEL for key in obj):
        raise _bad("typedData", f"unknown top-level field (allowed: {', '.join(sorted(_TOP_LEVEL))})")
    for key in sorted(_TOP_LEVEL):
        if key not in obj:
            raise _bad(key, "missing top-level field")
    raw_types, primary_type, raw_domain = obj["types"], obj["primaryType"], obj["domain"]
    if not isinstance(raw_domain, Mapping):
        raise _bad("domain", "domain must be an object")
    if not isinstance(raw_types, Mapping):
        raise _bad("types", "types must be an object")
    domain_fields = _domain_fields(raw_types, raw_domain)
    # Errors name a struct by its position in the caller's types object, never by its name.
    positions = {name: index for index, name in enumerate(raw_types)}
    types = _parse_types(
        {name: fields for name, fields in raw_types.items() if name != DOMAIN_TYPE}, positions
    )
    if not isinstance(primary_type, str) or primary_type not in types:
        raise _bad("primaryType", "primaryType must name a struct defined in types")
    encoder = _Encoder({**types, DOMAIN_TYPE: domain_fields}, positions)
    domain_separator, domain = encoder.hash_struct(DOMAIN_TYPE, raw_domain, "domain", 0)
    message_hash, message = encoder.hash_struct(primary_type, obj["message"], "message", 0)
    canonical_types: dict[str, list[dict[str, str]]] = {
        DOMAIN_TYPE: [{"name": name, "type": member.text} for name, member in domain_fields]
    }
    for name, fields in types.items():
        canonical_types[name] = [{"name": member_name, "type": member.text} for member_name, member in fields]
    return TypedDataDigest(
        digest=keccak256(b"\x19\x01" + domain_separator + message_hash),
        domain=domain,
        primary_type=primary_type,
        message=message,
        types=canonical_types,
        domain_separator=domain_separator,
        message_hash=message_hash,
    )
