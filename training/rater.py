"""The shipped rater (``models/rater32/rater.onnx``) as a PyTorch module, and the term of the
decoder stage that follows its gradient.

The rater predicts the score a blind rater gives a picture (2 clearly a bird, 1 maybe, 0 not a
bird); ``benchmarks/rater.py`` fits it on rated sheets and exports it, and the runtime chooses
among draws with it. Choosing cannot make a bird the decoder never draws, so the decoder stage
can also learn from it: ``--rater-weight`` adds a term that raises the rater's score of the
decoder's pictures of learned-prior draws. The rater is a small regression and easy to fool
(followed without a bound, its score passed 7 on a scale of 0 to 2 within an epoch while the
pictures turned to noise), so the term is a hinge that stops pushing a picture once it scores
the config's ``rater_target``, and it sees each picture under random colour and translation,
so what it rewards has to survive small changes.

The weights come from the shipped graph itself (checked against its pinned sha256), so the
gradient the decoder follows is that of the rater the runtime chooses with.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from birdvae.runtime.format import ModelFormatError
from birdvae.runtime.selection import RATER_SIZE, area_matrix, rater_bytes

from .augment import private_seed
from .config import SharpenConfig
from .sharpen import diff_augment

SHEET_TILE = 112  # rating_sheet.py shows each picture at this size, nearest neighbour
WIDTH = 16


def sheet_view() -> torch.Tensor:
    """The 32x32 matrix M with M @ channel @ M.T = the channel shown at 112 px (nearest) and
    averaged back to 32 (box), as a cell cut from a sheet is: PIL's own resamplers, column by
    column."""
    columns = []
    for j in range(RATER_SIZE):
        impulse = np.zeros((1, RATER_SIZE), np.float32)
        impulse[0, j] = 1.0
        wide = Image.fromarray(impulse, mode="F").resize((SHEET_TILE, 1), Image.NEAREST)
        columns.append(np.asarray(wide.resize((RATER_SIZE, 1), Image.BOX))[0])
    return torch.from_numpy(np.stack(columns, axis=1))


def network(seed: int) -> nn.Module:
    """Four 3x3 convolution stages (16 to 64 channels), global pooling, one linear output."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for stage, out in enumerate((WIDTH, 2 * WIDTH, 4 * WIDTH, 4 * WIDTH)):
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
        layers.append(nn.MaxPool2d(2) if stage < 3 else nn.AdaptiveAvgPool2d(1))
        channels = out
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.3), nn.Linear(channels, 1))


class Rater(nn.Module):
    """images float32 [N, 3, 32, 32] in [0, 1] -> the predicted rating [N]: the mean of the
    networks over each picture and its mirror image, after the sheet's blur."""

    def __init__(self, networks: list[nn.Module]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.register_buffer("view", sheet_view())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.rate_shown(self.view @ images @ self.view.T)

    def rate_shown(self, shown: torch.Tensor) -> torch.Tensor:
        """The ratings of pictures already blurred as the sheet shows them."""
        mirrored = shown.flip(3)
        ratings = [net(view).squeeze(1) for net in self.networks for view in (shown, mirrored)]
        return torch.stack(ratings).mean(0)


def shipped_rater(device: torch.device | str = "cpu") -> Rater:
    """The shipped rater's weights in a frozen ``Rater``, in eval mode."""
    import onnx
    from onnx import numpy_helper

    graph, path = rater_bytes()
    weights = {
        tensor.name: torch.from_numpy(numpy_helper.to_array(tensor).copy())
        for tensor in onnx.load_from_string(graph).graph.initializer
    }
    count = sum(1 for name in weights if name.startswith("networks.") and name.endswith(".bias"))
    with private_seed(0):  # network() seeds torch; the caller's streams stay as they were
        biases = sum(1 for name, _ in network(0).named_parameters() if name.endswith(".bias"))
        rater = Rater([network(seed) for seed in range(count // biases)])
    missing = [name for name in rater.state_dict() if name not in weights]
    if count == 0 or count % biases or missing:
        raise ModelFormatError(f"{path} does not hold the rater's networks (missing {missing[:3]})")
    try:
        rater.load_state_dict({name: weights[name] for name in rater.state_dict()})
    except RuntimeError as exc:
        raise ModelFormatError(f"{path}: the rater's weights do not fit its networks") from exc
    return rater.to(device).eval().requires_grad_(False)


def to_rater_size(images: torch.Tensor) -> torch.Tensor:
    """Pictures of any square size resampled to the rater's 32x32 with the runtime's own area
    matrix (runtime/selection.py), so the term rates what ``bird-gen --best-of`` would."""
    size = images.shape[-1]
    if size == RATER_SIZE:
        return images
    area = torch.from_numpy(area_matrix(size, RATER_SIZE)).to(images.device)
    return area @ images @ area.T


def rater_loss(
    rater: Rater, images: torch.Tensor, generator: torch.Generator, cfg: SharpenConfig
) -> torch.Tensor:
    """How far below ``cfg.rater_target`` the rater scores ``images`` ([0, 1], any square
    size), averaged over pictures and ``cfg.rater_views`` random views: 0 once every view
    scores the target."""
    small = to_rater_size(images.float())
    views = [diff_augment(small, cfg.rater_augment, generator) for _ in range(cfg.rater_views)]
    return torch.relu(cfg.rater_target - rater(torch.cat(views))).mean()
