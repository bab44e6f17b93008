"""Where the service may send a webhook: the operator's allowlist and the addresses never reached.

A destination is checked by the addresses its host resolves to, not by how its URL spells them, so
every spelling of one address (dotted, decimal ``2130706433``, hex ``0x7f.1``, IPv6, IPv4-mapped
``::ffff:127.0.0.1``, IPv4-compatible ``::7f00:1``, NAT64 ``64:ff9b::7f00:1``, 6to4) gets the same
answer. The rule, per address:

- inside a network the operator listed (``webhook_allowed_destinations``: IPs and CIDR networks): allowed;
- else, when the operator listed anything and the URL's host name is not a listed name: refused
  (the list limits destinations);
- else a public unicast address (``is_global``, not multicast, also for the IPv4 address embedded in an
  IPv6 one) is allowed, and everything else (loopback, private, link-local including the cloud metadata
  address 169.254.169.254, shared, reserved, unspecified ``0.0.0.0``) is refused.

A host is allowed only when every address it resolves to is. Checked when a URL is set and again at
delivery, where the transport connects only to the addresses this module approved (no second lookup an
attacker's DNS could answer differently: DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$"
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# IANA special-purpose ranges, refused even where this Python's ``is_global`` says otherwise (it has
# varied between versions, e.g. for 192.0.0.0/24).
_NEVER_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
RESOLVE_TIMEOUT = 2.0


class DestinationRefused(ConnectionRefusedError):
    """A webhook destination outside what the operator allows (raised by the transport as an OSError, so
    the dispatcher records it as a failed attempt; its name is the outbox's ``last_error``)."""


def _embedded_v4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), which is what is really reached."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or int(address) >> 32 == 0:
        # NAT64, and the deprecated IPv4-compatible ``::a.b.c.d`` form.
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: Address) -> bool:
    """A globally reachable unicast address, judged by the IPv4 address inside an IPv6 one too."""
    for candidate in (address, _embedded_v4(address)):
        if candidate is None:
            continue
        if not candidate.is_global or candidate.is_multicast or candidate.is_unspecified:
            return False
        if any(candidate.version == n.version and candidate in n for n in _NEVER_PUBLIC):
            return False
    return True


def parse_address(host: str) -> Address | None:
    """``host`` as an IP address when it is a literal one (brackets and an IPv6 zone allowed), else None."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """The operator's allowlist: host names (exact, case-insensitive) and IP networks."""

    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> DestinationPolicy:
        names: set[str] = set()
        networks: list[Network] = []
        for raw in entries:
            entry = raw.strip().lower()
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not _HOSTNAME.match(entry):
                raise ValueError("an allowed destination is neither a host name nor an IP network")
            names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    @property
    def restricted(self) -> bool:
        return bool(self.names or self.networks)

    def _listed(self, address: Address) -> bool:
        inner = _embedded_v4(address)
        return any(
            candidate.version == network.version and candidate in network
            for network in self.networks
            for candidate in (address, inner)
            if candidate is not None
        )

    def address_allowed(self, host: str, address: Address) -> bool:
        if self._listed(address):
            return True
        if self.restricted and host.strip("[]").lower().rstrip(".") not in self.names:
            return False
        return is_public(address)

    def check(self, host: str, addresses: Sequence[Address]) -> None:
        """Raise ``DestinationRefused`` unless every address of ``host`` is allowed (and there is one)."""
        if not addresses or not all(self.address_allowed(host, a) for a in addresses):
            raise DestinationRefused("webhook destination not allowed")


async def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to for a TCP connection (a literal resolves to itself)."""
    literal = parse_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
    return found
