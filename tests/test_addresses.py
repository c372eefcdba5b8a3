"""Outbound webhooks reach only public addresses in production (no SSRF)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.addresses import PublicOnlyResolver, parse_networks, permitted
from gateway.api.webhooks import url_errors
from gateway.settings import Settings


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
