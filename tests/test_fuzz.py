"""A short schemathesis run over every operation, with a tenant key and with a guardian
token: no answer is a 5xx. ``make fuzz`` runs the long one (scripts/fuzz.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

import scripts.fuzz_hooks  # noqa: F401 - registers the application/zip serializer
from scripts.fuzz import Live, serving

SPEC_FILE = Path(__file__).resolve().parents[1] / "gateway" / "openapi.json"
OPERATIONS = schemathesis.openapi.from_dict(json.loads(SPEC_FILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with serving(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@pytest.mark.parametrize("who", ["guardian token", "tenant key"])
def test_no_request_gets_a_5xx(live: Live, who: str) -> None:
    credential = live.guardian_token if who == "guardian token" else live.api_key
    headers = {"Authorization": f"Bearer {credential}"}

    @given(
        case=st.one_of(
            OPERATIONS.as_strategy(GenerationMode.POSITIVE),
            OPERATIONS.as_strategy(GenerationMode.NEGATIVE),
        )
    )
    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(base_url=live.url, headers=headers, checks=[not_a_server_error])

    run()
