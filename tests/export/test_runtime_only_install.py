"""On a runtime-only install (no torch), ``vae-export`` says what to install, in one line."""

from __future__ import annotations

import subprocess
import sys

from birdvae.export.cli import NEEDS_TRAIN_EXTRA

# torch = None in sys.modules: `import torch` fails and find_spec("torch") finds nothing, as on
# an install without the train extra.
WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
from birdvae.export.cli import main
main(sys.argv[1:])
"""


def test_without_torch_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(tmp_path / "last.pt")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == NEEDS_TRAIN_EXTRA
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []
