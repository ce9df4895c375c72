"""Pixel noise: draws around the mean with the logistic's spread and the couplings' correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from birdvae.runtime.pixels import check_noise, draw_pixels

SHAPE = (200, 3, 16, 16)


def _draw(noise: float, coupling: tuple[float, float, float], scale: float = 0.02) -> np.ndarray:
    image = np.full(SHAPE, 0.5, np.float32)
    scales = np.full(SHAPE, scale, np.float32)
    couplings = np.broadcast_to(np.float32(coupling).reshape(1, 3, 1, 1), SHAPE)
    return draw_pixels(image, scales, couplings, noise, np.random.default_rng(0)) - 0.5


def test_noise_zero_is_the_mean() -> None:
    assert np.all(_draw(0.0, (0.9, 0.5, 0.5)) == 0)


def test_spread_is_the_logistics_times_the_temperature() -> None:
    deviation = _draw(0.5, (0.0, 0.0, 0.0))
    expected = 0.5 * 0.02 * math.pi / math.sqrt(3)  # a logistic's std is scale * pi / sqrt(3)
    assert deviation.std(axis=(0, 2, 3)) == pytest.approx([expected] * 3, rel=0.03)
    assert abs(deviation.mean()) < 0.02 * expected


def test_uncoupled_channels_are_independent_and_coupled_ones_follow_red() -> None:
    def correlation(deviation: np.ndarray, a: int, b: int) -> float:
        return float(np.corrcoef(deviation[:, a].ravel(), deviation[:, b].ravel())[0, 1])

    independent = _draw(1.0, (0.0, 0.0, 0.0))
    assert abs(correlation(independent, 0, 1)) < 0.03
    coupled = _draw(1.0, (0.9, 0.0, 0.9))
    # green = 0.9 red + its own draw: correlation 0.9 / sqrt(1 + 0.81)
    assert correlation(coupled, 0, 1) == pytest.approx(0.9 / math.sqrt(1.81), abs=0.03)
    assert correlation(coupled, 1, 2) > 0.6


def test_draws_stay_in_range() -> None:
    image = np.array([0.0, 1.0, 0.5], np.float32).reshape(1, 3, 1, 1).repeat(500, axis=0)
    drawn = draw_pixels(image, np.full_like(image, 0.3), np.zeros_like(image), 1.0,
                        np.random.default_rng(1))  # fmt: skip
    assert drawn.min() >= 0.0 and drawn.max() <= 1.0
    assert 0 < (drawn[:, 0] > 0).mean() < 1  # the clipped edges still move inwards


def test_a_centre_beyond_the_range_draws_the_end_value() -> None:
    """As the likelihood's end bins take the tails: a centre at -0.2 with scale 0.02 is black."""
    location = np.full((300, 3, 4, 4), -0.2, np.float32)
    drawn = draw_pixels(location, np.full_like(location, 0.02), np.zeros_like(location), 1.0,
                        np.random.default_rng(2))  # fmt: skip
    assert (drawn == 0).mean() > 0.999


def test_coupling_follows_the_clipped_red_as_the_likelihood_sees_it() -> None:
    location = np.zeros((50, 3, 2, 2), np.float32)
    location[:, 0] = -0.5  # red's draws all clip to 0, half a unit above red's centre
    scale = np.full_like(location, 1e-4)
    coupling = np.zeros_like(location)
    coupling[:, 0] = 0.8  # green follows red
    drawn = draw_pixels(location, scale, coupling, 1.0, np.random.default_rng(3))
    assert np.all(drawn[:, 0] == 0)
    np.testing.assert_allclose(drawn[:, 1], 0.8 * 0.5, atol=0.01)


@pytest.mark.parametrize("follows", ["red", "green"])
def test_blue_follows_red_and_green_after_their_clipping(follows: str) -> None:
    """Blue's centre moves with red's and green's deviations as 8-bit values hold them, after
    clipping: taken before, a pixel that clips to black or white would cast its colour."""
    location = np.zeros((50, 3, 2, 2), np.float32)
    coupling = np.zeros_like(location)
    if follows == "red":
        location[:, 0] = -0.5  # red clips to 0: half a unit above its centre
        coupling[:, 1] = 0.8
        want = 0.8 * 0.5
    else:
        location[:, 1] = 1.5  # green clips to 1: half a unit below its centre
        location[:, 2] = 0.6
        coupling[:, 2] = 0.8
        want = 0.6 - 0.8 * 0.5
    scale = np.full_like(location, 1e-4)
    drawn = draw_pixels(location, scale, coupling, 1.0, np.random.default_rng(3))
    np.testing.assert_allclose(drawn[:, 2], want, atol=0.01)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 10.5, 1e30])
def test_bad_noise_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="noise must be 0 to 10"):
        check_noise(bad)
