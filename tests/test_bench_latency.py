"""``budbringer bench --latency``: the sinks answer after a fixed or long-tailed time
(gateway/bench/latency.py); checked by what they draw and answer, never by the clock."""

from __future__ import annotations

import tempfile

import aiohttp
import pytest

from gateway.bench.latency import NO_LATENCY, STALL_SECONDS, Latency
from gateway.bench.sinks import ACCOUNT_SID, SinkProcess
from gateway.cli import main


def test_fixed_and_long_tail_latencies_parse() -> None:
    assert Latency.parse("0") == NO_LATENCY
    assert Latency.parse("80ms") == Latency(0.08, 0.08)
    assert Latency.parse("0.08s") == Latency(0.08, 0.08)
    tail = Latency.parse("50ms:300ms")
    assert tail == Latency(0.05, 0.3) and not tail.fixed
    assert str(tail) == "50ms:300ms" and str(Latency.parse("0.08s")) == "80ms"
    for bad in ("fast", "300ms:50ms", "0:300ms", "-5ms"):
        with pytest.raises(ValueError):
            Latency.parse(bad)


def test_the_long_tail_has_its_median_and_p99_and_rare_stalls() -> None:
    sampler = Latency.parse("50ms:300ms").sampler("twilio")
    draws = sorted(sampler.draw() for _ in range(100_000))
    assert 0.045 < draws[50_000] < 0.055
    assert 0.27 < draws[99_000] < 0.33
    stalls = sum(d == STALL_SECONDS for d in draws)
    assert 50 < stalls < 150  # one in a thousand
    # the same seed draws the same times: runs are repeatable
    resampler = Latency.parse("50ms:300ms").sampler("twilio")
    again = sorted(resampler.draw() for _ in range(100_000))
    assert draws == again


def test_a_fixed_latency_draws_always_the_same() -> None:
    sampler = Latency.parse("80ms").sampler("fcm")
    assert {sampler.draw() for _ in range(100)} == {0.08}


async def test_a_sink_with_latency_still_answers_and_records() -> None:
    with tempfile.TemporaryFile() as log:
        sink = SinkProcess("twilio", log, Latency.parse("20ms:60ms"))
        await sink.start()
        try:
            url = f"{sink.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
            async with aiohttp.ClientSession() as http:
                for n in range(5):
                    form = {"To": f"+4791{n:06d}", "Body": "Skolen er stengt", "From": "Skolen"}
                    headers = {"Authorization": "Basic eDp5"}
                    async with http.post(url, data=form, headers=headers) as resp:
                        assert resp.status == 201
                        assert (await resp.json())["status"] == "queued"
            stats = await sink.stats()
            assert stats["received"] == stats["distinct"] == 5
        finally:
            await sink.stop()


def test_the_bench_refuses_a_latency_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--latency", "soon"])
    assert "--latency: not a duration" in capsys.readouterr().err
