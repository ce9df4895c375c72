"""Fixtures for the runtime's tests: the committed tiny models, bird photos and a CLI runner.

Everything here needs only numpy, onnxruntime, pillow, click and pytest: CI runs these tests
without torch or onnx. Tests that damage a model do it to a copy (``model_copy``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from birdvae.runtime.cli import main
from birdvae.runtime.format import FileEntry, Manifest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TINY_MODEL = FIXTURES / "tiny_model"
WRONG_NAMES_MODEL = FIXTURES / "wrong_names_model"
MEAN_ONLY_MODEL = FIXTURES / "mean_only_model"  # a decoder without pixel-noise outputs
BIRDS = sorted((FIXTURES / "birds").glob("*.jpg"))


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes the streams unless told not to
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps stderr apart and dropped the argument


def invoke(command: click.Command, *args: object) -> CliResult:
    """Run a click command in this process."""
    result = _runner().invoke(command, [str(arg) for arg in args])
    return CliResult(result.exit_code, result.stdout, result.stderr, result.exception)


def one_error(result: CliResult, *fragments: str) -> str:
    """Assert the command ended as one ``error:`` line (status 2) holding ``fragments``."""
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def cli():
    """Run ``bird-gen`` in this process: cli(*args) -> CliResult."""
    return lambda *args: invoke(main, *args)


@pytest.fixture
def tiny_model() -> Path:
    return TINY_MODEL


@pytest.fixture
def wrong_names_model() -> Path:
    return WRONG_NAMES_MODEL


@pytest.fixture
def mean_only_model() -> Path:
    return MEAN_ONLY_MODEL


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A private copy of the tiny model, for tests that damage or edit it."""
    return Path(shutil.copytree(TINY_MODEL, tmp_path / "model_copy"))


@pytest.fixture
def refresh_manifest():
    """refresh(folder): re-hash the files a manifest lists, after a test has edited them."""

    def refresh(folder: Path) -> Manifest:
        manifest = Manifest.load(folder)
        manifest.files = {name: FileEntry.of(folder / name) for name in manifest.files}
        manifest.save(folder)
        return manifest

    return refresh


@pytest.fixture
def model_without_prior(model_copy: Path) -> Path:
    """The tiny model with its priors removed, as vae-export writes a model without one."""
    manifest = Manifest.load(model_copy)
    for name in ("prior.npz", "prior.onnx"):
        (model_copy / name).unlink()
        del manifest.files[name]
    manifest.priors = {}
    manifest.default_prior = "standard"
    manifest.save(model_copy)
    return model_copy


@pytest.fixture
def birds() -> list[Path]:
    assert len(BIRDS) >= 3, f"expected bird photos in {FIXTURES / 'birds'}"
    return BIRDS


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty folder for outputs: tests check that failures leave it empty."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder
