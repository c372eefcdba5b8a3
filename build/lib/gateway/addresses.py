"""Which network addresses outbound webhooks may reach (server-side request forgery).

A tenant's key can register any URL as a webhook endpoint. In production the
gateway must not become a way into the municipality's internal network or a
cloud metadata service, so only public addresses are reached, unless an
operator lists an internal network the platform really lives on
(``BUDBRINGER_WEBHOOKS__ALLOWED_NETWORKS``). The check runs when the
connection is made, after DNS, so a name that later resolves elsewhere (DNS
rebinding) is caught too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def permitted(host: str, allowed: Sequence[Network]) -> bool:
    """True for a public address, or one inside an allowed network."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    return ip.is_global or any(ip in net for net in allowed)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp, then keeps only permitted addresses."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        self._inner = DefaultResolver()
        self._allowed = list(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if permitted(r["host"], self._allowed)]
        if not kept:
            raise OSError("the endpoint resolves to no public address")
        return kept

    async def close(self) -> None:
        await self._inner.close()
