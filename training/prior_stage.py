"""The prior stage (``--stage prior``): the learned prior (prior.py) trained on posterior
samples of the frozen encoder's codes of the training photos (stages.py: what every stage
after the VAE shares)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from birdvae.runtime import selection

from . import codes
from .averaging import exponential_average
from .checkpoint import JUDGE, PRIOR_EMA
from .config import Stream
from .loop import Trainer
from .prior import P_MEAN, P_STD, CodePrior
from .stages import (
    RATER_SHA,
    VAL_LEVELS,
    check_same_rater,
    frozen_vae,
    judge_weights,
    start_state,
)


def _clearest(images: torch.Tensor, keep: float) -> torch.Tensor:
    """The share ``keep`` of uint8 photos [N, 3, S, S] that the rater (what bird-gen's --best-of
    ranks draws by) rates highest, in their own order."""
    if keep >= 1:
        return images
    scores = selection.load_rater()(images.float().div(255).cpu().numpy())
    count = max(1, round(len(images) * keep))
    chosen = np.sort(np.argsort(-scores, kind="stable")[:count])
    return images[torch.from_numpy(chosen).to(images.device)]


class PriorTrainer(Trainer):
    """Trains ``CodePrior`` on posterior samples of the frozen encoder's codes."""

    score_key = "val_prior_loss"
    item_name = "code"
    train_set_name = "codes (views of the photos)"

    def _build(self) -> None:
        config = self.config
        init = start_state(self)
        self.model = frozen_vae(init, self.device)  # last.pt's "model" is it too
        self.judging_vae = judge_weights(init, 0.0)
        self.ema = None
        cfg = config.prior
        train = _clearest(self.train_images, cfg.keep)
        self.bank = torch.cat([
            codes.encode_bank(self.model, view, self.dtype)
            for view in codes.each_view(train, cfg.views, config.shift, config.seed)
        ])  # fmt: skip
        val = _clearest(self.held_out, cfg.keep)
        self.val_bank = codes.encode_bank(self.model, val, self.dtype)
        self.prior = CodePrior(config.model.latent_dim, cfg).to(self.device)
        # Drawn on the CPU, so a prior and its guide see the same draws whatever device each
        # trained on (export checks that they standardise codes alike).
        generator = torch.Generator().manual_seed(config.seed)
        self.prior.set_scale(codes.draw(self.bank, generator))
        self.prior_ema = exponential_average(self.prior, config.ema_decay)
        self.optimizer = torch.optim.AdamW(
            self.prior.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self._val_inputs = self._fixed_inputs(self.val_bank, config.seed + Stream.PRIOR_VAL)
        order = torch.randperm(len(self.bank), generator=generator)
        train_rows = self.bank[order[:1024].to(self.bank.device)]
        self._train_inputs = self._fixed_inputs(train_rows, config.seed + Stream.PRIOR_TRAIN_PROBE)

    def _fixed_inputs(self, bank: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
        """Codes, noise levels and noise for a validation loss that only the weights move."""
        generator = torch.Generator().manual_seed(seed)
        z = codes.draw(bank, generator).repeat(VAL_LEVELS, 1)
        quantiles = (torch.arange(VAL_LEVELS) + 0.5) / VAL_LEVELS
        normal = torch.distributions.Normal(0.0, 1.0)
        sigmas = (normal.icdf(quantiles) * P_STD + P_MEAN).exp().repeat_interleave(len(bank))
        noise = torch.randn(z.shape, generator=generator).to(bank.device)
        return z, sigmas.to(bank.device), noise

    def _trained_module(self) -> torch.nn.Module:
        return self.prior

    def _train_set(self) -> torch.Tensor:
        return self.bank

    def train_step(self, rows: torch.Tensor) -> dict[str, float] | None:
        with self.autocast:
            loss = self.trainable(codes.draw(rows)).float()  # CodePrior.forward: the loss
        if self.optimizer_step(loss, self.prior, self.prior_ema) is None:
            return None
        return {"prior_loss": float(loss.detach())}

    @torch.no_grad()
    def _loss_on(self, inputs: tuple[torch.Tensor, ...]) -> float:
        prior = self.prior_ema.module.eval()
        z, sigmas, noise = inputs
        total = 0.0
        for start in range(0, len(z), 4096):
            part = slice(start, start + 4096)
            x = prior.standardise(z[part])
            total += float(prior.loss_at(x, sigmas[part], noise[part])) * len(x)
        return total / len(z)

    def _validate(self) -> dict[str, float]:
        figures = {
            "val_prior_loss": self._loss_on(self._val_inputs),
            "train_fixed_prior_loss": self._loss_on(self._train_inputs),
        }
        self.prior.train()
        return figures

    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{stats['prior_loss']:.4f}"}

    def _log_line(self, metrics: dict[str, Any]) -> str:
        return (
            f"train {metrics['train_prior_loss']:.4f}  val {metrics['val_prior_loss']:.4f} "
            f"(train, same protocol: {metrics['train_fixed_prior_loss']:.4f})"
        )

    def _grid_kinds(self) -> tuple[str, ...]:
        return ("samples",)

    def _grid_images(self) -> dict[str, torch.Tensor]:
        """The fixed noise through the prior's weight average, decoded."""
        z = self.prior_ema.module.eval().sample(self.fixed_z.to(self.device))
        return {"samples": self.model.decode_image(z)}

    def _extra_state(self) -> dict[str, Any]:
        state = {
            "prior": self.prior.state_dict(),
            PRIOR_EMA: self.prior_ema.module.state_dict(),
            "prior_ema_n": int(self.prior_ema.n_averaged),
        }
        if self.judging_vae is not None:
            state[JUDGE] = self.judging_vae
        if self.config.prior.keep < 1:
            state[RATER_SHA] = selection.RATER_SHA256
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if self.config.prior.keep < 1:
            check_same_rater(state)
        self.prior.load_state_dict(state["prior"])
        self.prior_ema.module.load_state_dict(state[PRIOR_EMA])
        self.prior_ema.n_averaged.fill_(int(state["prior_ema_n"]))
