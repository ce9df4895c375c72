"""Best of k: of several birds drawn for one place, keep the one a person most readily calls a bird.

Rated blind, the samples people call "clearly a bird" are a whole bird standing out in the middle
of a plain background; the ones they call "not a bird" are small shapes lost in a busy one
(docs/BENCHMARKS.md, "Best of k"). ``figure_ground`` scores exactly that, from pixels alone:
edges in the middle, few edges at the border, and a middle whose colour differs from the
border's. Scores from networks trained to tell samples from photos, or a species classifier's
confidence, preferred busy, colourful draws instead and made the birds no easier to recognise.
"""

from __future__ import annotations

import numpy as np

MAX_BEST_OF = 16
CONTRAST_WEIGHT = 0.5  # the colour difference against the edge densities, both in [0, 1] units


def figure_ground(images: np.ndarray) -> np.ndarray:
    """A score per image (float32 [N, 3, S, S] in [0, 1]): higher for a distinct object in the
    middle of a plain background."""
    gray = images.mean(axis=1)
    edges = np.zeros_like(gray)
    edges[:, :, :-1] += np.abs(np.diff(gray, axis=2))
    edges[:, :-1, :] += np.abs(np.diff(gray, axis=1))
    size = images.shape[-1]
    border = np.ones((size, size), bool)
    inset = max(1, size * 5 // 32)  # the outer 5 of 32 pixels a side
    border[inset:-inset, inset:-inset] = False
    middle = np.zeros((size, size), bool)
    middle[size // 4 : size - size // 4, size // 4 : size - size // 4] = True
    contrast = np.linalg.norm(
        images[:, :, middle].mean(axis=2) - images[:, :, border].mean(axis=2), axis=1
    )
    sharpness = edges[:, middle].mean(axis=1) - edges[:, border].mean(axis=1)
    return sharpness + CONTRAST_WEIGHT * contrast


def best_of(images: np.ndarray, k: int) -> np.ndarray:
    """Of each k consecutive images [N * k, 3, S, S], the one ``figure_ground`` scores highest:
    [N, 3, S, S]."""
    if k == 1:
        return images
    groups = images.reshape(-1, k, *images.shape[1:])
    chosen = figure_ground(images).reshape(-1, k).argmax(axis=1)
    return groups[np.arange(len(groups)), chosen]
