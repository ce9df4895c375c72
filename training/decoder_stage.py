"""The decoder stage (``--stage decoder``): the decoder fine-tuned against a discriminator
(sharpen.py) on reconstructions and learned-prior draws, the encoder and prior frozen
(stages.py: what every stage after the VAE shares)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from birdvae.runtime import selection
from birdvae.runtime.format import sha256_of

from . import checkpoint, perceptual, rater, sharpen
from .averaging import exponential_average
from .checkpoint import ANCHOR, JUDGE, PRIOR_EMA, PROJECTED, SPECIES_NET, learned_prior
from .config import Stream
from .evaluate import reconstruction_grid
from .likelihood import to_unit
from .loop import Trainer, TrainingError
from .prior import CodePrior, GuideError, Sampler
from .runfolder import LAST
from .stages import (
    GUIDE_SHA,
    RATER_SHA,
    check_same_rater,
    frozen_vae,
    judge_weights,
    start_state,
)


class DecoderTrainer(Trainer):
    """Fine-tunes the decoder against a discriminator; the encoder (and so the codes and the
    learned prior) stays fixed. The init checkpoint's learned prior, when it has one, is carried
    into every checkpoint, and its samples are among the fakes the discriminator judges, so the
    decoder learns to draw birds for the codes bird-gen will give it, not only for photos."""

    score_key = None  # sharpening is judged by eye and by benchmarks: the latest is the best
    not_compiled_because = (
        "its adaptive weight differentiates the decoder twice in a step, which "
        "torch.compile's backward does not allow"
    )

    one_process_because = "under torchrun each process would train a discriminator of its own"

    def _build(self) -> None:
        config = self.config
        init = start_state(self)
        # Before anything is built or trained (the species net takes minutes).
        for flag, asked in (("--rater-weight", config.sharpen.rater_weight > 0),
                            ("--prior-guide", bool(config.sharpen.prior_guide))):  # fmt: skip
            if asked and not checkpoint.carries_prior(init):
                raise TrainingError(
                    f"{flag} works on the learned prior's draws: --init needs a checkpoint "
                    "with a learned prior (from --stage prior or a decoder stage)"
                )
        self.guide, self.guide_sha256 = self._guide(init)
        self.model = frozen_vae(init, self.device)
        for parameter in self.model.decoder.parameters():
            parameter.requires_grad_(True)
        self.ema = exponential_average(self.model, config.ema_decay)
        self._build_discriminators()
        betas = config.sharpen.adam_betas
        self.optimizer = torch.optim.Adam(
            self.model.decoder.parameters(), lr=config.lr, betas=betas
        )
        self.d_optimizer = torch.optim.Adam(
            self.discriminator_parameters, lr=config.sharpen.disc_lr, betas=betas
        )
        self.anchor = self._anchor(init) if config.sharpen.anchor_weight > 0 else None
        self._build_prior(init)
        self._augment_generator = torch.Generator().manual_seed(config.seed + Stream.AUGMENT)
        self.rater = self._build_rater()
        self.judging_vae = judge_weights(init, config.sharpen.rater_weight)

    def _batching(self) -> None:
        super()._batching()
        start, total = self.config.sharpen.gan_start, self.total_steps
        if total <= start and not self.resuming:
            warnings.warn(
                f"the adversarial term starts after {start} steps and this run has {total}, so "
                "it trains without it; give more --epochs or a smaller --batch-size",
                stacklevel=2,
            )

    def _anchor(self, init: dict[str, Any]) -> torch.nn.Module:
        """The init checkpoint's VAE, frozen: what prior draws' pictures are held to. A resume
        takes it from last.pt, which saves it (like ``start_state``, never from --init, which
        may have been trained on since)."""
        if not self.resuming:
            return frozen_vae(init, self.device)
        if ANCHOR not in init:
            raise checkpoint.CheckpointError(
                f"{self.run_dir / LAST} cannot be resumed: it holds no anchor (the decoder its "
                "prior draws are held to); start the stage again from its --init"
            )
        return frozen_vae({"config": init["config"], "model": init[ANCHOR]}, self.device)

    def _build_discriminators(self) -> None:
        """The discriminator, and the species net with its projected heads when a term uses
        them; ``self.discriminator_parameters`` holds every parameter its optimiser steps."""
        cfg = self.config.sharpen
        self.discriminator = sharpen.Discriminator(self.config.model.image_size, cfg.disc_width)
        self.discriminator.to(self.device, memory_format=torch.channels_last)
        uses_net = cfg.perceptual_weight > 0 or cfg.projected_weight > 0
        self.species_net = self._species_net() if uses_net else None
        self.projected = None
        self.discriminator_parameters = list(self.discriminator.parameters())
        if cfg.projected_weight > 0:
            self.projected = sharpen.ProjectedHeads(self.species_net.channels).to(
                self.device, memory_format=torch.channels_last
            )
            self.discriminator_parameters += list(self.projected.parameters())

    def _build_prior(self, init: dict[str, Any]) -> None:
        """The learned prior the init checkpoint carries, if any, frozen, with its sampler and
        the fixed draws the progress grids decode."""
        config = self.config
        self.carried_prior = learned_prior(init)
        self.fixed_prior_z, self.prior_sampler = None, None
        if self.carried_prior is None:
            cfg = config.sharpen
            if (cfg.prior_share > 0 or cfg.anchor_weight > 0) and not self.resuming:
                warnings.warn(
                    f"--init {config.init} holds no learned prior, so this decoder stage trains "
                    "on photos alone, without prior draws (--prior-share) or the anchor "
                    "(--anchor-weight); start it from a --stage prior run's best.pt, as the "
                    "recipe does", stacklevel=2)  # fmt: skip
            return
        self.carried_prior.to(self.device).eval()
        # The prior is frozen here, so its sampler (the solver's constants) is built once,
        # not at every step.
        self.prior_sampler = Sampler(self.carried_prior, self.guide, config.sharpen.guidance)
        generator = torch.Generator().manual_seed(config.seed + Stream.PRIOR_GRID)
        noise = torch.randn(config.grid_size, config.model.latent_dim, generator=generator)
        with torch.no_grad():
            self.fixed_prior_z = self.prior_sampler(noise.to(self.device))

    def _guide(self, init: dict[str, Any]) -> tuple[CodePrior | None, str | None]:
        """The --prior-guide checkpoint's prior, frozen, and the file's sha256, checked against
        the prior it would guide before anything trains; Nones without one (or at guidance 1).

        The guide is an input the run reads, as its photos are: a resume, and a later stage
        that keeps its --init run's settings, read the same file again, and each refuses a
        file other than the one that run drew with (``GUIDE_SHA`` in its checkpoint)."""
        cfg = self.config.sharpen
        if not cfg.prior_guide or cfg.guidance == 1:
            return None, None
        path = cfg.prior_guide
        whose = "this run" if self.resuming else "--init's run"
        kept = checkpoint.config_of(init).sharpen.prior_guide == path  # not given anew
        if kept and not Path(path).is_file():
            raise TrainingError(
                f"the guide {path}, which {whose} drew with, is not there: put it back"
                + ("" if self.resuming else ", or give --prior-guide (or --guidance 1: none)")
            )
        try:
            state = checkpoint.load(Path(path))
            # Building a prior draws initial weights: the run's own random stream is left as
            # it was, so a guided stage trains as an unguided one would but for its draws.
            with torch.random.fork_rng(devices=[]):
                guide, prior = learned_prior(state), learned_prior(init)
        except checkpoint.CheckpointError as exc:
            raise TrainingError(f"--prior-guide: {exc}") from None
        if guide is None:
            raise TrainingError(f"--prior-guide {path}: that checkpoint has no learned prior")
        digest = sha256_of(Path(path))
        if kept and init.get(GUIDE_SHA) not in (None, digest):
            raise TrainingError(
                f"--prior-guide {path} is not the guide {whose} drew with (its sha256 was "
                f"{init[GUIDE_SHA]}): put that file back"
            )
        try:
            checkpoint.check_guide_checkpoint(state, guide, init, prior, cfg.guidance)
        except GuideError as exc:
            raise TrainingError(f"--prior-guide {path}: {exc}") from None
        guide.to(self.device)
        for parameter in guide.parameters():
            parameter.requires_grad_(False)
        return guide, digest

    def _build_rater(self) -> rater.Rater | None:
        """The shipped rater, frozen, when ``--rater-weight`` asks for its term."""
        if self.config.sharpen.rater_weight <= 0:
            return None
        self._rater_generator = torch.Generator().manual_seed(self.config.seed + Stream.RATER_VIEWS)
        return rater.shipped_rater(self.device)

    def _species_net(self) -> perceptual.SpeciesNet:
        """The perceptual distance's network: trained now, or (on --resume) an empty one that
        the checkpoint's saved weights fill, so a resumed run compares in the same features."""
        if len(self.classes) < 2:
            raise TrainingError(
                "--perceptual-weight and --projected-weight learn their features by telling "
                "species apart: they need "
                "photos of two or more species, one subfolder each (or CUB's layout)"
            )
        if self.resuming:
            net = perceptual.SpeciesNet(len(self.classes)).to(self.device).eval()
            return net.requires_grad_(False)
        epochs = self.config.sharpen.perceptual_epochs
        self.log(f"training the perceptual distance's species net ({epochs} epochs)")
        return perceptual.train_species_net(
            self.train_images, self.train_labels, len(self.classes), epochs,
            self.config.seed + Stream.SPECIES_NET, self.log,
        )  # fmt: skip

    def _trained_module(self) -> torch.nn.Module:
        return self.model.decoder

    def _schedule_figures(self) -> dict[str, float]:
        return {"gan_on": float(self.step >= self.config.sharpen.gan_start)}

    def train_step(self, x: torch.Tensor) -> dict[str, float] | None:
        """One step of both networks from one discriminator pass over real and fake images.

        The discriminator judges the real photos and every fake once; its hinge loss updates
        it, and the same judgement (before that update, as in simultaneous GAN training) gives
        the decoder its adversarial and feature-matching terms.
        """
        cfg = self.config.sharpen
        x = self._augment(x)
        real = to_unit(x).contiguous(memory_format=torch.channels_last)
        z = self._codes(real)
        with self.autocast:
            params = self.trainable(z)
        fakes = self.model.likelihood.mean(params).float()
        recon, params = fakes[: len(x)], params[: len(x)]

        # Reconstructions are augmented as their photos are, so features pair up.
        seed = int(torch.randint(2**62, (1,), generator=self._augment_generator))
        real_logits, real_features, real_projected = self._discriminate(real, seed)
        recon_logits, recon_features, recon_projected = self._discriminate(recon, seed)
        fake_logits, fake_projected = recon_logits.flatten(), recon_projected
        if len(fakes) > len(x):
            drawn_logits, _, drawn_projected = self._discriminate(fakes[len(x) :], seed + 1)
            fake_logits = torch.cat([fake_logits, drawn_logits.flatten()])
            if fake_projected is not None:
                fake_projected = torch.cat([fake_projected, drawn_projected])
        d_loss = sharpen.hinge_d_loss(real_logits, fake_logits)
        if fake_projected is not None:
            d_loss = d_loss + sharpen.hinge_d_loss(real_projected, fake_projected)
        d_grads = torch.autograd.grad(d_loss, self.discriminator_parameters, retain_graph=True)

        reconstruction, stats = self._reconstruction_loss(
            x, real, recon, params, real_features, recon_features, fakes[len(x) :], z[len(x) :]
        )
        stats["d_loss"] = d_loss
        loss = reconstruction
        if self.step >= cfg.gan_start:
            adversarial, weight = self._adversarial(reconstruction, fake_logits, fake_projected)
            loss = reconstruction + weight * adversarial
            stats |= {"g_loss": adversarial, "gan_weight": weight}
        if not torch.isfinite(d_loss):
            return None

        def step_the_discriminator() -> None:
            for parameter, grad in zip(self.discriminator_parameters, d_grads):
                parameter.grad = grad  # its own loss's gradient, not the decoder's
            self.d_optimizer.step()

        if self.optimizer_step(loss, self.model, self.ema, step_the_discriminator) is None:
            return None  # the encoder is frozen: the step and its clip see the decoder alone
        return {name: float(value.detach()) for name, value in stats.items()}

    @torch.no_grad()
    def _codes(self, real: torch.Tensor) -> torch.Tensor:
        """The codes decoded this step: a posterior draw for each photo, then (with a learned
        prior) ``prior_share`` prior draws per photo, whose pictures have no photo to match."""
        mean, logvar = self.model.encoder(real)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        share = self.config.sharpen.prior_share if self.prior_sampler is not None else 0.0
        count = round(len(real) * share)
        if count:
            # Fresh draws every step: a fixed bank of draws, seen again and again, is what the
            # decoder learns to render, and new draws then decode worse.
            noise = torch.randn(count, mean.shape[1], device=self.device)
            z = torch.cat([z, self.prior_sampler(noise)])
        return z

    def _adversarial(
        self,
        reconstruction: torch.Tensor,
        fake_logits: torch.Tensor,
        fake_projected: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's adversarial term and its weight: ``gan_weight`` times the ratio that
        gives it the reconstruction term's gradient scale at the decoder's last layer."""
        cfg = self.config.sharpen
        adversarial = -fake_logits.mean()
        if fake_projected is not None:
            adversarial = adversarial - cfg.projected_weight * fake_projected.mean()
        last = self.model.decoder.head.weight
        weight = cfg.gan_weight * sharpen.adaptive_weight(reconstruction, adversarial, last)
        return adversarial, weight

    def _reconstruction_loss(
        self,
        x: torch.Tensor,
        real: torch.Tensor,
        recon: torch.Tensor,
        params: torch.Tensor,
        real_features: list[torch.Tensor],
        recon_features: list[torch.Tensor],
        drawn: torch.Tensor,
        drawn_z: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every term but the adversarial one, and each term for the log: how far each
        reconstruction is from its photo (L1, the likelihood, the frequency loss, feature
        matching, the optional perceptual distance) and how far each prior draw's picture
        strays from the anchor's at coarse scale."""
        cfg = self.config.sharpen
        l1 = (recon - real).abs().mean()
        nll = self.model.likelihood.nll(params.float(), x).mean() / x[0].numel()
        frequency = sharpen.focal_frequency_loss(recon, real)
        matching = sharpen.feature_matching(real_features, recon_features)
        loss = (
            cfg.l1_weight * l1 + cfg.nll_weight * nll + cfg.frequency_weight * frequency
            + cfg.feature_weight * matching
        )  # fmt: skip
        stats = {"l1": l1, "nll": nll, "frequency": frequency, "matching": matching}
        if cfg.perceptual_weight > 0:
            lpips = perceptual.distance(self.species_net, recon, real)
            loss = loss + cfg.perceptual_weight * lpips
            stats["perceptual"] = lpips
        if self.anchor is not None and len(drawn):
            with torch.no_grad():
                target = self.anchor.decode_image(drawn_z).float()
            anchor = sharpen.low_pass_l1(drawn, target, cfg.anchor_scale)
            loss = loss + cfg.anchor_weight * anchor
            stats["anchor"] = anchor
        if self.rater is not None and len(drawn):
            hinge = rater.rater_loss(self.rater, drawn, self._rater_generator, cfg)
            loss = loss + cfg.rater_weight * hinge
            stats["rater_hinge"] = hinge
        return loss, stats

    def _discriminate(
        self, images: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """The discriminator's logits and features for ``images`` under the augmentation that
        ``seed`` picks (the same seed, the same transform), and the projected heads' logits
        for the same augmented images when there are heads."""
        generator = torch.Generator().manual_seed(seed)
        augmented = sharpen.diff_augment(images, self.config.sharpen.augment, generator)
        with self.autocast:
            logits, features = self.discriminator(augmented)
            projected = None
            if self.projected is not None:
                projected = self.projected(self.species_net.feature_maps(augmented)).float()
        return logits.float(), [f.float() for f in features], projected

    def _postfix(self, stats: dict[str, float]) -> dict[str, str]:
        shown = {"l1": f"{stats['l1']:.4f}", "d": f"{stats['d_loss']:.3f}"}
        if "g_loss" in stats:
            shown["g"] = f"{stats['g_loss']:.3f}"
        return shown

    def _log_line(self, metrics: dict[str, Any]) -> str:
        line = (
            f"l1 {metrics['train_l1']:.4f}  match {metrics['train_matching']:.4f}  "
            f"d {metrics['train_d_loss']:.3f}"
        )
        if "train_g_loss" in metrics:
            line += f"  g {metrics['train_g_loss']:.3f} (x{metrics['train_gan_weight']:.2f})"
        if "train_rater_hinge" in metrics:
            line += f"  rater {metrics['train_rater_hinge']:.3f}"
        return line + f"  val psnr {metrics['val_psnr']:.2f} dB, {metrics['val_bpd']:.3f} bits/dim"

    def _grid_kinds(self) -> tuple[str, ...]:
        return ("recon", "samples") if self.fixed_prior_z is not None else ("recon",)

    def _grid_images(self) -> dict[str, torch.Tensor]:
        """Reconstructions of the first validation photos and, with a learned prior, decodes
        of its fixed draws."""
        model = self.eval_model.eval()
        source = self.held_out
        grids = {"recon": reconstruction_grid(model, source[:32])}
        if self.fixed_prior_z is not None:
            grids["samples"] = model.decode_image(self.fixed_prior_z)
        return grids

    def _extra_state(self) -> dict[str, Any]:
        state = {
            "discriminator": self.discriminator.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            # The augmentations' own stream, so a resumed stage draws what an unbroken one would.
            "augment_rng": self._augment_generator.get_state(),
        }
        if self.rater is not None:
            state["rater_rng"] = self._rater_generator.get_state()
            state[RATER_SHA] = selection.RATER_SHA256
        if self.judging_vae is not None:
            state[JUDGE] = self.judging_vae
        if self.carried_prior is not None:
            state[PRIOR_EMA] = self.carried_prior.state_dict()
        if self.guide_sha256 is not None:
            state[GUIDE_SHA] = self.guide_sha256
        if self.anchor is not None:
            state[ANCHOR] = self.anchor.state_dict()
        if self.species_net is not None:
            state[SPECIES_NET] = self.species_net.state_dict()
        if self.projected is not None:
            state[PROJECTED] = self.projected.state_dict()
        return state

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if self.rater is not None:
            check_same_rater(state)
        self.discriminator.load_state_dict(state["discriminator"])
        checkpoint.load_optimizer_state(self.d_optimizer, state["d_optimizer"])
        if "augment_rng" in state:  # checkpoints of older versions restart it from the seed
            self._augment_generator.set_state(state["augment_rng"])
        if self.rater is not None and "rater_rng" in state:
            self._rater_generator.set_state(state["rater_rng"])
        if self.species_net is not None:
            self.species_net.load_state_dict(state[SPECIES_NET])
        if self.projected is not None:
            self.projected.load_state_dict(state[PROJECTED])
