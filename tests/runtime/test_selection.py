"""Best of k: the shipped rater prefers birds to what raters call not a bird, pictures of any
size are resampled for it by area, and a seed's chosen birds are its candidates'
best, whatever the batch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from birdvae.runtime import BirdVAE
from birdvae.runtime.errors import ArgumentError
from birdvae.runtime.format import ModelFormatError
from birdvae.runtime.selection import area_matrix, best_of, load_rater, to_rater_size


def test_the_rater_rates_bird_photos_above_noise_smears_and_blank_pictures(bird_photos):
    rate = load_rater(threads=1)
    rng = np.random.default_rng(0)
    photos = bird_photos(32)
    noise = rng.uniform(0, 1, (3, 3, 32, 32)).astype(np.float32)
    smear = np.repeat(np.linspace(0, 1, 32, dtype=np.float32)[None, None, None], 3, 0)
    smear = np.broadcast_to(smear, (3, 3, 32, 32)) * rng.uniform(0.3, 1, (3, 3, 1, 1))
    blank = np.full((2, 3, 32, 32), 0.7, np.float32)
    ratings = rate(np.concatenate([photos, noise, smear.astype(np.float32), blank]))
    assert ratings.shape == (11,) and ratings.dtype == np.float32
    assert ratings[:3].min() > ratings[3:].max(), ratings


def test_the_rater_reads_any_size_as_its_32x32_picture(bird_photos):
    rate = load_rater(threads=1)
    photos = bird_photos(64)
    halved = photos.reshape(3, 3, 32, 2, 32, 2).mean(axis=(3, 5))  # 2x2 means, by hand
    np.testing.assert_allclose(rate(photos), rate(halved), atol=1e-5)
    assert rate(np.zeros((0, 3, 32, 32), np.float32)).shape == (0,)


def test_more_pictures_than_one_rater_batch_are_each_rated(bird_photos):
    """The rater runs in batches of RATER_BATCH pictures: --best-of 16 of 64 birds gives it
    1024, and every one must get its own rating, the same as rated alone."""
    from birdvae.runtime.selection import RATER_BATCH

    rate = load_rater(threads=1)
    photos = bird_photos(32)
    many = np.concatenate([np.full((RATER_BATCH, 3, 32, 32), 0.5, np.float32), photos])
    ratings = rate(many)
    assert ratings.shape == (RATER_BATCH + 3,)
    np.testing.assert_allclose(ratings[RATER_BATCH:], rate(photos), atol=1e-5)


def test_a_damaged_rater_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr("birdvae.runtime.selection.RATER_SHA256", "0" * 64)
    with pytest.raises(ModelFormatError, match=r"is damaged .* reinstall bird-vae"):
        load_rater(threads=1)


@pytest.mark.parametrize("size", [16, 32, 48, 64, 100])
def test_resampling_averages_the_area_each_pixel_covers(size):
    """Repeating each pixel r times makes the size a multiple of 32; the mean of each block is
    then the mean of the area, fractions of pixels included."""
    rng = np.random.default_rng(size)
    images = rng.uniform(0, 1, (2, 3, size, size)).astype(np.float32)
    r = 32 // math.gcd(size, 32)
    fine = images.repeat(r, axis=2).repeat(r, axis=3)
    block = size * r // 32
    expected = fine.reshape(2, 3, 32, block, 32, block).mean(axis=(3, 5))
    np.testing.assert_allclose(to_rater_size(images), expected, atol=2e-6)
    np.testing.assert_allclose(area_matrix(size, 32).sum(axis=1), 1, atol=1e-6)


def test_best_of_keeps_the_best_of_each_group_in_order():
    images = np.arange(6, dtype=np.float32)[:, None, None, None] * np.ones((6, 3, 4, 4), np.float32)
    scores = np.array([0, 2, 1, 5, 3, 4], np.float32)  # two groups of three
    chosen = best_of(images, 3, lambda _: scores)
    assert chosen.shape == (2, 3, 4, 4)
    assert chosen[0, 0, 0, 0] == 1 and chosen[1, 0, 0, 0] == 3
    assert best_of(images, 1, None) is images


def test_a_seeds_best_birds_are_its_candidates_best_whatever_the_batch(tiny_model):
    vae = BirdVAE(tiny_model, threads=1)
    k = 3
    candidates = vae.sample(5 * k, seed=4)
    expected = best_of(candidates, k, load_rater(threads=1))
    np.testing.assert_array_equal(vae.sample(5, seed=4, best_of=k), expected)
    np.testing.assert_array_equal(vae.sample(5, seed=4, best_of=k, batch=2), expected)
    assert not np.array_equal(expected, candidates[::k])


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (0, " from 1 to 16, got 0"),
        (17, " from 1 to 16, got 17"),
        (2.5, ", got 2.5"),
        (True, ", got True"),
    ],
)
def test_best_of_out_of_range_is_refused(tiny_model, k, message):
    with pytest.raises(ArgumentError, match=f"best_of must be a whole number{message}"):
        BirdVAE(tiny_model, threads=1).sampling(best_of=k)


def test_a_batch_too_large_only_with_best_of_names_both(tiny_model):
    vae = BirdVAE(tiny_model, threads=1)
    limit = vae.sampling(batch=1).batch  # a valid request first
    assert limit == 1
    most = (1 << 24) // (3 * 16 * 16)
    vae.sampling(batch=most // 4, best_of=4)
    with pytest.raises(ArgumentError, match=r"with best of 4 .* at most 5461 with best of 4"):
        vae.sampling(batch=most, best_of=4)
