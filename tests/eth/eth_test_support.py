"""Shared strategies and independent signers for the signer.eth tests.

The "HSM" here is an in-process key signing with libsecp256k1 (coincurve) or eth_keys, returning bare
r||s and, like SoftHSM, a high s about half of the time. Nothing in this file ships in the service.
"""

from __future__ import annotations

from typing import Any

import coincurve
from eth_keys import keys as eth_keys
from hypothesis import strategies as st

from signer.eth import MAX_CHAIN_ID, SECP256K1_N, to_checksum_address

UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1

private_keys = st.integers(min_value=1, max_value=SECP256K1_N - 1).map(lambda k: k.to_bytes(32, "big"))


def public_key_of(secret: bytes) -> bytes:
    return coincurve.PrivateKey(secret).public_key.format(compressed=False)


def address_of(secret: bytes) -> str:
    return eth_keys.PrivateKey(secret).public_key.to_checksum_address()


def hsm_sign(secret: bytes, digest: bytes, *, high_s: bool) -> bytes:
    """r||s over ``digest`` from eth_keys (RFC 6979, low s), flipped to the high half on request."""
    signature = eth_keys.PrivateKey(secret).sign_msg_hash(digest)
    s = SECP256K1_N - signature.s if high_s else signature.s
    return signature.r.to_bytes(32, "big") + s.to_bytes(32, "big")


# ---------------------------------------------------------------------------------------------------
# JSON representations: the same number or address written every way a client might write it.


@st.composite
def quantity_json(draw: st.DrawFn, value: int) -> Any:
    form = draw(st.sampled_from(["int", "hex", "hex_padded", "hex_upper", "decimal", "decimal_padded"]))
    if form == "int":
        return value
    if form == "hex":
        return hex(value)
    if form == "hex_padded":
        return "0x" + "0" * draw(st.integers(1, 8)) + hex(value)[2:]
    if form == "hex_upper":
        return "0x" + hex(value)[2:].upper()
    if form == "decimal":
        return str(value)
    return "0" * draw(st.integers(1, 4)) + str(value)


@st.composite
def address_json(draw: st.DrawFn, raw: bytes) -> str:
    checksummed = to_checksum_address(raw)
    form = draw(st.sampled_from(["checksum", "lower", "upper"]))
    if form == "checksum":
        return checksummed
    if form == "lower":
        return checksummed.lower()
    return "0x" + checksummed[2:].upper()


addresses = st.binary(min_size=20, max_size=20)
chain_ids = st.one_of(
    st.sampled_from([1, 5, 10, 56, 137, 8453, 42161, 11155111]),
    st.integers(min_value=1, max_value=MAX_CHAIN_ID),
)
u256 = st.one_of(st.integers(0, 2**64), st.integers(0, UINT256_MAX))


@st.composite
def calldata(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "empty", "transfer", "approve", "transferFrom"]))
    if kind == "random":
        return draw(st.binary(max_size=120))
    if kind == "empty":
        return b""
    selector = {"transfer": "a9059cbb", "approve": "095ea7b3", "transferFrom": "23b872dd"}[kind]
    words = [b"\x00" * 12 + draw(addresses)]
    if kind == "transferFrom":
        words.append(b"\x00" * 12 + draw(addresses))
    words.append(draw(u256).to_bytes(32, "big"))
    return bytes.fromhex(selector) + b"".join(words)


@st.composite
def transaction_case(draw: st.DrawFn, tx_type: int) -> dict[str, Any]:
    """A random valid transaction as canonical Python values (ints, bytes, checksummed addresses)."""
    case: dict[str, Any] = {
        "type": tx_type,
        "chainId": draw(chain_ids),
        "nonce": draw(st.integers(0, UINT64_MAX)),
        "gas": draw(st.integers(0, UINT64_MAX)),
        "value": draw(u256),
        "data": draw(calldata()),
    }
    creation = tx_type != 4 and draw(st.booleans())
    case["to"] = None if creation else to_checksum_address(draw(addresses))
    if tx_type in (0, 1):
        case["gasPrice"] = draw(u256)
    else:
        case["maxFeePerGas"] = draw(u256)
        case["maxPriorityFeePerGas"] = draw(st.integers(0, case["maxFeePerGas"]))
    if tx_type != 0:
        case["accessList"] = draw(
            st.lists(
                st.tuples(
                    addresses.map(to_checksum_address),
                    st.lists(st.binary(min_size=32, max_size=32), max_size=3),
                ),
                max_size=3,
            )
        )
    if tx_type == 4:
        case["authorizationList"] = draw(st.lists(authorization_case(), min_size=1, max_size=3))
    return case


@st.composite
def authorization_case(draw: st.DrawFn) -> dict[str, Any]:
    """An EIP-7702 authorisation: signed by a random key (authority known) or with arbitrary r, s."""
    from eth_account import Account  # only the tests use eth_account as the independent reference

    chain_id = draw(st.one_of(st.just(0), chain_ids, st.integers(0, UINT256_MAX)))
    delegate = to_checksum_address(draw(addresses))
    nonce = draw(st.integers(0, UINT64_MAX))
    if draw(st.booleans()):
        secret = draw(private_keys)
        signed = Account.sign_authorization(
            {"chainId": chain_id, "address": delegate, "nonce": nonce}, secret
        )
        return {
            "chainId": chain_id,
            "address": delegate,
            "nonce": nonce,
            "yParity": signed.y_parity,
            "r": signed.r,
            "s": signed.s,
            "authority": address_of(secret),
        }
    return {
        "chainId": chain_id,
        "address": delegate,
        "nonce": nonce,
        "yParity": draw(st.integers(0, 1)),
        "r": draw(u256),
        "s": draw(u256),
        "authority": "unknown",
    }


@st.composite
def transaction_json(draw: st.DrawFn, case: dict[str, Any]) -> dict[str, Any]:
    """``case`` written as a client might: mixed number forms, address cases, optional defaults."""
    out: dict[str, Any] = {"type": draw(st.sampled_from([case["type"], hex(case["type"])]))}
    for name in ("chainId", "nonce", "gas", "gasPrice", "maxFeePerGas", "maxPriorityFeePerGas"):
        if name in case:
            out[name] = draw(quantity_json(case[name]))
    if case["value"] != 0 or draw(st.booleans()):
        out["value"] = draw(quantity_json(case["value"]))
    if case["data"] or draw(st.booleans()):
        out["data"] = "0x" + case["data"].hex()
    if case["to"] is not None:
        out["to"] = draw(address_json(bytes.fromhex(case["to"][2:])))
    elif draw(st.booleans()):
        out["to"] = None
    if "accessList" in case and (case["accessList"] or draw(st.booleans())):
        out["accessList"] = [
            {
                "address": draw(address_json(bytes.fromhex(address[2:]))),
                "storageKeys": ["0x" + key.hex() for key in keys],
            }
            for address, keys in case["accessList"]
        ]
    if "authorizationList" in case:
        out["authorizationList"] = [
            {
                "chainId": draw(quantity_json(a["chainId"])),
                "address": draw(address_json(bytes.fromhex(a["address"][2:]))),
                "nonce": draw(quantity_json(a["nonce"])),
                "yParity": a["yParity"],
                "r": draw(quantity_json(a["r"])),
                "s": draw(quantity_json(a["s"])),
            }
            for a in case["authorizationList"]
        ]
    return out


def eth_account_dict(case: dict[str, Any]) -> dict[str, Any]:
    """``case`` in the shape eth_account.Account.sign_transaction expects."""
    out: dict[str, Any] = {
        "chainId": case["chainId"],
        "nonce": case["nonce"],
        "gas": case["gas"],
        "value": case["value"],
        "data": "0x" + case["data"].hex(),
    }
    if case["type"] != 0:
        out["type"] = case["type"]
    if case["to"] is not None:
        out["to"] = case["to"]
    for name in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas"):
        if name in case:
            out[name] = case[name]
    if "accessList" in case:
        out["accessList"] = [
            {"address": address, "storageKeys": ["0x" + key.hex() for key in keys]}
            for address, keys in case["accessList"]
        ]
    if "authorizationList" in case:
        out["authorizationList"] = [
            {name: a[name] for name in ("chainId", "address", "nonce", "yParity", "r", "s")}
            for a in case["authorizationList"]
        ]
    return out
