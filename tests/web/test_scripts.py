"""The web folder's two scripts, run as a user runs them: a mistaken flag is one line."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import WEB


@pytest.mark.parametrize(("script", "flag", "says"), [
    ("build.mjs", "--modle", "build: Unknown option '--modle' (options: --out DIR, --model"),
    ("serve.mjs", "--prot", "serve: Unknown option '--prot' (options: --dir DIR, --port N"),
    ("build.mjs", "extra", "build: Unexpected argument 'extra'"),
])  # fmt: skip
def test_a_mistaken_flag_is_one_line_not_nodes_stack(node: str, script: str, flag: str, says: str):
    done = subprocess.run([node, str(WEB / script), flag], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(says) and done.stderr.count("\n") == 1, done.stderr
