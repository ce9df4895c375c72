"""Best of k: the score prefers what raters call a bird (a distinct object on a plain background),
and a seed's chosen birds are its candidates' best, whatever the batch."""

from __future__ import annotations

import numpy as np
import pytest

from birdvae.runtime import BirdVAE
from birdvae.runtime.errors import ArgumentError
from birdvae.runtime.selection import best_of, figure_ground


def _scene(background: np.ndarray, with_bird: bool) -> np.ndarray:
    image = background.copy()
    if with_bird:
        yy, xx = np.mgrid[:32, :32]
        image[:, (yy - 16) ** 2 + (xx - 16) ** 2 < 49] = 0.1  # a dark body in the middle
    return image


def test_a_distinct_object_on_a_plain_background_scores_highest():
    rng = np.random.default_rng(0)
    plain = np.full((3, 32, 32), 0.8, np.float32)
    busy = rng.uniform(0, 1, (3, 32, 32)).astype(np.float32)
    scenes = np.stack([_scene(plain, True), _scene(busy, True), _scene(plain, False)])
    scores = figure_ground(scenes)
    assert scores[0] > scores[1] and scores[0] > scores[2]


def test_best_of_keeps_the_best_of_each_group_in_order():
    rng = np.random.default_rng(1)
    plain = np.full((3, 32, 32), 0.8, np.float32)
    busy = rng.uniform(0, 1, (3, 32, 32)).astype(np.float32)
    good, bad = _scene(plain, True), _scene(busy, False)
    groups = np.stack([bad, good, bad, good, bad, bad])  # two groups of three
    chosen = best_of(groups, 3)
    assert chosen.shape == (2, 3, 32, 32)
    assert np.array_equal(chosen[0], good) and np.array_equal(chosen[1], good)
    assert best_of(groups, 1) is groups


def test_a_seeds_best_birds_are_its_candidates_best_whatever_the_batch(tiny_model):
    vae = BirdVAE(tiny_model, threads=1)
    k = 3
    candidates = vae.sample(5 * k, seed=4)
    expected = best_of(candidates, k)
    np.testing.assert_array_equal(vae.sample(5, seed=4, best_of=k), expected)
    np.testing.assert_array_equal(vae.sample(5, seed=4, best_of=k, batch=2), expected)
    assert not np.array_equal(expected, candidates[:5])


@pytest.mark.parametrize("k", [0, 17, 2.5])
def test_best_of_out_of_range_is_refused(tiny_model, k):
    with pytest.raises(ArgumentError, match="best_of must be a whole number from 1 to 16"):
        BirdVAE(tiny_model, threads=1).sampling(best_of=k)


def test_a_batch_too_large_only_with_best_of_names_both(tiny_model):
    vae = BirdVAE(tiny_model, threads=1)
    limit = vae.sampling(batch=1).batch  # a valid request first
    assert limit == 1
    most = (1 << 24) // (3 * 16 * 16)
    vae.sampling(batch=most // 4, best_of=4)
    with pytest.raises(ArgumentError, match=r"with best of 4 .* at most 5461 with best of 4"):
        vae.sampling(batch=most, best_of=4)
