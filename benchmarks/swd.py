"""Sliced Wasserstein distance between two image sets, as ProGAN reports it (numpy only).

Why this metric: it needs no downloaded network (no Inception weights, no torch), and it
compares the statistics of small patches at each scale of a Laplacian pyramid, so it says *where*
two sets differ: missing fine detail (blur) shows at the finest level, wrong large-scale structure
at the coarsest. Step 3 below makes it blind to a global per-channel brightness or contrast change,
as in the paper. Karras et al. 2018, "Progressive Growing of GANs", section 5 ("multi-scale
statistical similarity"), and its code.

How, per set and per pyramid level (full size S, S/2, ... down to 16 px):

1. Laplacian pyramid with the 5-tap binomial filter [1, 4, 6, 4, 1] / 16 (as cv2.pyrDown/pyrUp,
   mirrored borders): each level but the last is the band-pass ``image - up(down(image))``,
   the last (16 px) is the low-pass image itself.
2. ``patches_per_image`` random 7x7 neighbourhoods per image, each a 7*7*3 = 147-d descriptor.
3. Each set's descriptors are normalised per colour channel: minus the mean, over the std, taken
   over all that set's patches at that level.
4. Sliced Wasserstein distance: project both descriptor sets onto ``directions`` random unit
   vectors, sort each projection, and average the absolute differences of the sorted values
   (the 1-D Wasserstein-1 distance per direction, averaged over directions). ProGAN's
   "4 repeats of 128 directions" is the same number as 512 directions at once.
5. Times 1e3, as the paper prints it; ``mean`` is the average over levels.

Differences from the reference (tkarras/progressive_growing_of_gans, metrics/sliced_wasserstein.py),
none changing what it estimates: patch positions come from ``seed`` alone and are shared by the two
sets (common random numbers: identical sets score exactly 0, paired sets are compared at the same
spots); the two sets may differ in size (the 1-D distance is then the exact integral between the
two empirical quantile functions); directions are drawn once per level and shared by both sets.

Values depend on the number of patches (a finite sample of the same distribution scores > 0), so
compare numbers computed with the same ``patches_per_image``, ``directions`` and set sizes.

Cost grows with images x patches_per_image x directions (a matmul and a sort per level). With the
paper's defaults, 3000 vs 3000 images of 32 px took about 13 s of CPU time on one core;
``patches_per_image=64, directions=256`` takes about 4 s with a similar seed-to-seed spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATCH = 7  # neighbourhood size, pixels
MIN_LEVEL = 16  # the coarsest pyramid level, pixels
_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0
_PROJECTION_BUDGET = 1 << 24  # floats per projection block: bounds memory, not the result


@dataclass
class SWDResult:
    per_level: list[float]  # SWD x 1e3 at each level, finest first
    mean: float  # average of ``per_level``
    resolutions: list[int]  # pixel size of each level, e.g. [32, 16]


def sliced_wasserstein(
    real: np.ndarray,
    fake: np.ndarray,
    patches_per_image: int = 128,
    directions: int = 512,
    seed: int = 0,
) -> SWDResult:
    """SWD x 1e3 between two uint8 image sets [N, 3, S, S] (channels first, RGB), per level.

    Needs no downloaded network: it compares the statistics of 7x7 patches at each scale of a
    Laplacian pyramid, so a per-level number says which scale (fine detail, layout) is off.
    ``real`` and ``fake`` must share S (square, >= 16) but may hold different numbers of images.
    Deterministic for a given ``seed``. Lower is closer; identical sets give 0.
    """
    if patches_per_image < 1 or directions < 1:
        raise ValueError("patches_per_image and directions must be at least 1")
    real = _check_images(real, "real")
    fake = _check_images(fake, "fake")
    if real.shape[2] != fake.shape[2]:
        raise ValueError(f"real and fake differ in size: {real.shape[2]} vs {fake.shape[2]} px")
    resolutions = pyramid_resolutions(real.shape[2])
    real_pyramid = laplacian_pyramid(real, len(resolutions))
    fake_pyramid = laplacian_pyramid(fake, len(resolutions))
    per_level = []
    for level, (real_band, fake_band) in enumerate(zip(real_pyramid, fake_pyramid)):
        size = real_band.shape[2]
        rng = np.random.default_rng([seed, level, 0])
        count = max(len(real), len(fake))
        corners = rng.integers(0, size - PATCH + 1, size=(count, patches_per_image, 2))
        desc_real = _normalise(_patches(real_band, corners[: len(real)]))
        desc_fake = _normalise(_patches(fake_band, corners[: len(fake)]))
        dirs = np.random.default_rng([seed, level, 1]).standard_normal((directions, 3 * PATCH**2))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        per_level.append(1e3 * _sliced_w1(desc_real, desc_fake, dirs.astype(np.float32)))
    return SWDResult(per_level=per_level, mean=float(np.mean(per_level)), resolutions=resolutions)


def pyramid_resolutions(size: int) -> list[int]:
    """Level sizes from ``size`` halving down to 16 px: 32 -> [32, 16], 64 -> [64, 32, 16]."""
    if size < MIN_LEVEL:
        raise ValueError(f"images must be at least {MIN_LEVEL} px, got {size}")
    out = [size]
    while out[-1] // 2 >= MIN_LEVEL:
        if out[-1] % 2:
            raise ValueError(f"image size {size} does not halve evenly down to {MIN_LEVEL} px")
        out.append(out[-1] // 2)
    return out


def laplacian_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """float32 [N, C, S, S] band-pass levels, finest first; the last level is the low-pass."""
    current = images.astype(np.float32)
    pyramid = []
    for _ in range(levels - 1):
        smaller = _pyr_down(current)
        pyramid.append(current - _pyr_up(smaller))
        current = smaller
    pyramid.append(current)
    return pyramid


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        hint = ""
        if images.ndim == 4 and images.shape[-1] == 3:
            hint = " (channels last? pass images.transpose(0, 3, 1, 2))"
        raise ValueError(f"{name}: expected shape [N, 3, S, S], got {images.shape}{hint}")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"{name}: expected square images, got {images.shape[2:]} px")
    if len(images) == 0:
        raise ValueError(f"{name}: no images")
    pyramid_resolutions(images.shape[2])
    return images


def _filter_axis(x: np.ndarray, axis: int, taps: np.ndarray) -> np.ndarray:
    """5-tap filter along ``axis`` with mirrored borders (d c b | a b c d | c b a, as cv2)."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (2, 2)
    padded = np.pad(x, pad, mode="reflect")
    length = x.shape[axis]

    def shifted(k: int) -> np.ndarray:
        index = [slice(None)] * x.ndim
        index[axis] = slice(k, k + length)
        return padded[tuple(index)]

    out = taps[0] * shifted(0)
    for k in range(1, 5):
        out += taps[k] * shifted(k)
    return out


def _pyr_down(x: np.ndarray) -> np.ndarray:
    """Blur with the 5x5 binomial kernel and keep every second pixel (cv2.pyrDown)."""
    x = _filter_axis(x, 2, _TAPS)[:, :, ::2]
    return _filter_axis(x, 3, _TAPS)[:, :, :, ::2]


def _pyr_up(x: np.ndarray) -> np.ndarray:
    """Insert zeros between pixels, blur with 4x the binomial kernel (cv2.pyrUp)."""
    n, c, h, w = x.shape
    up = np.zeros((n, c, 2 * h, 2 * w), np.float32)
    up[:, :, ::2, ::2] = x
    return _filter_axis(_filter_axis(up, 2, 2 * _TAPS), 3, 2 * _TAPS)


def _patches(band: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """[N, P, 2] top-left corners -> float32 [N * P, 3 * 7 * 7] descriptors."""
    windows = np.lib.stride_tricks.sliding_window_view(band, (PATCH, PATCH), axis=(2, 3))
    image = np.repeat(np.arange(len(corners)), corners.shape[1])
    rows, cols = corners.reshape(-1, 2).T
    return np.ascontiguousarray(windows[image, :, rows, cols]).reshape(len(image), -1)


def _normalise(desc: np.ndarray) -> np.ndarray:
    """Per colour channel: subtract the mean and divide by the std over all patches of the set.

    Two passes, sums in float64: float32 sums over ~10^7 values would drift.
    """
    per_channel = desc.reshape(len(desc), 3, -1)  # a view: desc is contiguous
    values = per_channel.shape[0] * per_channel.shape[2]
    mean = desc.sum(axis=0, dtype=np.float64).reshape(3, -1).sum(axis=1) / values
    per_channel -= mean.astype(np.float32)[:, None]
    squares = np.square(desc).sum(axis=0, dtype=np.float64).reshape(3, -1).sum(axis=1)
    std = np.sqrt(squares / values)
    std[std == 0] = 1.0  # a flat channel stays 0 rather than NaN
    per_channel /= std.astype(np.float32)[:, None]
    return desc


def _sliced_w1(a: np.ndarray, b: np.ndarray, dirs: np.ndarray) -> float:
    """Mean over unit ``dirs`` [D, F] of the 1-D Wasserstein-1 distance between projections."""
    block = max(1, min(len(dirs), _PROJECTION_BUDGET // max(len(a), len(b))))
    if len(a) != len(b):
        weights, index_a, index_b = _quantile_grid(len(a), len(b))
    total = 0.0
    for start in range(0, len(dirs), block):
        chunk = dirs[start : start + block]
        proj_a = chunk @ a.T  # [block, Na], one row per direction
        proj_b = chunk @ b.T
        proj_a.sort(axis=1)
        proj_b.sort(axis=1)
        if len(a) == len(b):
            total += float(np.abs(proj_a - proj_b).mean(axis=1, dtype=np.float64).sum())
        else:
            gaps = np.abs(proj_a[:, index_a] - proj_b[:, index_b])
            total += float((gaps @ weights).sum())
    return total / len(dirs)


def _quantile_grid(na: int, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights and sorted-sample indices so that W1 = sum w * |a[ia] - b[ib]| exactly.

    The quantile function of n sorted samples is a[floor(t * n)] on t in [0, 1): piecewise
    constant with steps at i / n. On the union of both sets' steps, both are constant.
    Steps are kept as integers on a grid of 1 / (na * nb), so no rounding can misplace one.
    """
    steps = np.union1d(np.arange(na + 1, dtype=np.int64) * nb, np.arange(nb + 1) * na)
    weights = np.diff(steps) / (na * nb)
    twice_mid = steps[:-1] + steps[1:]
    return weights, twice_mid // (2 * nb), twice_mid // (2 * na)
