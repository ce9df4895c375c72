from __future__ import annotations

import numpy as np
import torch

from birdvae.training import selector


def test_rating_draws_off_a_terminal_logs_a_line_at_each_tenth(capsys):
    """Minutes of rating with stderr in a log file (CI, nohup) said nothing until they ended."""
    rated = []

    def rate(images: np.ndarray) -> np.ndarray:
        rated.append(len(images))
        return images.mean(axis=(1, 2, 3))

    draws = 20 * selector.CHUNK
    noise, scores = selector.scored_draws(
        torch.nn.Identity(), lambda z: z[:, :3, None, None], rate, dim=4, draws=draws, seed=0
    )
    assert noise.shape == (draws, 4) and scores.shape == (draws,) and sum(rated) == draws
    assert np.allclose(scores, noise[:, :3].mean(1).numpy(), atol=1e-6)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[1].split("%")[0] for line in lines] == [
        str(p) for p in range(10, 101, 10)
    ]  # fmt: skip
    assert lines[0].startswith(f"rating draws: {2 * selector.CHUNK:,} of {draws:,} (10%), ")
    assert lines[-1].endswith(" s in all")


def test_draws_at_a_temperature_are_the_seeded_normals_times_it():
    """The runtime feeds the graph temperature x N(0, I): a selector taught on noise at another
    scale than it will see ranks draws it never learned from."""
    seen = []

    def sampler(noise: torch.Tensor) -> torch.Tensor:
        seen.append(noise)
        return noise

    normal = torch.randn(8, 3, generator=torch.Generator().manual_seed(5))
    noise, scores = selector.scored_draws(
        sampler, lambda z: z[:, :, None, None], lambda images: images.mean(axis=(1, 2, 3)),
        dim=3, draws=8, seed=5, temperature=0.4,
    )  # fmt: skip
    assert torch.allclose(noise, 0.4 * normal) and torch.equal(torch.cat(seen), noise)
    assert np.allclose(scores, noise.mean(1).numpy(), atol=1e-6)
