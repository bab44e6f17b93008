"""What the console says about an approval request, in words: the one-sentence summary, the warnings,
the fee, the time left, the rule that asked for approval. Plain data in, plain data out (no HTML: the
templates escape and lay it out), so the wording is tested without a browser.

Amounts are exact: wei are grouped in thousands and ETH comes from the service's exact decimal string.
``notes`` are the operator's books for this request (``BookService.notes_for``): an address in the
address book gets its label beside it ("0x5aAe…BeAed (payroll, from your address book)"), an ERC-20 or
Permit amount of a token in the token book reads in its units ("250 USDC (250,000,000 base units)"),
else it stays in the token's raw units; a registered function is named, with its arguments when the
calldata decoded. Labels are the operator's words, shown as text (the templates escape them).
"""

from __future__ import annotations

from typing import Any

UINT256_MAX = 2**256 - 1

# Chain names approvers recognise; any other chain is shown by its number alone.
CHAINS = {
    1: "Ethereum mainnet",
    10: "OP Mainnet",
    56: "BNB Smart Chain",
    100: "Gnosis",
    137: "Polygon",
    8453: "Base",
    42161: "Arbitrum One",
    17000: "Holesky",
    11155111: "Sepolia",
    31337: "local test chain",
}


def grouped(number: str | int) -> str:
    """``1500000000000000000`` -> ``1,500,000,000,000,000,000`` (exact: no float on the way)."""
    text = str(number)
    if not text.isdigit():
        return text
    return f"{int(text):,}"


def short_address(address: str | None) -> str:
    if not address:
        return ""
    return address if len(address) <= 12 else f"{address[:6]}…{address[-5:]}"


def chain_words(chain_id: Any) -> str:
    try:
        number = int(chain_id)
    except (TypeError, ValueError):
        return "an unnamed chain"
    name = CHAINS.get(number)
    return f"{name} (chain {number})" if name else f"chain {number}"


def time_left(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    if hours:
        return f"{hours} h {minutes} min left"
    if minutes:
        return f"{minutes} min left"
    return f"{seconds} s left"


Notes = dict[str, Any]
NO_NOTES: Notes = {"addresses": {}, "tokens": {}, "function": None}


def labelled(address: str | None, notes: Notes) -> str:
    """The short address, with its address book label beside it when it has one."""
    shown = short_address(address)
    entry = (notes.get("addresses") or {}).get(str(address or "").lower())
    return f"{shown} ({entry['label']}, from your address book)" if entry else shown


def units(raw: str, decimals: int) -> str:
    """Base units as an exact decimal in token units: ``250000000``, 6 -> ``250``; ``1500001``, 6 ->
    ``1.500001`` (grouped in thousands; no float)."""
    whole, frac = divmod(int(raw), 10**decimals)
    text = f"{whole:,}"
    if frac:
        text += "." + f"{frac:0{decimals}d}".rstrip("0")
    return text


def _token(contract: str | None, notes: Notes) -> dict[str, Any] | None:
    return (notes.get("tokens") or {}).get(str(contract or "").lower())


def token_name(contract: str | None, notes: Notes) -> str:
    known = _token(contract, notes)
    return f"{known['symbol']} ({short_address(contract)})" if known else short_address(contract)


def _amount(raw: str, unbounded: bool, contract: str | None = None, notes: Notes = NO_NOTES) -> str:
    if unbounded:
        return "an unlimited amount"
    known = _token(contract, notes)
    if known and str(raw).isdigit():
        return f"{units(raw, int(known['decimals']))} {known['symbol']} ({grouped(raw)} base units)"
    return f"{grouped(raw)} units"


def summary(item: dict[str, Any], notes: Notes = NO_NOTES) -> str:
    """One plain sentence of what will happen if the request is approved."""
    view = item.get("view", {})
    key = view.get("key_label") or item.get("key_id") or "the key"
    scheme = view.get("scheme")
    if scheme == "transaction":
        chain = chain_words(view.get("chainId"))
        call = view.get("token_call")
        if call:
            token = token_name(view.get("to"), notes)
            method = call.get("method", "call")
            amount = _amount(call.get("amount", "0"), bool(call.get("unbounded")), view.get("to"), notes)
            if method in ("approve", "increaseAllowance", "setApprovalForAll"):
                return (
                    f"Allow {labelled(call.get('recipient'), notes)} to spend {amount} of token {token} "
                    f"on {chain} from {key}"
                )
            return (
                f"Call {method} on token {token}: {amount} to {labelled(call.get('recipient'), notes)} "
                f"on {chain} from {key}"
            )
        if view.get("contractCreation"):
            return f"Deploy a contract with {view.get('value_eth')} ETH on {chain} from {key}"
        sentence = (
            f"Send {view.get('value_eth')} ETH ({grouped(view.get('value', '0'))} wei) to "
            f"{labelled(view.get('to'), notes)} on {chain} from {key}"
        )
        registered = notes.get("function")
        if registered:
            sentence += f", calling {registered['signature']}"
        elif view.get("selector"):
            sentence += f", calling function {view.get('selector')}"
        return sentence
    if scheme == "eip712":
        domain = view.get("domain") or {}
        name = domain.get("name") or "an unnamed application"
        permits = view.get("permits") or []
        if permits:
            p = permits[0]
            amount = _amount(p.get("amount", "0"), bool(p.get("unbounded")), p.get("token"), notes)
            return (
                f"Sign a permit letting {labelled(p.get('spender'), notes)} spend {amount} of token "
                f"{token_name(p.get('token'), notes)} with {key}"
            )
        chain = chain_words(domain.get("chainId"))
        # The domain's name is the requester's word, not a verified identity: say so.
        primary = view.get("primary_type")
        return f'Sign typed data {primary} for an application calling itself "{name}" on {chain} with {key}'
    if scheme == "eip7702_authorization":
        # Signed on its own, then carried by any sponsor's type-4 transaction: say whose account
        # changes, to whose code, and where.
        chain = "any chain" if view.get("any_chain") else chain_words(view.get("chain_id"))
        return (
            f"Delegate account {labelled(view.get('authority'), notes)} to the code of "
            f"{labelled(view.get('delegate'), notes)} on {chain} (EIP-7702 authorisation, account nonce "
            f"{view.get('nonce')}) with {key}"
        )
    if scheme == "secret_read":
        fields = ", ".join(view.get("fields") or []) or "all fields"
        return (
            f"Release version {view.get('version')} of secret {view.get('folder')}/{view.get('name')} "
            f"({fields}) to {(view.get('requested_by') or {}).get('name', 'the requester')}"
        )
    if scheme == "key_grant":
        operations = ", ".join(view.get("operations") or []) or "no access"
        requester = (view.get("requested_by") or {}).get("name", "the requester")
        if view.get("action") == "revoke_grant":
            return (
                f"Revoke grant {view.get('grant_id')} ({operations}) of {view.get('grantee')} on key {key}, "
                f"asked by {requester}"
            )
        until = f" until {view['expires_at']}" if view.get("expires_at") else ""
        return f"Grant {view.get('grantee')} {operations} on key {key}{until}, asked by {requester}"
    if scheme == "key_lifecycle":
        action = str(view.get("action", "change"))
        requester = (view.get("requested_by") or {}).get("name", "the requester")
        because = f", because: {view['reason']}" if view.get("reason") else ""
        return (
            f"{action.capitalize()} key {key} ({view.get('key_id')}, {view.get('key_state')} to "
            f"{view.get('state_after')}), asked by {requester}{because}"
        )
    if "message_text" in view or "message_hex" in view:
        return f"Sign a {view.get('message_length')}-byte message with {key}"
    return f"{item.get('operation', 'Operation')} with {key}"


def dangers(item: dict[str, Any]) -> list[str]:
    """What an approver must not miss: EIP-7702 delegations, unlimited approvals or permits, and a key
    transition that cannot be undone."""
    view = item.get("view", {})
    out = []
    if view.get("destroys_private_key"):
        out.append("Irreversible: the private key is destroyed in the token and can never sign again")
    elif view.get("irreversible"):
        out.append("Irreversible: the key can never sign again")
    for delegate in view.get("delegates") or []:
        out.append(f"EIP-7702 delegation: this account's code becomes {delegate}'s")
    if view.get("scheme") == "eip7702_authorization":
        where = " on every chain (chain id 0)" if view.get("any_chain") else ""
        out.append(f"EIP-7702 delegation: this account's code becomes {view.get('delegate')}'s{where}")
    call = view.get("token_call") or {}
    if call.get("unbounded"):
        out.append(f"Unlimited approval: {call.get('recipient')} may move every token of this kind")
    if call.get("method") == "setApprovalForAll" and call.get("approved"):
        out.append(f"Approval for all: {call.get('recipient')} may move every token of this collection")
    for permit in view.get("permits") or []:
        if permit.get("unbounded"):
            out.append(f"Unlimited permit: {permit.get('spender')} may move every token of this kind")
    return out


def fee(item: dict[str, Any]) -> str | None:
    view = item.get("view", {})
    if view.get("scheme") != "transaction":
        return None
    return f"{view.get('max_gas_cost_eth')} ETH ({grouped(view.get('maxGasCost', '0'))} wei) at most"


def function(item: dict[str, Any], notes: Notes = NO_NOTES) -> str | None:
    """The called function: decoded when it is a known token call or a registered function, else
    its selector."""
    view = item.get("view", {})
    call = view.get("token_call")
    if call:
        return str(call.get("signature") or call.get("method"))
    registered = notes.get("function")
    if registered:
        decoded = "decoded" if registered.get("arguments") is not None else "arguments not decoded"
        return f"{registered['signature']} (registered by an operator; {decoded})"
    if view.get("selector"):
        return f"selector {view['selector']} (not decoded)"
    return None


def reasons(item: dict[str, Any]) -> list[str]:
    """Why the request needs approval: each rule's own words and where it comes from."""
    out = []
    for reason in item.get("view", {}).get("reasons") or []:
        out.append(f"{reason.get('message')} (rule {reason.get('rule_id')} of policy {reason.get('policy')})")
    if not out:
        rules = ", ".join(item.get("view", {}).get("rules") or [])
        out.append(f"rule {rules} asks for approval" if rules else "a policy asks for approval")
    return out


def requirements(item: dict[str, Any]) -> list[str]:
    progress = item.get("progress", {})
    return [
        f"{progress.get(r['group'], 0)} of {r['quorum']} approvals from {r['group']}"
        for r in item.get("requirements", [])
    ]


def table(value: Any) -> Any:
    """A nested JSON value as rows for the nested-table macro: (name, scalar-or-rows)."""
    if isinstance(value, dict):
        return [(str(k), table(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [(str(i), table(v)) for i, v in enumerate(value)]
    return "" if value is None else str(value)


def arguments(notes: Notes) -> list[tuple[str, Any]] | None:
    """A registered function's decoded arguments as rows: ``0 (address)`` -> the value (an address
    with its label when it has one)."""
    registered = notes.get("function") or {}
    decoded = registered.get("arguments")
    if not decoded:
        return None
    rows: list[tuple[str, Any]] = []
    for i, argument in enumerate(decoded):
        value = argument.get("value")
        if argument.get("type") == "address" and isinstance(value, str):
            entry = (notes.get("addresses") or {}).get(value.lower())
            value = f"{value} ({entry['label']}, from your address book)" if entry else value
        rows.append((f"{i} ({argument.get('type')})", table(value)))
    return rows


def present(page: dict[str, Any], notes: Notes = NO_NOTES) -> dict[str, Any]:
    item = page["item"]
    view = item.get("view", {})
    return {
        **page,
        "summary": summary(item, notes),
        "dangers": dangers(item),
        "fee": fee(item),
        "function": function(item, notes),
        "arguments": arguments(notes),
        "reasons": reasons(item),
        "requirements": requirements(item),
        "time_left": time_left(page.get("seconds_left")),
        "requested_by": (view.get("requested_by") or {}).get("name") or item.get("requester_id"),
        "requested_at": view.get("requested_at") or item.get("created_at"),
        "typed": table(
            {
                "primary type": view.get("primary_type"),
                "domain": view.get("domain"),
                "message": view.get("message"),
            }
        )
        if view.get("scheme") == "eip712"
        else None,
        "raw": table(view),
    }
