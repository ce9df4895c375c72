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
