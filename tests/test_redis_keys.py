"""The Redis key names live in one place, gateway/store/redis/keys.py: the Lua scripts
read them from the generated table ``K`` and the Python features from the module, so
no script or feature spells a key suffix of its own, and no name is left unused."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pytest

from gateway.store.redis import keys
from gateway.store.redis.scripts import Lua

REDIS = Path(str(files("gateway.store.redis")))
LUA = sorted((REDIS / "lua").glob("*.lua"))
PYTHON = sorted(p for p in REDIS.glob("*.py") if p.name != "keys.py")
USED = re.compile(r"\b(?:K|keys)\.([A-Z_]+)\b")
# A key built from a prefix and a literal: tp .. 'd:' in Lua; t(..., "d"), g("did", ...),
# tp + "stats" in Python.
LUA_LITERAL = re.compile(r"\b(?:tp|qp|prefix)\s*\.\.\s*'")
PY_LITERAL = re.compile(r"\b(?:tp\s*\+|qp\s*\+|t\([^(),\"]*,|[tgq]\()\s*f?\"")


def _uses(paths: list[Path]) -> set[str]:
    return {name for path in paths for name in USED.findall(path.read_text("utf-8"))}


def test_the_scripts_use_only_names_the_module_defines() -> None:
    assert _uses(LUA) <= set(keys.names())


def test_every_name_is_used_by_a_script_or_a_feature() -> None:
    assert set(keys.names()) - _uses(LUA) - _uses(PYTHON) == set()


@pytest.mark.parametrize("path", [*LUA, *PYTHON], ids=lambda p: p.name)
def test_no_key_suffix_is_written_out(path: Path) -> None:
    pattern = LUA_LITERAL if path.suffix == ".lua" else PY_LITERAL
    lines = [
        line.strip()
        for line in path.read_text("utf-8").splitlines()
        if pattern.search(line) and not line.lstrip().startswith(("#", "--", '"""', "``"))
    ]
    assert lines == []


def test_the_table_gives_a_family_its_separator() -> None:
    table = keys.lua_table(["STATS", "DELIVERY", "STATS"])
    assert table == "local K = {DELIVERY='d:',STATS='stats',}\n"
    assert Lua("return tp .. K.STATS .. K.DELIVERY").source.startswith(table)
    assert Lua("return 1").source == "return 1"
    with pytest.raises(KeyError):
        Lua("return K.NO_SUCH_KEY")
    # the same key from Python and from a script: P:{t}:d:<id>
    tp = keys.tenant_prefix("bb", "t1")
    assert keys.tenant_key("bb", "t1", keys.DELIVERY, "x") == tp + "d:" + "x"


@pytest.mark.parametrize("path", LUA, ids=lambda p: p.name)
def test_no_script_shadows_the_table(path: Path) -> None:
    assert not re.search(r"\blocal\s+K\b", path.read_text("utf-8"))


# Modules that are no feature: the names, the handle, the scripts, the wiring.
INFRASTRUCTURE = {"keys.py", "base.py", "scripts.py", "store.py", "__init__.py"}
# feed.py is the webhook feature's half that runs inside other features' transactions.
SAME_FEATURE = {"feed.py": "webhooks.py"}
# Names more than one feature uses, and why.
SHARED = {
    "TENANTS_TAG": "a hash tag (the tenants' slot), not a key",
    "SETTINGS": "one hash, a field per owner: tenants (scopes), policy (overrides)",
    "PREFERENCES_VERSION": "the directory's writes and audience reads watch it",
    "DEVICES_VERSION": "the directory's writes and audience reads watch it",
}


def test_each_key_family_belongs_to_one_feature() -> None:
    owners: dict[str, set[str]] = {}
    for path in PYTHON:
        if path.name in INFRASTRUCTURE:
            continue
        feature = SAME_FEATURE.get(path.name, path.name)
        for name in USED.findall(path.read_text("utf-8")):
            owners.setdefault(name, set()).add(feature)
    shared = {name: sorted(o) for name, o in owners.items() if len(o) > 1}
    assert set(shared) == set(SHARED), shared
