"""``budbringer demo``: the demo municipality end to end through the development outbox."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import aiohttp
import pytest

from gateway.demo import demo_directory, run_demo, start_demo


async def test_quiet_demo_fills_the_outbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "demo"
    assert await run_demo(directory, quiet=True) == 0
    assert capsys.readouterr().out == ""

    outbox = directory / "outbox"
    emails = sorted((outbox / "email").glob("*.eml"))
    assert len(emails) > 30
    for line_file in ("sms.jsonl", "push.jsonl"):
        lines = [json.loads(x) for x in (outbox / line_file).read_text().splitlines()]
        assert lines, line_file
        assert {x["channel"] for x in lines} == {line_file.split(".")[0]}
        assert len({x["delivery_id"] for x in lines}) == len(lines)  # each sent once
    first = emails[0].read_text(encoding="utf-8")
    assert "Message-ID: <" in first and "List-Unsubscribe:" in first
    # The class message carries the invitation as a PDF attachment (issue 16).
    invitations = [e for e in emails if 'filename="Innkalling.pdf"' in e.read_text("utf-8")]
    assert len(invitations) > 20


async def test_demo_table_shows_channels_and_suppressions_with_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_demo(tmp_path / "demo") == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line[:1] in ("c", "l", "p")]
    channels = {row[row.index("guardian") + 1] for row in rows if "guardian" in row}
    assert {"inapp", "email", "sms", "push", "none"} <= channels

    def suppressed(recipient: str) -> str:
        [line] = [x for x in out.splitlines() if x.startswith(recipient) and "suppressed" in x]
        return line

    assert "blocked" in suppressed("p26b")
    assert "no_parental_responsibility" in suppressed("p25b")
    assert "adult_no_consent" in suppressed("p29a")
    assert not any(x.startswith("p25c") and "suppressed" in x for x in out.splitlines())  # granted

    # The protected guardian (strictly confidential address): no name, no id, a pseudonym.
    persons = {p["id"]: p for p in demo_directory(date.today())["persons"]}
    protected = persons["p27a"]
    assert protected["protection"] == "strictly_confidential"
    name = f"{protected['given_name']} {protected['family_name']}"
    assert name not in out
    assert not any(x.startswith("p27a") for x in out.splitlines())  # not even the id
    pseudonymous = [x for x in out.splitlines() if x.startswith("protected-")]
    assert {x.split()[3] for x in pseudonymous} == {"inapp", "push", "email"}  # still told
    ordinary = persons["p27b"]
    assert f"{ordinary['given_name']} {ordinary['family_name']}" in out
    tables, _, pages = out.partition("\nPages: ")
    assert "deliveries:" in tables.splitlines()[-1]
    assert "Scheduled: 'Turdag i dag' for " in tables and "(scheduled)" in tables
    assert "budbringer demo --serve" in pages


async def test_the_served_demo_links_open_its_message_for_staff_and_a_parent(
    tmp_path: Path,
) -> None:
    run = await start_demo(tmp_path / "demo")
    try:
        links = await run.links()
        assert links["staff"].startswith(run.url + "/staff/signin/")
        # unsafe: the jar keeps cookies of an IP address (127.0.0.1)
        for name, expected in (("staff", "Foreldremøte torsdag"), ("parent", "Foreldremøte")):
            jar = aiohttp.CookieJar(unsafe=True)
            async with (
                aiohttp.ClientSession(cookie_jar=jar) as session,
                session.get(links[name]) as resp,
            ):
                assert resp.status == 200, name
                assert expected in await resp.text()
                assert resp.url.path in (f"/staff/messages/{run.message_id}", "/p/inbox")
    finally:
        await run.close()


def test_the_example_directory_file_is_what_the_demo_posts() -> None:
    """config/demo-directory.json is a complete POST /v1/directory body (README)."""
    from gateway.demo import DEMO_FILE, DEMO_FILE_YEAR
    from gateway.models import DirectoryBatch

    raw = json.loads(DEMO_FILE.read_text(encoding="utf-8"))
    batch = DirectoryBatch.model_validate(raw)
    assert len(batch.persons) > 60 and batch.relations and batch.preferences
    assert demo_directory(date(DEMO_FILE_YEAR, 11, 27)) == raw
    moved = demo_directory(date(DEMO_FILE_YEAR + 3, 1, 2))
    [c29] = [p for p in moved["persons"] if p["id"] == "c29"]
    assert c29["birth_date"].startswith(str(DEMO_FILE_YEAR + 3 - 18))


def test_the_demo_logs_as_the_service_does_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`budbringer demo --serve` keeps a gateway running for people to click through: a
    bad request's line (a parent's link token, a key) must reach its log masked."""
    import logging

    import gateway.demo
    from gateway.cli import main

    async def logs_a_bad_request(directory: Path, *, serve: bool, port: int) -> int:
        logging.getLogger("aiohttp.server").error(
            "Error handling request GET /p/s_6BYfa20qUgtDTvUjN2miGQZsElY6si5u?e=kari@example.org"
        )
        return 0

    monkeypatch.setattr(gateway.demo, "run_demo", logs_a_bad_request)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # restored afterwards
    monkeypatch.setattr(root, "level", root.level)
    assert main(["demo", "--dir", str(tmp_path / "demo"), "--serve"]) == 0
    logged = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert logged["logger"] == "aiohttp.server"
    assert "s_6BYfa20qUgtDTvUjN2mi" not in logged["message"]
    assert "kari@example.org" not in logged["message"]
