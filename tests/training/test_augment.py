"""The views every stage trains on (training/augment.py): mirrored half the time, shifted, and
drawn from the stream they are given, so a seed gives the same views."""

from __future__ import annotations

import pytest
import torch

from birdvae.training.augment import flip_and_shift


@pytest.fixture
def images() -> torch.Tensor:
    """1,000 different 1x4x4 pictures, none its own mirror image."""
    return torch.arange(1000 * 16, dtype=torch.float32).reshape(1000, 1, 4, 4)


def test_about_half_are_mirrored_and_the_rest_left_as_they_are(images):
    views = flip_and_shift(images, 0, generator=torch.Generator().manual_seed(0))
    mirrored = (views == images.flip(3)).flatten(1).all(1)
    kept = (views == images).flatten(1).all(1)
    assert bool((mirrored ^ kept).all())  # each view is one or the other, whole
    assert 0.4 < mirrored.float().mean() < 0.6


def test_without_flip_or_shift_the_images_and_the_random_streams_are_untouched(images):
    """A config with flip off and shift 0 (the baseline preset's) trains on the photos as
    they are, and draws nothing from torch's streams (which would move every later draw)."""
    before = torch.get_rng_state()
    assert torch.equal(flip_and_shift(images, 0, flip=False), images)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_mirrorings_come_from_the_generator_given(images):
    """The species net's views are drawn from a generator of its own, so that the stage's
    other draws (from torch's global stream) do not move them."""
    views = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        views.append(flip_and_shift(images, 0, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(views[0], views[1])


def test_shifts_move_each_picture_within_the_limit(images):
    torch.manual_seed(0)
    views = flip_and_shift(images, 1, flip=False)
    assert not torch.equal(views, images)
    # A shift of at most one pixel each way keeps the centre pixels among their neighbours.
    centre = images[:, :, 1:3, 1:3]
    assert ((views[:, :, 1:3, 1:3] - centre).abs() <= 5).all()
