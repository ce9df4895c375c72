"""The speed benchmark's sampling section runs against a model: nothing else calls its BirdVAE
code, and a change of the runtime's API left the script crashing in its first section."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnx")  # the script reads graphs with onnx for its FLOP counts

import runtime_speed  # benchmarks/ is put on the path by conftest

TINY_MODEL = Path(__file__).resolve().parent.parent / "fixtures" / "tiny_model"


def test_sampling_section_times_every_prior_and_reports_the_goal(capsys) -> None:
    medians = runtime_speed.bench_sample(TINY_MODEL, repeats=1)
    priors = {prior for prior, _ in medians}
    assert priors and all(medians[(p, "prior + decoder")] > 0 for p in priors)
    runtime_speed.report_sample(medians, sorted(priors)[0], repeats=1)
    assert "target <= 25 ms" in capsys.readouterr().out
