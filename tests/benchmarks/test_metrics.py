"""The feature-space distances and the copy check of benchmarks/metrics.py."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import metrics


def test_frechet_distance_is_zero_for_one_set_and_the_mean_shift_squared_for_a_moved_one():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2000, 4))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([3.0, 0.0, 4.0, 0.0])
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(25.0, rel=1e-6)
    wider = metrics.frechet_distance(a, a * 2)  # tr(C + 4C - 2 * 2C) = tr(C)
    assert wider == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-3)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_another():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((1000, 8)), rng.standard_normal((1000, 8))
    same, _ = metrics.kernel_distance(a, b, subsets=10, size=400)
    moved, _ = metrics.kernel_distance(a, b + 1.0, subsets=10, size=400)
    assert abs(same) < 0.01 < moved


def test_nearest_two_matches_brute_force():
    rng = np.random.default_rng(2)
    samples, references = rng.random((30, 2, 3)), rng.random((50, 2, 3))
    got = metrics.nearest_two(samples, references, block=7)
    full = np.linalg.norm(samples.reshape(30, 1, -1) - references.reshape(1, 50, -1), axis=2)
    want = np.sort(full, axis=1)[:, :2]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_copies_are_samples_much_nearer_one_reference_than_any_other():
    rng = np.random.default_rng(3)
    references = rng.random((100, 48)) * 255
    copies = references[:10] + rng.normal(0, 1.0, (10, 48))
    fresh = rng.random((30, 48)) * 255
    share, ratio = metrics.copy_share(np.concatenate([copies, fresh]), references)
    assert share == pytest.approx(10 / 40)
    assert (ratio[:10] < metrics.COPY_RATIO).all() and (ratio[10:] > metrics.COPY_RATIO).all()


def test_prdc_of_a_set_against_itself_is_perfect_and_a_far_set_scores_nothing():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((200, 5))
    scores = metrics.prdc(a, a, k=5)
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0 and scores["coverage"] == 1.0
    far = metrics.prdc(a, a + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def _prdc_by_definition(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al. (2020)'s four definitions, point by point in plain loops."""

    def radius(points: np.ndarray, i: int) -> float:  # k-th nearest other point
        return sorted(math.dist(points[i], q) for j, q in enumerate(points) if j != i)[k - 1]

    real_r = [radius(real, i) for i in range(len(real))]
    fake_r = [radius(fake, j) for j in range(len(fake))]
    d = [[math.dist(r, f) for f in fake] for r in real]
    inside = [[d[i][j] < real_r[i] for i in range(len(real))] for j in range(len(fake))]
    return {
        "precision": sum(any(row) for row in inside) / len(fake),
        "recall": sum(any(d[i][j] < fake_r[j] for j in range(len(fake))) for i in range(len(real)))
        / len(real),
        "density": sum(sum(row) for row in inside) / (k * len(fake)),
        "coverage": sum(min(d[i]) < real_r[i] for i in range(len(real))) / len(real),
    }


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_follows_its_definitions(k):
    rng = np.random.default_rng(5)
    real, fake = rng.standard_normal((60, 4)), rng.standard_normal((50, 4)) * 1.2 + 0.3
    ours, reference = metrics.prdc(real, fake, k=k), _prdc_by_definition(real, fake, k)
    assert 0 < reference["precision"] < 1 and 0 < reference["coverage"] < 1  # not a corner case
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
