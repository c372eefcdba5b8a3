"""Add texts written the old way (a TOML file with [nb], [nn], [en] tables) to the
catalogues in templates/locale/, for a branch that added keys to templates/texts.toml:

    .venv/bin/python -m scripts.locale_keys old-texts.toml --area texts

Each key the catalogues lack is appended to every ``<lang>.po``: the nb, nn and en
text where the TOML has it, and in the other languages the English text marked
``#. UNTRANSLATED`` for a translator (it is shown as it is until then). Nested tables
become dotted keys (``categories.general``). Keys already there are left alone.
Then run ``pytest tests/test_locales.py``.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

from gateway.constants import SUPPORTED_LANGUAGES
from gateway.locales import BUILTIN_LOCALE_DIR, read_catalogue


def flat(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = str(value)
    return out


def quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def entry(area: str, key: str, text: str, comments: list[str]) -> str:
    lines = [f"#. {comment}" for comment in comments]
    lines += [f"msgctxt {quote(area)}", f"msgid {quote(key)}", f"msgstr {quote(text)}"]
    return "\n" + "\n".join(lines) + "\n"


def add(toml_file: Path, area: str, locale_dir: Path = BUILTIN_LOCALE_DIR) -> list[str]:
    """Append the keys of ``toml_file`` missing from the catalogues; returns them."""
    tables = tomllib.loads(toml_file.read_text(encoding="utf-8"))
    nb, en = flat(tables["nb"]), flat(tables.get("en", tables["nb"]))
    have = {(m.context, m.id) for m in read_catalogue(locale_dir / "nb.po", "nb") if m.id}
    new = [key for key in nb if (area, key) not in have]
    for lang in SUPPORTED_LANGUAGES:
        own = flat(tables[lang]) if lang in tables else {}
        blocks = []
        for key in new:
            comments = [] if lang == "nb" else [f"nb: {nb[key]}", f"en: {en.get(key, nb[key])}"]
            if key not in own:
                comments.append("UNTRANSLATED: the English text until a translator writes it")
            blocks.append(entry(area, key, own.get(key, en.get(key, nb[key])), comments))
        path = locale_dir / f"{lang}.po"
        path.write_text(path.read_text(encoding="utf-8") + "".join(blocks), encoding="utf-8")
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("toml", type=Path, help="a TOML file with [nb] (and [nn], [en]) tables")
    parser.add_argument(
        "--area", default="texts", help="msgctxt: texts, pages, unsubscribe, parent"
    )
    args = parser.parse_args(argv)
    for key in add(args.toml, args.area):
        print(f"added {args.area} {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
