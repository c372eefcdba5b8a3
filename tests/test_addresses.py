"""Outbound webhooks reach only public addresses in production (no SSRF)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.addresses import (
    AddressRefused,
    PublicOnlyResolver,
    check_host,
    check_resolved,
    literal_address,
    parse_networks,
    permitted,
    refusal,
)
from gateway.api.webhooks import url_errors
from gateway.clock import SystemClock
from gateway.models import WebhookEndpoint, WebhookMessage
from gateway.settings import Settings, WebhookSettings
from gateway.webhooks import WebhookService


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        ("8.8.8.8", [], True),
        ("2001:4860:4860::8888", [], True),
        ("10.0.0.5", [], False),
        ("192.168.1.1", [], False),
        ("127.0.0.1", [], False),
        ("169.254.169.254", [], False),  # cloud metadata
        ("::1", [], False),
        ("fd00::1", [], False),
        ("10.20.1.5", ["10.20.0.0/16"], True),
        ("10.21.1.5", ["10.20.0.0/16"], False),
    ],
)
def test_which_addresses_are_permitted(host: str, allowed: list[str], ok: bool) -> None:
    assert permitted(host, parse_networks(allowed)) is ok


async def test_the_resolver_refuses_a_name_that_resolves_to_a_private_address() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://localhost:{server.port}/"
        guarded = aiohttp.TCPConnector(resolver=PublicOnlyResolver([]))
        async with aiohttp.ClientSession(connector=guarded) as session:
            with pytest.raises(aiohttp.ClientConnectorError):
                await session.get(url)
        allowed = aiohttp.TCPConnector(resolver=PublicOnlyResolver(parse_networks(["127.0.0.0/8"])))
        async with (
            aiohttp.ClientSession(connector=allowed) as session,
            session.get(url) as resp,
        ):
            assert await resp.text() == "hello"


def test_production_refuses_a_private_literal_address_when_the_endpoint_is_made() -> None:
    prod = Settings(environment="production", secret_key="s" * 40)
    assert [e["type"] for e in url_errors("https://10.1.2.3/hook", prod, ["url"])] == [
        "url_private"
    ]
    assert [e["type"] for e in url_errors("https://[fd00::1]/hook", prod, ["url"])] == [
        "url_private"
    ]
    assert url_errors("https://8.8.8.8/hook", prod, ["url"]) == []
    assert url_errors("https://platform.example.no/hook", prod, ["url"]) == []
    internal = Settings(
        environment="production", secret_key="s" * 40, webhooks={"allowed_networks": ["10.0.0.0/8"]}
    )
    assert url_errors("https://10.1.2.3/hook", internal, ["url"]) == []


# --------------------------------------------------------------------------- issue 11

LOOPBACK_SPELLINGS = [
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.0.0.1.",
    "[::127.0.0.1]",
    "[::ffff:127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "0",
    "224.0.0.1",
    "[ff02::1]",
    "[::]",
    "100.64.0.1",
    "[fe80::1]",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "intranet",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_production_refuses_every_spelling_of_an_internal_address(host: str) -> None:
    prod = Settings(environment="production", secret_key="s" * 40)
    errors = url_errors(f"https://{host}/hook", prod, ["url"])
    assert [e["type"] for e in errors] == ["url_private"], host


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("0.0.0.0", "this network"),
        ("10.1.2.3", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("::ffff:10.0.0.1", "private, inside an IPv6 address"),
        ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata), inside an IPv6 address"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("2002:a00:1::", "private, inside an IPv6 address"),
        ("2001:0:4136:e378::1", "IETF"),  # Teredo
        ("fd00::1", "unique local"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2002:808:808::1", None),
    ],
)
def test_the_refused_ranges(address: str, why: str | None) -> None:
    found = refusal(ipaddress.ip_address(address))
    if why is None:
        assert found is None
    else:
        assert found is not None and found.startswith(why), found


def test_legacy_ipv4_spellings_are_read_as_addresses() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    for host in ("127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.0.0.1", "127.0.0.1."):
        assert literal_address(host) == loopback, host
    assert literal_address("0") == ipaddress.ip_address("0.0.0.0")
    for name in ("example.no", "1.example", "0x7g.0.0.1", "256.256.256.256.256"):
        assert literal_address(name) is None, name


def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    check_resolved("platform.example.no", ["8.8.8.8", "2001:4860:4860::8888"], [])
    with pytest.raises(AddressRefused):
        check_resolved("platform.example.no", ["8.8.8.8", "127.0.0.1"], [])  # one is enough
    with pytest.raises(AddressRefused):
        check_resolved("platform", ["8.8.8.8"], [])  # a single label must be allowed
    check_resolved("platform", ["10.20.1.5"], parse_networks(["10.20.0.0/16"]))


async def test_registration_resolves_the_name() -> None:
    with pytest.raises(AddressRefused):
        await check_host("localhost", 443, [])
    await check_host("localhost", 443, parse_networks(["127.0.0.0/8", "::1/128"]))


def _endpoint(url: str) -> tuple[WebhookEndpoint, WebhookMessage]:
    now = datetime.now(UTC)
    endpoint = WebhookEndpoint(
        id="e1", tenant_id="t1", url=url, event_types=["message.read"],
        secret="whsec_" + "A" * 32, created_at=now, updated_at=now,
    )  # fmt: skip
    message = WebhookMessage(
        id="msg_1", tenant_id="t1", endpoint_id="e1", event_type="message.read",
        body="{}", created_at=now, updated_at=now,
    )  # fmt: skip
    return endpoint, message


@pytest.mark.parametrize("host", ["127.1", "0x7f000001", "2130706433", "localhost", "127.0.0.1"])
async def test_each_delivery_checks_the_address_and_connects_to_it(host: str) -> None:
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=302, headers={"Location": "http://10.0.0.1/"})

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with TestServer(app, host="127.0.0.1") as server:
        endpoint, message = _endpoint(f"http://{host}:{server.port}/hook")
        store: Any = None  # _post touches no store
        guarded = WebhookService(store, SystemClock(), WebhookSettings(), public_only=True)
        try:
            outcome = await guarded._post(endpoint, message)
        finally:
            await guarded.aclose()
        assert outcome.code == "address_not_public"
        assert hits == []  # no connection reached the server

        allowed = WebhookSettings(allowed_networks=["127.0.0.0/8"])
        internal = WebhookService(store, SystemClock(), allowed, public_only=True)
        try:
            outcome = await internal._post(endpoint, message)
        finally:
            await internal.aclose()
        if outcome.code == "client_error":
            # aiohttp itself refuses some legacy spellings ("not a canonical IPv4 address")
            assert host in ("127.1", "2130706433") and hits == []
            return
        assert hits == ["/hook"]
        assert outcome.attempt.status_code == 302  # a redirect is not followed
        assert outcome.code == "http_302"
