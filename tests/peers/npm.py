"""Node tools the suite runs as local peers (tests/peers/package.json): installed on
first use with ``npm ci`` from the package-lock, so the versions are the locked ones."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parent
NODE_MODULES = PEERS / "node_modules"


def ensure_node_modules(path: str) -> Path:
    """``tests/peers/node_modules/<path>`` (e.g. ``axe-core/axe.min.js`` or
    ``.bin/prism``), running ``npm ci`` there first if it is missing. Fails the test
    when npm is not installed."""
    target = NODE_MODULES / path
    if target.exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"npm is needed to install {path} (tests/peers/package.json)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=PEERS,
        check=True,
        env={**os.environ, "SCARF_ANALYTICS": "false"},
        timeout=300,
    )
    return target
