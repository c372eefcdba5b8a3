"""The README documents every page and route the gateway serves."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.api.app import create_app
from gateway.api.context import AppContext
from gateway.clock import ManualClock
from gateway.settings import Settings
from gateway.store import Store

README = Path(__file__).resolve().parents[1] / "README.md"


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_route_is_in_the_readme(settings: Settings, store: Store) -> None:
    app = create_app(AppContext(settings=settings, store=store, clock=ManualClock()))
    routes = {_shape(route.resource.canonical) for route in app.router.routes() if route.resource}
    documented = {_shape(path) for path in re.findall(r"(/[\w./{}-]+)", README.read_text())}
    assert sorted(routes - documented) == []


def test_the_readme_activates_the_venv_before_the_first_cli_command() -> None:
    text = README.read_text()
    assert text.index("source .venv/bin/activate") < text.index("budbringer tenants create")


def test_the_digest_the_readme_describes_exists() -> None:
    # It once named a digest that did not exist; now its preference field is the model's.
    from gateway.models import Preferences

    assert '"digest": {"general": "18:00"' in README.read_text()
    assert Preferences.model_validate({"digest": {"general": "18:00"}}).digest
