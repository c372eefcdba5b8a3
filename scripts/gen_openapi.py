"""Generate gateway/openapi.json from the routes' descriptions beside their handlers.

Run from the repository root after changing a route or a model:

    .venv/bin/python -m scripts.gen_openapi          # write gateway/openapi.json
    .venv/bin/python -m scripts.gen_openapi --check  # exit 1 if the file is stale

Each module of gateway/api that registers routes describes them in its ``OPERATIONS``
table (gateway/api/spec.py says how); request bodies and answers are the pydantic
models the handlers validate with and answer with. This script only walks the route
modules (``gateway.api.app.ROUTES``, the ones ``create_app`` registers) and assembles
the document. tests/test_openapi.py checks that every registered route is described
and that the running app keeps to the document.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway import __version__
from gateway.api import spec
from gateway.api.app import ROUTES

OUTPUT = Path(__file__).resolve().parents[1] / "gateway" / "openapi.json"


def operations() -> dict[spec.Route, spec.Operation]:
    """Every route's operation, from the modules that register them."""
    found: dict[spec.Route, spec.Operation] = {}
    for module in ROUTES:
        for route, operation in module.OPERATIONS.items():
            if found.setdefault(route, operation) is not operation:
                raise SystemExit(f"{route} is described twice")
    return found


def paths(ops: Mapping[spec.Route, spec.Operation]) -> dict[str, Any]:
    found: dict[str, dict[str, Any]] = {}
    for (method, path), operation in ops.items():
        found.setdefault(path, {})[method.lower()] = spec.render(operation)
    return dict(sorted(found.items()))


def _by_name(models: Iterable[type[BaseModel]]) -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for model in models:
        if found.setdefault(model.__name__, model) is not model:
            raise SystemExit(f"two models are named {model.__name__}: rename one")
    return found


def schemas(ops: Iterable[spec.Operation]) -> dict[str, Any]:
    """The models' schemas: a request body's as validated, an answer's as serialised (a
    model that is both is documented as read)."""
    ops = list(ops)
    read = _by_name(model for op in ops for model in spec.read_models(op))
    written = _by_name(model for op in ops for model in spec.written_models(op))
    _by_name([*read.values(), *written.values()])
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((read[name], "validation") for name in sorted(read)),
        *((written[name], "serialization") for name in sorted(written.keys() - read.keys())),
    ]
    _, top = models_json_schema(pairs, ref_template=spec.REF)
    return dict(sorted(top["$defs"].items()))


def build_spec() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    ops = operations()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Budbringer",
            "version": __version__,
            "description": (
                "Messaging gateway for home–school communication. Errors are JSON:"
                ' `{"error": code, "message": text, "errors": [{"loc", "message", "type"}]}`.'
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{"bearer": []}],
        "paths": paths(ops),
        "components": {
            "schemas": schemas(ops.values()),
            "securitySchemes": spec.SECURITY_SCHEMES,
        },
    }


def render() -> str:
    return json.dumps(build_spec(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python -m scripts.gen_openapi", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
