"""The strict parser: plain data (JSON or YAML already loaded by the caller) to a ``PolicyDocument``.

A document looks like this::

    {"id": "payments-prod", "version": 3, "description": "...",
     "rules": [{"id": "mainnet-only", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1]},
               {"id": "big", "kind": "value_cap", "effect": "require_approval",
                "max_value": "1000000000000000000",
                "approval": {"quorum": 2, "group": "treasury", "expires_in_seconds": 3600}}]}

Unknown fields, wrong types, floats, amounts that are not decimal strings, unknown rule kinds, effects
a kind does not take, duplicate rule ids and an ``approval`` that does not match the effect are all
refused with the path of the first problem (``rules[1].max_value: must be a decimal string``). Each
kind's fields are listed once, in ``_KIND_FIELDS``; ``RULE_KINDS`` maps kind names to rule classes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from policy.canonical import NATIVE, canonical_json, legacy_utf8_digest
from policy.decision import Effect
from policy.documents import PolicyDocument
from policy.errors import PolicyDocumentError
from policy.limits import LIMIT_SUBJECTS, RateLimit, SpendLimit
from policy.reading import (
    fail,
    field_path,
    item_path,
    read_address,
    read_asset,
    read_bool,
    read_choice,
    read_decimal,
    read_int,
    read_list,
    read_name,
    read_object,
    read_selector,
    read_string,
)
from policy.request import KEY_LIFECYCLE_ACTIONS
from policy.rules import (
    ANOMALY_SIGNALS,
    Anomaly,
    ApprovalSpec,
    ChainAllowlist,
    DelegateAllowlist,
    DomainPattern,
    GasCostCap,
    KeyLifecycle,
    RawDigest,
    RecipientAllowlist,
    RecipientDenylist,
    Rule,
    SelectorAllowlist,
    TimeWindow,
    TypedDataDomainAllowlist,
    ValueCap,
)
from policy.windows import WEEKDAYS, TimeOfDayWindow, parse_time_of_day

MAX_RULES: Final = 1000
MAX_WINDOW: Final = 366 * 86_400  # a year and a day: longer windows are budgets, which grants carry
MAX_APPROVAL_EXPIRY: Final = 30 * 86_400
MAX_QUORUM: Final = 100
MAX_CHAIN_ID: Final = 2**64 - 1

_COMMON_REQUIRED: Final = ("id", "kind", "effect")
_COMMON_OPTIONAL: Final = ("description", "approval")


MAX_JSON_DEPTH: Final = 32  # a document nests 5 deep; the bound only has to stop hostile input
_JSON_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET: Final = re.compile(r"[\[\]{}]")


def _nests_deeper_than(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest beyond ``limit``: checked before ``json.loads`` runs, because
    its C scanner recurses on the C stack and, where a library has raised the recursion limit (py_ecc,
    imported by eth-account, sets 100000), deep input crashes the process instead of raising."""
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > limit:
            return True
    return False


def parse_policy_json(text: str | bytes) -> PolicyDocument:
    """Parse a JSON text strictly: duplicate keys, NaN, Infinity, non-integer numbers and nesting beyond
    ``MAX_JSON_DEPTH`` are refused (the standard ``json`` module would keep the last duplicate and
    accept floats silently)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise fail("", "duplicate_field", "a field appears twice in one object")
            seen[key] = value
        return seen

    def no_float(_text: str) -> Any:
        raise fail("", "invalid_type", "numbers must be integers (write amounts as decimal strings)")

    def no_constant(_text: str) -> Any:
        raise fail("", "invalid_type", "NaN and Infinity are not allowed")

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise fail("", "malformed_json", "is not UTF-8") from None
    if _nests_deeper_than(text, MAX_JSON_DEPTH):
        raise fail("", "too_deep", f"nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(
            text, object_pairs_hook=no_duplicates, parse_float=no_float, parse_constant=no_constant
        )
    except ValueError as exc:
        if isinstance(exc, PolicyDocumentError):
            raise
        raise fail("", "malformed_json", "is not valid JSON") from None
    return parse_policy_document(data)


def parse_stored_policy_json(text: str) -> PolicyDocument:
    """``parse_policy_json`` for a text read back from storage: a version stored while documents were
    written with raw UTF-8 keeps the digest it was stored under (``canonical.legacy_utf8_digest``);
    every other text gets the digest of its canonical form, as a new document does."""
    document = parse_policy_json(text)
    legacy = legacy_utf8_digest(text, document.as_dict())
    if legacy is not None:
        object.__setattr__(document, "digest", legacy)
    return document


def parse_policy_document(data: Any) -> PolicyDocument:
    """Parse a loaded document strictly; raises ``PolicyDocumentError`` naming the first problem."""
    doc = read_object(data, "", required=("id", "version", "rules"), optional=("description",))
    policy_id = read_name(doc["id"], "id")
    version = read_int(doc["version"], "version", minimum=1, maximum=2**63 - 1)
    description = read_string(doc.get("description", ""), "description")
    rules = read_list(doc["rules"], "rules", _read_rule, max_items=MAX_RULES)
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if rule.id in seen:
            raise fail(
                field_path(item_path("rules", index), "id"),
                "duplicate_rule_id",
                f"rule id {rule.id!r} is already used by rules[{seen[rule.id]}]",
            )
        seen[rule.id] = index
    return PolicyDocument(policy_id, version, tuple(rules), description)


def _read_approval(value: Any, path: str) -> ApprovalSpec:
    obj = read_object(
        value, path, required=("quorum", "group", "expires_in_seconds"), optional=("rejections", "signed")
    )
    return ApprovalSpec(
        rejections=read_int(obj["rejections"], field_path(path, "rejections"), minimum=1, maximum=MAX_QUORUM)
        if "rejections" in obj
        else 1,
        signed=read_bool(obj["signed"], field_path(path, "signed")) if "signed" in obj else False,
        quorum=read_int(obj["quorum"], field_path(path, "quorum"), minimum=1, maximum=MAX_QUORUM),
        group=read_name(obj["group"], field_path(path, "group")),
        expires_in=timedelta(
            seconds=read_int(
                obj["expires_in_seconds"],
                field_path(path, "expires_in_seconds"),
                minimum=1,
                maximum=MAX_APPROVAL_EXPIRY,
            )
        ),
    )


def _read_rule(value: Any, path: str) -> Rule:
    if not isinstance(value, Mapping):
        raise fail(path, "invalid_type", "must be an object")
    if "kind" not in value:
        raise fail(field_path(path, "kind"), "missing_field", "is required")
    kind = read_choice(value["kind"], field_path(path, "kind"), sorted(RULE_KINDS))
    required, optional, read_params = _KIND_FIELDS[kind]
    obj = read_object(
        value, path, required=(*_COMMON_REQUIRED, *required), optional=(*_COMMON_OPTIONAL, *optional)
    )
    rule_class = RULE_KINDS[kind]
    effect_path = field_path(path, "effect")
    effect = Effect(read_choice(obj["effect"], effect_path, [e.value for e in Effect]))
    if effect not in rule_class.effects:
        allowed = ", ".join(sorted(e.value for e in rule_class.effects))
        raise fail(effect_path, "invalid_value", f"a {kind} rule takes effect {allowed}")
    approval = None
    if effect is Effect.REQUIRE_APPROVAL:
        if "approval" not in obj:
            raise fail(field_path(path, "approval"), "missing_field", "is required for require_approval")
        approval = _read_approval(obj["approval"], field_path(path, "approval"))
    elif "approval" in obj:
        raise fail(field_path(path, "approval"), "invalid_value", "is only for require_approval")
    common: dict[str, Any] = {
        "id": read_name(obj["id"], field_path(path, "id")),
        "effect": effect,
        "approval": approval,
        "description": read_string(obj.get("description", ""), field_path(path, "description")),
    }
    return rule_class(**common, **read_params(obj, path))


# Each kind: required fields, optional fields, and a reader from the object to constructor arguments.
_Params = dict[str, Any]


def _addresses(obj: Mapping[str, Any], path: str, name: str) -> frozenset[str]:
    return frozenset(read_list(obj[name], field_path(path, name), read_address, min_items=1))


def _window(obj: Mapping[str, Any], path: str) -> timedelta:
    return timedelta(
        seconds=read_int(
            obj["window_seconds"], field_path(path, "window_seconds"), minimum=1, maximum=MAX_WINDOW
        )
    )


def _per(obj: Mapping[str, Any], path: str) -> str:
    return read_choice(obj["per"], field_path(path, "per"), LIMIT_SUBJECTS)


def _asset(obj: Mapping[str, Any], path: str) -> str:
    return read_asset(obj.get("asset", NATIVE), field_path(path, "asset"))


def _chain_ids(obj: Mapping[str, Any], path: str) -> _Params:
    def chain_id(value: Any, where: str) -> int:
        return read_int(value, where, minimum=0, maximum=MAX_CHAIN_ID)

    return {
        "chain_ids": frozenset(
            read_list(obj["chain_ids"], field_path(path, "chain_ids"), chain_id, min_items=1)
        )
    }


def _recipients(obj: Mapping[str, Any], path: str) -> _Params:
    return {"addresses": _addresses(obj, path, "addresses")}


def _value_cap(obj: Mapping[str, Any], path: str) -> _Params:
    return {
        "max_value": read_decimal(obj["max_value"], field_path(path, "max_value")),
        "asset": _asset(obj, path),
    }


def _gas_cost_cap(obj: Mapping[str, Any], path: str) -> _Params:
    return {"max_value": read_decimal(obj["max_value"], field_path(path, "max_value"))}


def _spend_limit(obj: Mapping[str, Any], path: str) -> _Params:
    return {**_value_cap(obj, path), "window": _window(obj, path), "per": _per(obj, path)}


def _rate_limit(obj: Mapping[str, Any], path: str) -> _Params:
    max_requests = read_int(obj["max_requests"], field_path(path, "max_requests"), minimum=1, maximum=10**9)
    return {"max_requests": max_requests, "window": _window(obj, path), "per": _per(obj, path)}


def _selectors(obj: Mapping[str, Any], path: str) -> _Params:
    selectors = frozenset(
        read_list(obj["selectors"], field_path(path, "selectors"), read_selector, min_items=1)
    )
    allow_empty = read_bool(obj.get("allow_empty_calldata", True), field_path(path, "allow_empty_calldata"))
    return {"selectors": selectors, "allow_empty_calldata": allow_empty}


def _domain_pattern(value: Any, path: str) -> DomainPattern:
    fields = ("name", "version", "chain_id", "verifying_contract")
    obj = read_object(value, path, required=(), optional=fields)
    if not obj:
        raise fail(path, "invalid_value", "must name at least one of " + ", ".join(fields))
    return DomainPattern(
        name=read_string(obj["name"], field_path(path, "name"), max_length=256) if "name" in obj else None,
        version=read_string(obj["version"], field_path(path, "version"), max_length=256)
        if "version" in obj
        else None,
        chain_id=(
            read_int(obj["chain_id"], field_path(path, "chain_id"), minimum=0, maximum=MAX_CHAIN_ID)
            if "chain_id" in obj
            else None
        ),
        verifying_contract=(
            read_address(obj["verifying_contract"], field_path(path, "verifying_contract"))
            if "verifying_contract" in obj
            else None
        ),
    )


def _domains(obj: Mapping[str, Any], path: str) -> _Params:
    patterns = read_list(obj["domains"], field_path(path, "domains"), _domain_pattern, min_items=1)
    return {"domains": _sorted_unique(patterns, DomainPattern.as_dict)}


def _time_of_day(value: Any, path: str) -> int:
    second = parse_time_of_day(read_string(value, path, max_length=8))
    if second is None:
        raise fail(path, "invalid_value", "must be a UTC time HH:MM or HH:MM:SS (24:00 allowed as an end)")
    return second


def _time_window(value: Any, path: str) -> TimeOfDayWindow:
    obj = read_object(value, path, required=("days", "start", "end"))

    def day(text: Any, where: str) -> int:
        return WEEKDAYS.index(read_choice(text, where, WEEKDAYS))

    days = frozenset(read_list(obj["days"], field_path(path, "days"), day, min_items=1, max_items=7))
    start = _time_of_day(obj["start"], field_path(path, "start"))
    end = _time_of_day(obj["end"], field_path(path, "end"))
    if start == 86_400:
        raise fail(field_path(path, "start"), "invalid_value", "24:00 can only end a window")
    if end <= start:
        raise fail(
            field_path(path, "end"), "invalid_value", "must be after start (split overnight windows in two)"
        )
    return TimeOfDayWindow(days, start, end)


def _windows(obj: Mapping[str, Any], path: str) -> _Params:
    windows = read_list(obj["windows"], field_path(path, "windows"), _time_window, min_items=1, max_items=100)
    return {"windows": _sorted_unique(windows, lambda w: (sorted(w.weekdays), w.start_second, w.end_second))}


def _delegates(obj: Mapping[str, Any], path: str) -> _Params:
    return {"delegates": _addresses(obj, path, "delegates")}


def _signals(obj: Mapping[str, Any], path: str) -> _Params:
    def signal(value: Any, where: str) -> str:
        return read_choice(value, where, ANOMALY_SIGNALS)

    signals = read_list(obj["signals"], field_path(path, "signals"), signal, min_items=1, max_items=10)
    return {"signals": frozenset(signals)}


def _lifecycle_actions(obj: Mapping[str, Any], path: str) -> _Params:
    def action(value: Any, where: str) -> str:
        return read_choice(value, where, KEY_LIFECYCLE_ACTIONS)

    actions = read_list(
        obj["actions"], field_path(path, "actions"), action, min_items=1, max_items=len(KEY_LIFECYCLE_ACTIONS)
    )
    return {"actions": frozenset(actions)}


def _nothing(_obj: Mapping[str, Any], _path: str) -> _Params:
    return {}


def _sorted_unique(items: list[Any], key: Any) -> tuple[Any, ...]:
    # Order and repetition in a list of patterns carry no meaning; dropping them keeps digests equal.
    unique = {canonical_json(key(item)): item for item in items}
    return tuple(unique[k] for k in sorted(unique))


_KIND_FIELDS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], Any]]] = {
    ChainAllowlist.kind: (("chain_ids",), (), _chain_ids),
    RecipientAllowlist.kind: (("addresses",), (), _recipients),
    RecipientDenylist.kind: (("addresses",), (), _recipients),
    ValueCap.kind: (("max_value",), ("asset",), _value_cap),
    SpendLimit.kind: (("max_value", "window_seconds", "per"), ("asset",), _spend_limit),
    RateLimit.kind: (("max_requests", "window_seconds", "per"), (), _rate_limit),
    SelectorAllowlist.kind: (("selectors",), ("allow_empty_calldata",), _selectors),
    TypedDataDomainAllowlist.kind: (("domains",), (), _domains),
    GasCostCap.kind: (("max_value",), (), _gas_cost_cap),
    TimeWindow.kind: (("windows",), (), _windows),
    DelegateAllowlist.kind: (("delegates",), (), _delegates),
    RawDigest.kind: ((), (), _nothing),
    Anomaly.kind: (("signals",), (), _signals),
    KeyLifecycle.kind: (("actions",), (), _lifecycle_actions),
}


RULE_KINDS: Final[dict[str, type[Rule]]] = {
    cls.kind: cls
    for cls in (
        ChainAllowlist,
        RecipientAllowlist,
        RecipientDenylist,
        ValueCap,
        SpendLimit,
        RateLimit,
        SelectorAllowlist,
        TypedDataDomainAllowlist,
        GasCostCap,
        TimeWindow,
        DelegateAllowlist,
        RawDigest,
        Anomaly,
        KeyLifecycle,
    )
}
