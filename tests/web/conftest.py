"""Fixtures for the web page's tests: node for its modules, headless Chromium for the page.

Without node, Chromium or ``npm ci`` in ``web/`` these tests skip and say which is missing;
with ``BIRDVAE_WEB_TESTS=required`` (as ``.ci/run`` sets it) the same lack fails them instead.
Figures the browser tests measure are printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
ORT_MODULE = WEB / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"
REQUIRED = os.environ.get("BIRDVAE_WEB_TESTS") == "required"

MEASURED: dict[str, str] = {}  # what the browser tests measured, printed at the end


def need(present: object, reason: str) -> None:
    """Skip (or, when required, fail) unless ``present``."""
    if not present:
        if REQUIRED:
            pytest.fail(f"BIRDVAE_WEB_TESTS=required, but {reason}")
        pytest.skip(reason)


def pytest_terminal_summary(terminalreporter) -> None:
    if MEASURED:
        terminalreporter.section("the web page, measured")
        for key, value in MEASURED.items():
            terminalreporter.write_line(f"{key}: {value}")


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    need(path, "node is not installed (apt-get install nodejs)")
    return path


@pytest.fixture(scope="session")
def mirror(node: str):
    """mirror(case, payload) -> what ``mirror.mjs`` prints for that case, given the JSON
    ``payload``: the page's own modules run in node."""

    def run(case: str, payload: Any) -> Any:
        done = subprocess.run(
            [node, str(Path(__file__).with_name("mirror.mjs")), case],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise AssertionError(f"node mirror.mjs {case} failed:\n{done.stderr}")
        return json.loads(done.stdout)

    return run
