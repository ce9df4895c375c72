"""benchmarks/quality.py end to end on the test model and a folder of the shipped fixture birds:
every row it documents is printed, ``--sweep`` included, so a manifest field it reads cannot
go away unnoticed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from birdvae.runtime.format import Manifest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def test_quality_sweeps_every_prior_of_the_model(tmp_path: Path) -> None:
    data = tmp_path / "birds"
    for species in ("a", "b"):  # two folders so the split has photos on both sides
        shutil.copytree(FIXTURES / "birds", data / species)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--data", str(data),
         "--model", str(FIXTURES / "tiny_model"), "--samples", "8", "--sweep"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    priors = ("fitted", "learned", "standard")
    swept = {row[0] for row in rows if len(row) == 3 and row[0] in priors}
    assert swept == set(Manifest.load(FIXTURES / "tiny_model").prior_names)
    assert any(row and row[0] == "default" for row in rows)
