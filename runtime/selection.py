"""Best of k: of several birds drawn for one place, keep the one a person most readily calls a bird.

The judge is the rater (``models/rater32/rater.onnx``, shipped with the package): a small
network that predicts the score a blind rater gives a picture on a rating sheet (2 clearly a
bird, 1 maybe, 0 not a bird), learned from thousands of rated cells
(``benchmarks/rater.py``; its card says how well it agrees). A rule written by hand (edges in
the middle, a plain border) agreed with raters about half as well, and the birds it chose
rated lower; networks trained to tell samples from photos, or a species classifier's confidence,
chose busy, colourful pictures. The rater sees 32x32 pictures; others are resampled by area.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np

from .format import ModelFormatError
from .graphs import check_signature, open_session, run_graph

MAX_BEST_OF = 16
RATER_FOLDER = "rater32"  # under the shipped models
RATER_FILE = "rater.onnx"
RATER_INPUT = "image"  # float32 [N, 3, 32, 32] in [0, 1]
RATER_OUTPUT = "rating"  # float32 [N]: the predicted score, about 0 to 2 (a regression, unclipped)
RATER_SIZE = 32
RATER_BATCH = 256
# The shipped rater's bytes: a damaged file that still parses would silently change which birds
# are chosen. benchmarks/rater.py prints the new value when it fits another.
RATER_SHA256 = "d75e0774ded4b1453b6e15770c8d1d1eb45775c7be7714ddfb5861bf1062059e"

Rate = Callable[[np.ndarray], np.ndarray]


def rater_bytes() -> tuple[bytes, Path]:
    """The shipped rater's graph, checked against its sha256, and where it was read from."""
    # One name a call: a zip import's zipfile.Path.joinpath takes one argument on Python 3.9.
    resource = files("birdvae.models").joinpath(RATER_FOLDER).joinpath(RATER_FILE)
    path = Path(str(resource))
    if not resource.is_file():
        raise ModelFormatError(f"the rater {path} is not in this installation; reinstall bird-vae")
    graph = resource.read_bytes()
    if hashlib.sha256(graph).hexdigest() != RATER_SHA256:
        raise ModelFormatError(f"the rater {path} is damaged (its sha256 is not the shipped one); "
                               "reinstall bird-vae")  # fmt: skip
    return graph, path


def load_rater(threads: int = 0) -> Rate:
    """The shipped rater as a function: float32 pictures [N, 3, S, S] in [0, 1] -> ratings [N]."""
    graph, path = rater_bytes()
    session = open_session(graph, path, threads)
    check_signature(session, path, RATER_INPUT, (3, RATER_SIZE, RATER_SIZE), (RATER_OUTPUT,))

    def rate(images: np.ndarray) -> np.ndarray:
        small = to_rater_size(images)
        if len(small) == 0:
            return np.zeros(0, np.float32)
        out = [
            run_graph(session, RATER_FILE, [RATER_OUTPUT], RATER_INPUT, batch)[0]
            for batch in np.split(small, range(RATER_BATCH, len(small), RATER_BATCH))
        ]
        ratings = np.concatenate(out)
        if ratings.shape != (len(images),):
            raise ModelFormatError(
                f"{path} gave ratings of shape {ratings.shape} for {len(images)} pictures"
            )
        return ratings

    return rate


def to_rater_size(images: np.ndarray) -> np.ndarray:
    """Pictures float32 [N, 3, S, S] resampled to the rater's 32x32: each output pixel the mean
    of the input area it covers, fractions of pixels included."""
    images = np.asarray(images, dtype=np.float32)
    size = images.shape[-1]
    if size == RATER_SIZE:
        return images
    area = area_matrix(size, RATER_SIZE)
    return (area @ images @ area.T).astype(np.float32, copy=False)  # batched matrix products


def area_matrix(size: int, out: int) -> np.ndarray:
    """[out, size]: row i averages the part of [0, size) that output pixel i covers."""
    edges = np.arange(out + 1) * (size / out)
    left, right = edges[:-1, None], edges[1:, None]
    pixels = np.arange(size)[None, :]
    overlap = np.clip(np.minimum(right, pixels + 1) - np.maximum(left, pixels), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def best_of(images: np.ndarray, k: int, rate: Rate | None) -> np.ndarray:
    """Of each k consecutive images [N * k, 3, S, S], the one ``rate`` scores highest:
    [N, 3, S, S] (k 1 needs no rate)."""
    if k == 1:
        return images
    assert rate is not None
    groups = images.reshape(-1, k, *images.shape[1:])
    chosen = rate(images).reshape(-1, k).argmax(axis=1)
    return groups[np.arange(len(groups)), chosen]
