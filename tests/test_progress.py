"""The CLI's progress bar: shown on a terminal, quiet when stderr is not one."""

from __future__ import annotations

import pytest

from gateway.progress import stages


def test_stages_show_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with stages(2, enabled=True) as step:
        step("reading and checking the export")
        step("writing 12 persons")
    err = capsys.readouterr().err
    assert "done" in err and "2/2" in err


def test_stages_are_quiet_when_stderr_is_no_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with stages(3) as step:  # under pytest stderr is captured: not a terminal
        step("reading")
        step("writing")
    assert capsys.readouterr() == ("", "")
