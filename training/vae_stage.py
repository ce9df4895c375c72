"""The VAE stage (``--stage vae``, the default): encoder and decoder trained together on the
photos' likelihood, with the KL term warmed up and floored by free bits, and a coupled
likelihood's colour coupling ramped in.

Every later stage (prior_stage.py, decoder_stage.py) starts from its checkpoint and keeps its
encoder frozen.
"""

from __future__ import annotations

from typing import Any

import torch

from .averaging import exponential_average
from .evaluate import reconstruction_grid
from .likelihood import bits_per_dim, to_unit
from .loop import Trainer
from .model import VAE, kl_per_dim


class VAETrainer(Trainer):
    """Trains a ``VAE`` from scratch; scored by validation bits/dim."""

    score_key = "val_bpd"

    def _schedule_figures(self) -> dict[str, float]:
        figures = {"kl_weight": self.kl_weight()}
        if self.model.likelihood.has_coupling:
            figures["coupling_weight"] = self.coupling_weight()
        return figures

    def _build(self) -> None:
        config = self.config
        # Channels-last suits oneDNN on the CPU (1.3x in float32) as much as cuDNN on a GPU.
        self.model = VAE(config.model).to(self.device, memory_format=torch.channels_last)
        self.ema = (
            exponential_average(self.model, config.ema_decay) if config.ema_decay > 0 else None
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )

    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        loss = "bpd" if self.model.likelihood.is_discrete else "bce"  # as _log_line says why
        return {loss: f"{stats['bpd']:.3f}", "kl": f"{stats['kl_bpd']:.3f}"}

    def _log_line(self, metrics: dict[str, Any]) -> str:
        # BCE is no likelihood over 8-bit pixels: its training loss in bits is not the bits/dim
        # validation reports (a Gaussian's with a fitted scale), so it is named for what it is.
        train = "train" if self.model.likelihood.is_discrete else "train BCE"
        return (
            f"{train} {metrics['train_bpd']:.3f}  val {metrics['val_bpd']:.3f} bits/dim (recon "
            f"{metrics['val_recon_bpd']:.3f}, kl {metrics['val_kl_bpd']:.3f})  psnr "
            f"{metrics['val_psnr']:.2f} dB"
        )

    def kl_weight(self) -> float:
        """The KL term's weight: ramped from 0 over the warm-up, then ``config.kl_weight``."""
        final = self.config.kl_weight
        warmup = self.config.kl_warmup_epochs * self.steps_per_epoch
        return final if warmup <= 0 else final * min(1.0, (self.step + 1) / warmup)

    def coupling_weight(self) -> float:
        """How much of a coupled likelihood's colour coupling the training loss uses.

        Coupled from the first step, a decoder learns to predict green and blue from red before
        the code is any use, then leaves red's location (all the photo's brightness) to a wide
        logistic and the code almost unused: reconstructions stall near 13 dB. So the coupling is
        off for ``coupling_warmup_epochs``, while the code learns the photo, and ramps in over as
        many again. Validation always scores the full coupling.
        """
        warmup = self.config.coupling_warmup_epochs * self.steps_per_epoch
        return 1.0 if warmup <= 0 else min(1.0, max(0.0, (self.step + 1 - warmup) / warmup))

    def train_step(self, x: torch.Tensor) -> dict[str, float] | None:
        """One optimiser step on a uint8 batch; None when it was skipped as non-finite."""
        x = self._augment(x)
        unit = to_unit(x).contiguous(memory_format=torch.channels_last)
        with self.autocast:
            params, mean, logvar = self.trainable(unit)
        recon = self.model.likelihood.nll(params, x, self.coupling_weight())  # nats per image
        kl_dims = kl_per_dim(mean, logvar)
        kl = kl_dims.sum(1)
        kl_term = kl_dims.mean(0).clamp(min=self.config.free_bits).sum()
        dims = x[0].numel()
        loss = (recon.mean() + self.kl_weight() * kl_term) / dims  # nats per sub-pixel
        grad_norm = self.optimizer_step(loss, self.model, self.ema)
        if grad_norm is None:
            return None
        size = self.config.model.image_size
        recon_mean, kl_mean = recon.detach().mean().item(), kl.detach().mean().item()
        return {
            "bpd": bits_per_dim(recon_mean + kl_mean, size),
            "recon_bpd": bits_per_dim(recon_mean, size),
            "kl_bpd": bits_per_dim(kl_mean, size),
            "grad_norm": grad_norm,
        }

    def _grid_kinds(self) -> tuple[str, ...]:
        return ("recon", "samples")

    def _grid_images(self) -> dict[str, torch.Tensor]:
        """Reconstructions of the first validation photos and decodes of fixed codes."""
        model = self.eval_model.eval()
        source = self.held_out
        return {
            "recon": reconstruction_grid(model, source[:32]),
            "samples": model.decode_image(self.fixed_z.to(self.device)),
        }
