"""On a runtime-only install (no torch) or a partial one, ``vae-export`` and ``vae-train`` say
what to install, in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from birdvae.training.extra import train_extra_hint

# MODULE = None in sys.modules: `import MODULE` fails and find_spec(MODULE) finds nothing, as on
# an install without the train extra, or with only part of it.
WITHOUT = """
import sys
sys.modules[sys.argv[1]] = None
from birdvae.{package}.cli import {command}
sys.argv = ["{command}", *sys.argv[2:]]
{command}()
"""


def run_without(module: str, package: str, command: str, *args: str):
    return subprocess.run(
        [sys.executable, "-c", WITHOUT.format(package=package, command=command), module, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("module", ["torch", "torchvision", "tqdm", "onnx", "onnxscript"])
def test_export_without_part_of_the_train_extra_one_line_and_exit_2(tmp_path, module):
    checkpoint = tmp_path / "last.pt"  # there: a missing one is refused before any import
    checkpoint.touch()
    result = run_without(module, "export", "main", str(checkpoint))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: " + train_extra_hint("vae-export")
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == [checkpoint]


@pytest.mark.parametrize("module", ["torch", "torchvision", "tqdm"])
def test_training_without_part_of_the_train_extra_one_line_and_exit_2(tmp_path, module):
    result = run_without(module, "training", "train_main", "--data", str(tmp_path), "-o",
                         str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "error: " + train_extra_hint("vae-train")
    assert list(tmp_path.iterdir()) == []
