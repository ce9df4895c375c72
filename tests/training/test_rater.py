"""training/rater.py: the PyTorch twin of the shipped rater rates as the runtime's graph does,
its hinge stops at the target, and following its gradient raises the rating."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from birdvae.runtime.format import ModelFormatError
from birdvae.runtime.selection import load_rater
from birdvae.training import rater
from birdvae.training.config import SharpenConfig


def test_the_twin_rates_as_the_shipped_graph_at_any_size(bird_photos):
    twin = rater.shipped_rater()
    rate = load_rater(threads=1)
    noise = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    photos32, photos64 = (torch.from_numpy(bird_photos(size)) for size in (32, 64))
    for images in (torch.cat([photos32, noise]), photos64):
        with torch.no_grad():
            ours = twin(rater.to_rater_size(images)).numpy()
        np.testing.assert_allclose(ours, rate(images.numpy()), atol=1e-4)
    assert not any(p.requires_grad for p in twin.parameters())


def test_loading_the_twin_leaves_torchs_random_streams_alone():
    """Building the networks seeds torch; a run's --seed must still decide its own draws."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    rater.shipped_rater()
    assert torch.equal(torch.rand(3), expected)


def test_a_damaged_rater_file_is_refused(monkeypatch):
    from birdvae.runtime import selection

    monkeypatch.setattr(selection, "RATER_SHA256", "0" * 64)
    with pytest.raises(ModelFormatError, match="damaged"):
        rater.shipped_rater()


def test_a_rater_file_with_a_network_part_too_many_is_refused(monkeypatch):
    """Three networks of five biased layers each: one bias more is no whole network, and is
    refused rather than silently left out."""
    extra = "networks.9.0.bias"
    import onnx
    from onnx import numpy_helper

    graph, path = rater.rater_bytes()
    model = onnx.load_from_string(graph)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), extra))
    monkeypatch.setattr(rater, "rater_bytes", lambda: (model.SerializeToString(), path))
    with pytest.raises(ModelFormatError, match="does not hold the rater's networks"):
        rater.shipped_rater()


class _Fixed(torch.nn.Module):
    """A rater that gives every picture the same score."""

    def __init__(self, score: float) -> None:
        super().__init__()
        self.score = score

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3)) * 0 + self.score


TARGET = SharpenConfig().rater_target


@pytest.mark.parametrize(("score", "loss"), [(2.0, 0.0), (TARGET, 0.0), (0.3, 1.0)])
def test_the_hinge_stops_pushing_at_the_target(score, loss):
    images = torch.rand(5, 3, 16, 16)
    got = rater.rater_loss(_Fixed(score), images, torch.Generator().manual_seed(0), SharpenConfig())
    assert got.item() == pytest.approx(loss, abs=1e-6)


def test_following_the_term_raises_the_rating_of_pictures_below_the_target():
    twin = rater.shipped_rater()
    generator = torch.Generator().manual_seed(1)
    images = (0.5 + 0.1 * torch.randn(8, 3, 32, 32, generator=generator)).clamp(0, 1)
    with torch.no_grad():
        before = twin(images)
    assert (before < TARGET).all()
    images.requires_grad_(True)
    rater.rater_loss(twin, images, generator, SharpenConfig()).backward()
    with torch.no_grad():
        after = twin((images - 0.05 * images.grad.sign()).clamp(0, 1))
    assert after.mean() > before.mean() + 0.05, (before, after)
