"""The ProGAN sliced Wasserstein distance: zero for identical sets, small within a distribution,
large across, blur seen at the finest level, deterministic, strict about its input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from swd import SWDResult, laplacian_pyramid, sliced_wasserstein

from .conftest import BENCHMARKS

FAST = dict(patches_per_image=64, directions=128)  # the paper's 128 x 512 is slower, same idea


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def blur3(x: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 in both directions, edges repeated: independent of the module's filter."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    x = (x[:, :, :-2] + 2 * x[:, :, 1:-1] + x[:, :, 2:]) / 4
    return (x[:, :, :, :-2] + 2 * x[:, :, :, 1:-1] + x[:, :, :, 2:]) / 4


def white_noise(n: int, seed: int, size: int = 32) -> np.ndarray:
    return to_uint8(np.random.default_rng(seed).normal(128, 40, (n, 3, size, size)))


def smooth_noise(n: int, seed: int, size: int = 32) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 1, (n, 3, size, size))
    for _ in range(4):
        x = blur3(x)
    return to_uint8(128 + 40 * x / x.std())


def textured_blobs(n: int, seed: int, size: int = 32) -> np.ndarray:
    """A disc of one colour on another, plus fine grain: structure at every scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    centre = rng.uniform(0.2, 0.8, (n, 2, 1, 1))
    radius = rng.uniform(0.1, 0.35, (n, 1, 1))
    inside = ((xx - centre[:, 0]) ** 2 + (yy - centre[:, 1]) ** 2 < radius**2)[:, None]
    colours = rng.uniform(30, 225, (n, 2, 3, 1, 1))
    image = np.where(inside, colours[:, 0], colours[:, 1])
    return to_uint8(image + rng.normal(0, 12, (n, 3, size, size)))


def test_identical_sets_score_zero():
    images = textured_blobs(48, seed=1)
    result = sliced_wasserstein(images, images.copy(), **FAST)
    assert isinstance(result, SWDResult)
    assert result.resolutions == [32, 16]
    assert len(result.per_level) == 2
    assert max(result.per_level) < 1e-6 and result.mean < 1e-6


def test_flat_images_give_finite_distances():
    flat = np.full((8, 3, 32, 32), 77, np.uint8)
    assert sliced_wasserstein(flat, flat, **FAST).mean == 0.0
    result = sliced_wasserstein(flat, white_noise(8, seed=0), **FAST)
    assert np.all(np.isfinite(result.per_level)) and result.mean > 0


@pytest.mark.parametrize(
    "make, other", [(smooth_noise, textured_blobs), (textured_blobs, smooth_noise)],
    ids=["smooth", "blobs"],
)  # fmt: skip
def test_two_samples_of_one_distribution_are_much_closer_than_two_distributions(make, other):
    a, b = make(160, seed=1), make(160, seed=2)
    same = sliced_wasserstein(a, b, **FAST)
    different = sliced_wasserstein(a, other(160, seed=3), **FAST)
    assert same.mean < different.mean / 3, (same, different)
    assert all(s < d / 3 for s, d in zip(same.per_level, different.per_level)), (same, different)


def test_smooth_noise_and_white_noise_differ_most_at_the_finest_level():
    smooth = smooth_noise(160, seed=1)
    same = sliced_wasserstein(smooth, smooth_noise(160, seed=2), **FAST).per_level
    white = sliced_wasserstein(smooth, white_noise(160, seed=3), **FAST).per_level
    assert same[0] < white[0] / 3, (same, white)
    assert white[0] > white[1], white


def test_blur_raises_the_finest_level_more_than_the_coarsest():
    real, other = textured_blobs(160, seed=1), textured_blobs(160, seed=2)
    sharp = sliced_wasserstein(real, other, **FAST).per_level
    blurred = sliced_wasserstein(real, to_uint8(blur3(other)), **FAST).per_level
    finest, coarsest = blurred[0] - sharp[0], blurred[-1] - sharp[-1]
    assert blurred[0] > 2 * sharp[0], (sharp, blurred)
    assert finest > 5 * abs(coarsest), (sharp, blurred)


def test_three_levels_at_64_px_and_blur_shows_at_the_finest():
    real, other = textured_blobs(24, seed=1, size=64), textured_blobs(24, seed=2, size=64)
    sharp = sliced_wasserstein(real, other, **FAST)
    blurred = sliced_wasserstein(real, to_uint8(blur3(other)), **FAST)
    assert sharp.resolutions == blurred.resolutions == [64, 32, 16]
    increase = np.subtract(blurred.per_level, sharp.per_level)
    assert increase[0] == max(increase) and increase[0] > sharp.per_level[0], increase


def test_deterministic_for_a_seed():
    a, b = textured_blobs(32, seed=1), smooth_noise(32, seed=2)
    first = sliced_wasserstein(a, b, seed=7, **FAST)
    assert sliced_wasserstein(a, b, seed=7, **FAST) == first
    other_seed = sliced_wasserstein(a, b, seed=8, **FAST)
    assert other_seed.per_level != first.per_level
    np.testing.assert_allclose(other_seed.per_level, first.per_level, rtol=0.25)


def test_sets_of_different_sizes_use_the_exact_1d_distance():
    from swd import _sliced_w1

    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 147)).astype(np.float32)
    b = (rng.normal(size=(4, 147)) + 0.5).astype(np.float32)
    dirs = rng.normal(size=(16, 147))
    dirs = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32)
    # Repeating every sample of a set leaves its distribution as it is; 12 and 12 need no grid.
    replicated = _sliced_w1(np.repeat(a, 2, axis=0), np.repeat(b, 3, axis=0), dirs)
    assert _sliced_w1(a, b, dirs) == pytest.approx(replicated, rel=1e-5)
    images = textured_blobs(40, seed=1)
    subset = sliced_wasserstein(images, images[:25], **FAST).mean  # one distribution: near 0
    assert subset < sliced_wasserstein(images, smooth_noise(25, seed=2), **FAST).mean / 3


def test_laplacian_pyramid_is_band_pass_and_reconstructs():
    from swd import _pyr_up

    images = textured_blobs(4, seed=1)
    band, low = laplacian_pyramid(images, 2)
    assert band.shape == (4, 3, 32, 32) and low.shape == (4, 3, 16, 16)
    np.testing.assert_allclose(_pyr_up(low) + band, images, atol=1e-3)
    assert abs(band.mean()) < 1.0 < band.std()  # detail only: no brightness left in the band
    flat_band, _ = laplacian_pyramid(np.full((1, 3, 32, 32), 200, np.uint8), 2)
    assert np.abs(flat_band).max() < 1e-4


def naive_swd(real: np.ndarray, fake: np.ndarray, patches: int, directions: int, seed: int):
    """The paper's recipe written out with loops, drawing from the same seeded streams."""
    kernel = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256

    def convolve(x, k):  # 5x5, mirrored borders (scipy's "mirror", cv2's default)
        padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
        out = np.zeros(x.shape)
        for dy in range(5):
            for dx in range(5):
                out += k[dy, dx] * padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
        return out

    def pyramid(images, levels):
        out = [images.astype(np.float64)]
        for _ in range(levels - 1):
            small = convolve(out[-1], kernel)[:, :, ::2, ::2]
            zeros = np.zeros(out[-1].shape)
            zeros[:, :, ::2, ::2] = small
            out[-1] = out[-1] - convolve(zeros, 4 * kernel)
            out.append(small)
        return out

    levels = 1 + int(np.log2(real.shape[2] // 16))
    result = []
    for level, (ra, fa) in enumerate(zip(pyramid(real, levels), pyramid(fake, levels))):
        size = ra.shape[2]
        corners = np.random.default_rng([seed, level, 0]).integers(
            0, size - 6, size=(max(len(real), len(fake)), patches, 2)
        )
        sets = []
        for band in (ra, fa):
            desc = np.array(
                [band[i, :, y : y + 7, x : x + 7] for i in range(len(band)) for y, x in corners[i]]
            )  # [patches, 3, 7, 7]
            desc = (desc - desc.mean(axis=(0, 2, 3), keepdims=True)) / desc.std(
                axis=(0, 2, 3), keepdims=True
            )
            sets.append(desc.reshape(len(desc), -1))
        dirs = np.random.default_rng([seed, level, 1]).standard_normal((directions, 147))
        dists = []
        for d in dirs:
            d = d / np.linalg.norm(d)
            dists.append(np.mean(np.abs(np.sort(sets[0] @ d) - np.sort(sets[1] @ d))))
        result.append(1e3 * np.mean(dists))
    return result


def test_matches_the_recipe_written_out_with_loops():
    real, fake = textured_blobs(5, seed=1, size=64), smooth_noise(5, seed=2, size=64)
    got = sliced_wasserstein(real, fake, patches_per_image=9, directions=11, seed=3)
    want = naive_swd(real, fake, patches=9, directions=11, seed=3)
    np.testing.assert_allclose(got.per_level, want, rtol=1e-4)
    assert got.mean == pytest.approx(np.mean(want), rel=1e-4)


def test_global_brightness_and_contrast_are_normalised_away():
    """As in ProGAN: each set is standardised per channel, so SWD compares texture, not exposure."""
    images = textured_blobs(64, seed=1)
    dimmer = (images // 2 + 60).astype(np.uint8)
    other = smooth_noise(64, seed=2)
    assert (
        sliced_wasserstein(images, dimmer, **FAST).mean
        < 0.1 * sliced_wasserstein(images, other, **FAST).mean
    )


BAD_INPUTS = {
    "channels last": np.zeros((4, 32, 32, 3), np.uint8),
    "no batch axis": np.zeros((3, 32, 32), np.uint8),
    "grey": np.zeros((4, 1, 32, 32), np.uint8),
    "not square": np.zeros((4, 3, 32, 16), np.uint8),
    "float": np.zeros((4, 3, 32, 32), np.float32),
    "too small": np.zeros((4, 3, 8, 8), np.uint8),
    "odd halving": np.zeros((4, 3, 33, 33), np.uint8),
    "empty": np.zeros((0, 3, 32, 32), np.uint8),
    "other size": np.zeros((4, 3, 64, 64), np.uint8),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_raise_value_error(name):
    good = np.zeros((4, 3, 32, 32), np.uint8)
    with pytest.raises(ValueError):
        sliced_wasserstein(good, BAD_INPUTS[name], **FAST)
    if name != "other size":
        with pytest.raises(ValueError):
            sliced_wasserstein(BAD_INPUTS[name], good, **FAST)


def test_messages_name_the_problem():
    good = np.zeros((4, 3, 32, 32), np.uint8)
    with pytest.raises(ValueError, match="channels last"):
        sliced_wasserstein(good, BAD_INPUTS["channels last"])
    with pytest.raises(ValueError, match="at least 1"):
        sliced_wasserstein(good, good, patches_per_image=0)


def test_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import swd"
    subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS, check=True)
