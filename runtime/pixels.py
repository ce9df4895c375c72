"""Pixel noise: draw images from the decoder's own pixel distribution, not just show its mean.

The decoder's likelihood is a logistic per sub-pixel around the mean image, with a learned scale
and, in coupled models, green and blue shifted by red's (and green's) draw. The mean alone is
smooth: it is the average of every image the code could stand for, so fine texture averages
away. Drawing each pixel at a temperature T (the logistic's scale times T) puts back the grain
the model expects at each pixel; T = 0 is the mean, T = 1 a full sample.
"""

from __future__ import annotations

import numpy as np

from .errors import check_between
from .format import MAX_NOISE

_TINY = 1e-6  # keeps uniform draws off 0 and 1, where the logistic's inverse CDF is infinite


def check_noise(noise: float) -> float:
    return check_between(noise, "noise", MAX_NOISE)


def draw_pixels(
    location: np.ndarray,
    scale: np.ndarray,
    coupling: np.ndarray,
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Images [N, 3, S, S] in [0, 1] drawn at temperature ``noise``.

    The three arrays are the decoder's pixel outputs, [N, 3, S, S] each. ``location`` is the
    logistic's centre before clipping: a centre below 0 puts nearly all draws at 0, as the
    likelihood's end bin does, where drawing around the clipped mean would scatter half of them
    upwards. Red is drawn first; green's centre then moves by ``coupling[:, 0]`` times red's
    deviation, blue's by ``coupling[:, 1]`` times red's and ``coupling[:, 2]`` times green's,
    each deviation taken after clipping, as the likelihood sees 8-bit values.
    """
    u = rng.random(location.shape, dtype=np.float32).clip(_TINY, 1.0 - _TINY)
    own = noise * scale * (np.log(u) - np.log1p(-u))  # logistic draws, each channel alone
    red_loc, green_loc, blue_loc = location[:, 0], location[:, 1], location[:, 2]
    red = np.clip(red_loc + own[:, 0], 0.0, 1.0)
    green = np.clip(green_loc + own[:, 1] + coupling[:, 0] * (red - red_loc), 0.0, 1.0)
    blue = blue_loc + own[:, 2] + coupling[:, 1] * (red - red_loc)
    blue = np.clip(blue + coupling[:, 2] * (green - green_loc), 0.0, 1.0)
    return np.stack([red, green, blue], axis=1)
