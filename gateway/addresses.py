"""Which network addresses outbound webhooks may reach (server-side request forgery).

A tenant's key can register any URL as a webhook endpoint. In production the
gateway must not become a way into the municipality's internal network or a
cloud metadata service, so only public addresses are reached, unless an
operator lists an internal network the platform really lives on
(``BUDBRINGER_WEBHOOKS__ALLOWED_NETWORKS``).

One rule (:func:`refusal`) judges an address, in every spelling: the host of a
URL is read as an IPv4 address in each legacy form too (``127.1``,
``2130706433``, ``0x7f000001``, ``0177.0.0.1``, a trailing dot), and an IPv6
address carrying an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by the
IPv4 address inside. Names are resolved and every address they resolve to must
pass; ``localhost`` and single-label names must resolve into an allowed network.
The check runs when an endpoint is registered and again at every delivery
(DNS can change), and the connection goes to the address just checked: the
guarded resolver is the connector's only lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_N = ipaddress.ip_network
# Refused ranges, with the name an error gives. The README's table is this one.
REFUSED: tuple[tuple[Network, str], ...] = (
    (_N("0.0.0.0/8"), "this network (0.0.0.0/8)"),
    (_N("10.0.0.0/8"), "private"),
    (_N("100.64.0.0/10"), "carrier-grade NAT"),
    (_N("127.0.0.0/8"), "loopback"),
    (_N("169.254.0.0/16"), "link-local (cloud metadata)"),
    (_N("172.16.0.0/12"), "private"),
    (_N("192.0.0.0/24"), "IETF protocol assignments"),
    (_N("192.0.2.0/24"), "documentation"),
    (_N("192.88.99.0/24"), "6to4 relay"),
    (_N("192.168.0.0/16"), "private"),
    (_N("198.18.0.0/15"), "benchmarking"),
    (_N("198.51.100.0/24"), "documentation"),
    (_N("203.0.113.0/24"), "documentation"),
    (_N("224.0.0.0/4"), "multicast"),
    (_N("240.0.0.0/4"), "reserved and broadcast"),
    (_N("::/128"), "unspecified"),
    (_N("::1/128"), "loopback"),
    (_N("::/96"), "IPv4-compatible (deprecated)"),
    (_N("64:ff9b:1::/48"), "local-use NAT64"),
    (_N("100::/64"), "discard"),
    (_N("2001::/23"), "IETF protocol assignments (Teredo, ORCHID, ...)"),
    (_N("2001:db8::/32"), "documentation"),
    (_N("fc00::/7"), "unique local (private)"),
    (_N("fe80::/10"), "link-local"),
    (_N("fec0::/10"), "site-local (deprecated)"),
    (_N("ff00::/8"), "multicast"),
)
_NAT64 = _N("64:ff9b::/96")
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


class AddressRefused(OSError):
    """An endpoint host that may not be reached; the text names the range, not the host."""


def parse_networks(cidrs: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as inet_aton would (and browsers do): one to four parts, each
    decimal, ``0x`` hex or ``0``-led octal, the last filling the remaining bytes.
    None when it is not such a number."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        low = part.lower()
        try:
            if low.startswith("0x"):
                numbers.append(int(low[2:] or "0", 16))
            elif len(low) > 1 and low.startswith("0"):
                numbers.append(int(low, 8))
            else:
                numbers.append(int(low, 10) if low.isdigit() else -1)
        except ValueError:
            return None
        if numbers[-1] < 0:
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host spells, in any form; None for a name."""
    host = host.strip("[]").split("%", 1)[0]  # brackets, an IPv6 zone id
    host = host[:-1] if host.endswith(".") else host
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return _legacy_ipv4(host)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress, allowed: Sequence[Network] = ()) -> str | None:
    """Why ``ip`` may not be reached (the range's name), or None when it may."""
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = refusal(inner, allowed)
            return None if why is None else f"{why}, inside an IPv6 address"
    for net, why in REFUSED:
        if ip.version == net.version and ip in net:
            return why
    if not ip.is_global:
        return "not a public address"
    return None


def permitted(host: str, allowed: Sequence[Network]) -> bool:
    """True for a public address, or one inside an allowed network."""
    ip = literal_address(host)
    if ip is None:
        raise ValueError("not an IP address")
    return refusal(ip, allowed) is None


def is_ip_literal(host: str) -> bool:
    return literal_address(host) is not None


def is_local_name(host: str) -> bool:
    """``localhost`` (in any case, with a trailing dot) or a single-label name, which a
    resolver completes with its own search domains."""
    name = host.rstrip(".").lower()
    return name in _LOCAL_NAMES or name.endswith(".localhost") or "." not in name


def check_literal(host: str, allowed: Sequence[Network]) -> IPAddress | None:
    """The literal address ``host`` spells once checked (AddressRefused if refused);
    None for a name, which :func:`check_resolved` judges after DNS."""
    ip = literal_address(host)
    if ip is not None:
        why = refusal(ip, allowed)
        if why is not None:
            raise AddressRefused(f"the address is not public ({why})")
    return ip


def check_resolved(host: str, addresses: Sequence[str], allowed: Sequence[Network]) -> None:
    """Every address ``host`` resolved to must pass; a local name's must be allowed."""
    local = is_local_name(host)
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if local:
            inside = any(ip.version == n.version and ip in n for n in allowed)
            why = None if inside else "a local name outside webhooks.allowed_networks"
        else:
            why = refusal(ip, allowed)
        if why is not None:
            raise AddressRefused(f"the name resolves to an address that is not public ({why})")


async def check_host(host: str, port: int, allowed: Sequence[Network]) -> None:
    """Registration: the host, resolved now, is reachable under the rules. A name that
    does not resolve yet passes (nothing to judge); each delivery checks again."""
    if check_literal(host, allowed) is not None:
        return
    if is_local_name(host) and not allowed:
        raise AddressRefused("the address is not public (a local name)")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
        )
    except (OSError, UnicodeError):
        return
    check_resolved(host, [str(info[4][0]) for info in infos], allowed)


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp, then refuses the host unless every address passes; the
    connector connects to these very addresses (no second lookup)."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        self._inner = DefaultResolver()
        self._allowed = list(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        ip = check_literal(host, self._allowed)
        if ip is not None:
            return [
                {
                    "hostname": host,
                    "host": str(ip),
                    "port": port,
                    "family": socket.AF_INET if ip.version == 4 else socket.AF_INET6,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]
        if is_local_name(host) and not self._allowed:
            raise AddressRefused("the address is not public (a local name)")
        results = await self._inner.resolve(host, port, family)
        check_resolved(host, [r["host"] for r in results], self._allowed)
        return results

    async def close(self) -> None:
        await self._inner.close()
