"""The event loop of ``serve`` and ``worker``: uvloop by default, asyncio's on request."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import uvloop

from gateway.errors import ConfigError
from gateway.event_loop import run
from gateway.settings import Settings
from tests.test_crash_restart import gateway_env, serving


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default_outside_windows() -> None:
    expected = "asyncio" if sys.platform == "win32" else "uvloop"
    assert Settings().event_loop == expected


def test_run_uses_the_kind_asked_for() -> None:
    assert run(_loop_type(), "uvloop") is uvloop.Loop
    assert not issubclass(run(_loop_type(), "asyncio"), uvloop.Loop)


def test_a_missing_uvloop_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on a machine without it
    main = _loop_type()
    with pytest.raises(ConfigError, match="BUDBRINGER_EVENT_LOOP=asyncio"):
        run(main, "uvloop")
    assert main.cr_frame is None  # closed, never left un-awaited


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
async def test_serve_on_either_loop_answers_and_stops_on_sigterm(tmp_path: Path, kind: str) -> None:
    gw = gateway_env(tmp_path, BUDBRINGER_EVENT_LOOP=kind)
    async with serving(gw) as proc:
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, err.decode()[-2000:]
