"""The stages after the VAE: a learned prior on the frozen encoder's codes, then the decoder
sharpened against a discriminator, each resumable, each leaving the encoder as it was."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from birdvae.runtime.format import sha256_of
from birdvae.training import checkpoint, codes, runfolder, sharpen
from birdvae.training.checkpoint import learned_prior
from birdvae.training.cli import train_command
from birdvae.training.config import PriorConfig, TrainConfig, stage_config
from birdvae.training.decoder_stage import DecoderTrainer
from birdvae.training.loop import TrainingError
from birdvae.training.prior import CodePrior, Sampler
from birdvae.training.prior_stage import PriorTrainer
from birdvae.training.runfolder import LAST, METRICS
from birdvae.training.vae_stage import VAETrainer

from .conftest import quiet, tiny_config, tiny_stage

pytestmark = pytest.mark.slow


def test_the_prior_learns_the_codes_and_leaves_the_vae_alone(vae_checkpoint, tmp_path):
    torch.manual_seed(0)
    config = tiny_stage(vae_checkpoint, "prior", epochs=6, lr=3e-3)
    trainer = PriorTrainer(config, tmp_path / "prior", log=quiet)
    assert len(trainer.train_set) == 2 * len(trainer.train_images)  # two views of each photo
    trainer.fit()
    losses = [r["val_prior_loss"] for r in runfolder.read_metrics(tmp_path / "prior" / METRICS)]
    state = checkpoint.load(tmp_path / "prior" / "best.pt")
    vae = checkpoint.load(vae_checkpoint)
    for name, weight in vae["ema"].items():
        assert torch.equal(state["model"][name], weight), name
    assert len(losses) == 6 and min(losses[3:]) < losses[0]
    prior = learned_prior(state)
    z = prior.sample(torch.randn(5, prior.latent_dim))
    assert z.shape == (5, 16) and torch.isfinite(z).all()


def test_a_prior_run_resumes_to_the_same_weights(vae_checkpoint, tmp_path):
    whole = PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=2), tmp_path / "a", log=quiet)
    whole.fit()
    half = PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=2), tmp_path / "b", log=quiet)
    stop_at = half.steps_per_epoch + 2  # mid-way through the second epoch
    half.fit(on_step=lambda t: t.request_stop() if t.step == stop_at else None)
    assert checkpoint.load(tmp_path / "b" / LAST)["step"] == stop_at
    resumed = PriorTrainer(
        tiny_stage(vae_checkpoint, "prior", epochs=2), tmp_path / "b",
        checkpoint.load(tmp_path / "b" / LAST), log=quiet,
    )  # fmt: skip
    resumed.fit()
    a = checkpoint.load(tmp_path / "a" / LAST)["prior"]
    b = checkpoint.load(tmp_path / "b" / LAST)["prior"]
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_the_sampler_is_the_solver_and_ignores_nothing_but_its_noise():
    torch.manual_seed(0)
    prior = CodePrior(8, PriorConfig(width=16, blocks=2, steps=5)).eval()
    for parameter in prior.parameters():
        parameter.data.normal_(0, 0.3)
    noise = torch.randn(4, 8)
    with torch.no_grad():
        z = Sampler(prior)(noise)
        again = Sampler(prior)(noise)
        other = Sampler(prior)(noise * 0.5)
    assert torch.equal(z, again) and not torch.allclose(z, other)
    sigmas = prior.sigmas()
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-1] == 0 and len(sigmas) == 6
    assert all(a > b for a, b in zip(sigmas, sigmas[1:]))


@pytest.mark.parametrize("steps", [1, 2, 3, 10])
def test_the_sampler_is_dpm_solver_2m_as_written_out(steps):
    """The table-driven Sampler against DPM-Solver++(2M) written out step by step (Lu et al.
    2022, the multistep update in data prediction): the tables must not change a step."""
    torch.manual_seed(steps)
    prior = CodePrior(6, PriorConfig(width=16, blocks=2, steps=steps)).eval()
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    noise = torch.randn(5, 6)
    sigmas = prior.sigmas()
    with torch.no_grad():
        x, previous = noise * sigmas[0], None
        for i in range(len(sigmas) - 1):
            denoised = prior.denoise(x, torch.full((5,), sigmas[i]))
            if sigmas[i + 1] == 0:
                x = denoised
                break
            h = math.log(sigmas[i] / sigmas[i + 1])
            if previous is None:
                estimate = denoised
            else:
                r = math.log(sigmas[i - 1] / sigmas[i]) / h
                estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
            x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * estimate
            previous = denoised
        expected = prior.mean + prior.std * x
        got = Sampler(prior)(noise)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_perfect_denoiser_makes_the_sampler_return_the_data():
    """With D(x; sigma) = the data point for every input, DPM-Solver++ lands on it exactly."""
    prior = CodePrior(3, PriorConfig(width=8, blocks=1, steps=6)).eval()
    target = torch.tensor([[0.5, -1.0, 2.0]])

    class Oracle(torch.nn.Module):
        def films(self, c_noise):
            return []

        def trunk(self, x, films):  # F such that c_skip x + c_out F = target
            return self.solve(x)

    sampler = Sampler(prior)
    calls = iter(range(100))

    def solve(x):
        i = next(calls)
        c_skip, c_out, c_in = sampler.weights[i, :3]
        return (target - c_skip * x / c_in) / c_out

    # trunk sees c_in * x; undo it to recover x
    oracle = Oracle()
    oracle.solve = solve
    prior.net = oracle
    z = sampler(torch.randn(1, 3))
    assert torch.allclose(z, target, atol=1e-5)


def all_views(images: torch.Tensor, count: int, shift: int, seed: int) -> torch.Tensor:
    return torch.cat(list(codes.each_view(images, count, shift, seed)))


def test_views_are_the_photo_its_mirror_then_reproducible_shifts():
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    views = all_views(images, 4, shift=2, seed=0)
    assert views.shape == (12, 3, 8, 8)
    assert torch.equal(views[:3], images) and torch.equal(views[3:6], images.flip(3))
    assert torch.equal(all_views(images, 4, shift=2, seed=0), views)
    assert not torch.equal(all_views(images, 4, shift=2, seed=1)[6:], views[6:])


def test_the_decoder_stage_moves_only_the_decoder_and_carries_the_prior(vae_checkpoint, tmp_path):
    torch.manual_seed(0)
    prior_config = tiny_stage(vae_checkpoint, "prior", epochs=1)
    prior_run = PriorTrainer(prior_config, tmp_path / "p", log=quiet)
    prior_run.fit()
    config = tiny_stage(tmp_path / "p" / "best.pt", "decoder", epochs=2)
    config.sharpen.gan_start = 3
    trainer = DecoderTrainer(config, tmp_path / "d", log=quiet)
    assert trainer.fixed_prior_z is not None
    drawn: list[torch.Tensor] = []
    sample = trainer.prior_sampler
    trainer.prior_sampler = lambda noise: drawn.append(sample(noise)) or drawn[-1]
    metrics = trainer.fit()
    # Each step decodes new prior draws (a fixed bank would be learned by heart).
    assert len(drawn) == trainer.step and len(drawn) > 1
    assert not torch.equal(drawn[0], drawn[1])
    assert "train_g_loss" in metrics and metrics["train_gan_weight"] > 0
    state = checkpoint.load(tmp_path / "d" / "best.pt")
    start = checkpoint.load(vae_checkpoint)["ema"]
    encoder = [name for name in start if name.startswith("encoder.")]
    decoder = [name for name in start if name.startswith("decoder.")]
    assert all(torch.equal(state["ema"][name], start[name]) for name in encoder)
    assert any(not torch.equal(state["ema"][name], start[name]) for name in decoder)
    carried = checkpoint.load(tmp_path / "p" / "best.pt")["prior_ema"]
    assert all(torch.equal(state["prior_ema"][n], carried[n]) for n in carried)
    assert (tmp_path / "d" / "grids" / "samples_0002.png").is_file()
    assert metrics["train_anchor"] > 0  # on by default


def test_the_decoder_stage_validates_a_vae_of_a_continuous_likelihood(vae_checkpoint, tmp_path):
    """Bits/dim of a Bernoulli or Gaussian decoder need a fitted scale; the stage's validation
    crashed for want of one after a whole epoch of training."""
    from .conftest import write_images

    write_images(tmp_path / "birds" / "a", 16, seed=3)
    config = tiny_config(tmp_path / "birds", epochs=1)
    config.model.likelihood = "bernoulli"
    VAETrainer(config, tmp_path / "vae", log=quiet).fit()
    stage = tiny_stage(tmp_path / "vae" / "best.pt", "decoder", epochs=1)
    metrics = DecoderTrainer(stage, tmp_path / "d", log=quiet).fit()
    assert math.isfinite(metrics["val_bpd"]) and math.isfinite(metrics["val_psnr"])


def test_a_decoder_stage_says_when_it_cannot_do_what_the_recipe_asks(vae_checkpoint, tmp_path):
    """Started from a VAE checkpoint it has no prior draws and no anchor; run for fewer steps
    than the adversarial term waits, it has no adversarial term: each said nothing."""
    import warnings

    config = tiny_stage(vae_checkpoint, "decoder", epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DecoderTrainer(config, tmp_path / "d", log=quiet)
    said = [str(w.message) for w in caught]
    assert any("holds no learned prior, so this decoder stage trains on photos alone" in m
               for m in said), said  # fmt: skip
    assert any("the adversarial term starts after 200 steps and this run has" in m
               for m in said), said  # fmt: skip
    config.sharpen.prior_share, config.sharpen.anchor_weight = 0.0, 0.0
    config.sharpen.gan_start = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DecoderTrainer(config, tmp_path / "asked", log=quiet)
    assert [str(w.message) for w in caught] == []  # asked for neither: nothing to say


def test_the_anchor_holds_prior_codes_to_the_init_decoder(vae_checkpoint, tmp_path):
    torch.manual_seed(0)
    PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=1), tmp_path / "p", log=quiet).fit()
    config = tiny_stage(tmp_path / "p" / "best.pt", "decoder", epochs=1)
    config.sharpen.anchor_weight = 0.0
    assert DecoderTrainer(config, tmp_path / "off", log=quiet).anchor is None
    config.sharpen.anchor_weight = 1.0
    trainer = DecoderTrainer(config, tmp_path / "d", log=quiet)
    assert trainer.anchor is not None
    assert not any(p.requires_grad for p in trainer.anchor.parameters())
    start = [p.clone() for p in trainer.anchor.decoder.parameters()]
    metrics = trainer.fit()
    assert metrics["train_anchor"] > 0
    # The anchor is the init decoder and stays it while the trained decoder moves.
    assert all(torch.equal(a, b) for a, b in zip(start, trainer.anchor.decoder.parameters()))
    saved = checkpoint.config_of(checkpoint.load(tmp_path / "d" / "last.pt"))
    assert saved.sharpen.anchor_weight == 1.0


def test_the_rater_term_needs_a_learned_prior_and_reaches_the_loss(vae_checkpoint, tmp_path):
    without = tiny_stage(vae_checkpoint, "decoder", epochs=1)
    without.sharpen.rater_weight = 0.5
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingError, match="learned prior"):
            DecoderTrainer(without, tmp_path / "x", log=quiet)
    assert not any("holds no learned prior" in str(w.message) for w in caught)  # only the error
    PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=1), tmp_path / "p", log=quiet).fit()
    config = tiny_stage(tmp_path / "p" / "best.pt", "decoder", epochs=1)
    config.sharpen.rater_weight = 0.5
    trainer = DecoderTrainer(config, tmp_path / "d", log=quiet)
    assert trainer.rater is not None
    assert 0 < trainer.fit()["train_rater_hinge"] <= 1.3  # the hinge below the target
    saved = checkpoint.config_of(checkpoint.load(tmp_path / "d" / "best.pt"))
    assert saved.sharpen.rater_weight == 0.5


def test_the_decoder_stage_draws_its_prior_fakes_as_the_guide_steers_them(vae_checkpoint, tmp_path):
    """With --prior-guide the fakes' prior draws are the autoguided sampler's, bird-gen's codes
    once the export is guided alike; a resume reads the guide again and refuses another."""
    from birdvae.training.stages import GUIDE_SHA

    PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=1), tmp_path / "p", log=quiet).fit()
    guide_config = tiny_stage(vae_checkpoint, "prior", epochs=1)
    guide_config.prior = PriorConfig(width=16, blocks=1, steps=4, views=2)
    PriorTrainer(guide_config, tmp_path / "g", log=quiet).fit()

    def config(guide: Path | None, guidance: float = 3.0) -> TrainConfig:
        decoder = tiny_stage(tmp_path / "p" / "best.pt", "decoder", epochs=1)
        decoder.sharpen.prior_guide = str(guide or "")
        decoder.sharpen.guidance = guidance
        return decoder

    plain = DecoderTrainer(config(None), tmp_path / "plain", log=quiet)
    guided = DecoderTrainer(config(tmp_path / "g" / "best.pt"), tmp_path / "guided", log=quiet)
    prior = learned_prior(checkpoint.load(tmp_path / "p" / "best.pt"))
    guide = learned_prior(checkpoint.load(tmp_path / "g" / "best.pt"))
    noise = torch.randn(5, prior.latent_dim)
    with torch.no_grad():
        assert torch.allclose(guided.prior_sampler(noise), Sampler(prior, guide, 3.0)(noise))
        assert torch.allclose(plain.prior_sampler(noise), Sampler(prior)(noise))
    assert not torch.allclose(guided.fixed_prior_z, plain.fixed_prior_z, atol=1e-3)

    guided.fit(on_step=lambda t: t.request_stop() if t.step == 1 else None)
    state = checkpoint.load(tmp_path / "guided" / LAST)
    assert state[GUIDE_SHA] == sha256_of(tmp_path / "g" / "best.pt")
    resumed = DecoderTrainer(
        config(tmp_path / "g" / "best.pt"), tmp_path / "guided", dict(state), log=quiet
    )
    assert resumed.prior_sampler.guide is not None
    state[GUIDE_SHA] = "0" * 64  # drew with another guide than the file there now
    with pytest.raises(TrainingError, match="not the guide this run drew with"):
        DecoderTrainer(config(tmp_path / "g" / "best.pt"), tmp_path / "guided", state, log=quiet)

    # A later stage from the guided run keeps its guide, and needs that very file.
    later = tiny_stage(tmp_path / "guided" / LAST, "decoder", epochs=1)
    assert later.sharpen.prior_guide == str(tmp_path / "g" / "best.pt")
    assert DecoderTrainer(later, tmp_path / "later", log=quiet).prior_sampler.guide is not None
    (tmp_path / "g").rename(tmp_path / "g.moved")
    with pytest.raises(TrainingError, match="which --init's run drew with, is not there"):
        DecoderTrainer(later, tmp_path / "later2", log=quiet)
    later.sharpen.guidance = 1.0  # no guide: nothing to read
    assert DecoderTrainer(later, tmp_path / "later3", log=quiet).prior_sampler.guide is None


def test_a_guide_that_cannot_guide_is_refused_before_the_stage_starts(
    vae_checkpoint, tmp_path, monkeypatch
):
    """Before anything trains: the species net of --perceptual-weight takes minutes."""
    from birdvae.training import perceptual

    monkeypatch.setattr(perceptual, "train_species_net", lambda *a, **k: pytest.fail("trained"))
    PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=1), tmp_path / "p", log=quiet).fit()
    other = tiny_stage(vae_checkpoint, "prior", epochs=1, seed=5)  # other views: other codes
    PriorTrainer(other, tmp_path / "other", log=quiet).fit()
    for guide, says in ((vae_checkpoint, "has no learned prior"),
                        (tmp_path / "other" / "best.pt", "standardised on other codes"),
                        (tmp_path / "none.pt", "does not exist")):  # fmt: skip
        config = tiny_stage(tmp_path / "p" / "best.pt", "decoder", epochs=1)
        config.sharpen.prior_guide = str(guide)
        config.sharpen.perceptual_weight = 0.1
        with pytest.raises(TrainingError, match=f"--prior-guide.*{says}"):
            DecoderTrainer(config, tmp_path / "run", log=quiet)
    itself = tiny_stage(tmp_path / "p" / "best.pt", "decoder", epochs=1)
    itself.sharpen.prior_guide = str(tmp_path / "p" / "best.pt")
    with pytest.raises(TrainingError, match="a prior guiding itself is the prior alone"):
        DecoderTrainer(itself, tmp_path / "run", log=quiet)
    without_prior = tiny_stage(vae_checkpoint, "decoder", epochs=1)
    without_prior.sharpen.prior_guide = str(tmp_path / "p" / "best.pt")
    with pytest.raises(TrainingError, match="--prior-guide works on the learned prior's draws"):
        DecoderTrainer(without_prior, tmp_path / "run", log=quiet)


def test_the_vae_before_the_rater_term_is_carried_through_later_stages(vae_checkpoint, tmp_path):
    """vae-export's selector judges draws by the VAE as it was before any stage learned the
    rater's term: that stage stores its init's weights, and every later stage carries them."""
    from birdvae.training.checkpoint import JUDGE

    PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=1), tmp_path / "p", log=quiet).fit()
    plain = tiny_stage(tmp_path / "p" / "best.pt", "decoder", epochs=1)
    DecoderTrainer(plain, tmp_path / "plain", log=quiet).fit()
    assert JUDGE not in checkpoint.load(tmp_path / "plain" / "best.pt")
    rated = tiny_stage(tmp_path / "p" / "best.pt", "decoder", epochs=1)
    rated.sharpen.rater_weight = 0.5
    DecoderTrainer(rated, tmp_path / "rated", log=quiet).fit()
    before = checkpoint.vae_weights(checkpoint.load(tmp_path / "p" / "best.pt"))
    judge = checkpoint.load(tmp_path / "rated" / "best.pt")[JUDGE]
    assert all(torch.equal(judge[name], before[name]) for name in before)
    after = tiny_stage(tmp_path / "rated" / "best.pt", "decoder", epochs=1)
    after.sharpen.rater_weight = 0.0
    DecoderTrainer(after, tmp_path / "after", log=quiet).fit()
    PriorTrainer(tiny_stage(tmp_path / "after" / "best.pt", "prior", epochs=1), tmp_path / "p2",
                 log=quiet).fit()  # fmt: skip
    for run in ("after", "p2"):
        carried = checkpoint.load(tmp_path / run / "best.pt")[JUDGE]
        assert all(torch.equal(carried[name], before[name]) for name in before), run


def test_the_low_pass_l1_sees_layout_and_colour_not_detail():
    flat = torch.full((1, 3, 8, 8), 0.5)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    detail = flat + 0.2 * (checker.float() * 2 - 1)  # averages to flat over every 2x2 block
    assert float(sharpen.low_pass_l1(detail, flat)) == pytest.approx(0.0, abs=1e-7)
    assert float(sharpen.low_pass_l1(flat + 0.1, flat)) == pytest.approx(0.1, rel=1e-5)
    # A shape inside each 4x4 block (an outline) is detail at factor 4, layout at factor 2.
    outline = flat.clone()
    outline[:, :, (torch.arange(8) % 4) < 2, :] += 0.3  # light above, dark below, per block
    outline[:, :, (torch.arange(8) % 4) >= 2, :] -= 0.3
    assert float(sharpen.low_pass_l1(outline, flat, 4)) == pytest.approx(0.0, abs=1e-6)
    assert float(sharpen.low_pass_l1(outline, flat, 2)) > 0.1


def test_the_decoder_stage_flags_reach_the_stage_and_its_saved_config(
    vae_checkpoint, tmp_path, monkeypatch
):
    torch.manual_seed(0)
    PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=1), tmp_path / "p", log=quiet).fit()
    guide = tiny_stage(vae_checkpoint, "prior", epochs=1)
    guide.prior = PriorConfig(width=16, blocks=1, steps=4, views=2)
    PriorTrainer(guide, tmp_path / "g", log=quiet).fit()
    widths = []
    real_discriminator = sharpen.Discriminator
    monkeypatch.setattr(
        sharpen,
        "Discriminator",
        lambda size, width: widths.append(width) or real_discriminator(size, width),
    )
    factors = []
    real_low_pass = sharpen.low_pass_l1
    monkeypatch.setattr(
        sharpen,
        "low_pass_l1",
        lambda a, b, factor=2: factors.append(factor) or real_low_pass(a, b, factor),
    )
    args = ["--stage", "decoder", "--init", str(tmp_path / "p" / "best.pt"), "--epochs", "1",
            "--anchor-scale", "4", "--disc-width", "16", "-o", str(tmp_path / "d"),
            "--prior-guide", str(tmp_path / "g" / "best.pt"), "--guidance", "3"]  # fmt: skip
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    assert factors and set(factors) == {4}
    assert widths == [16]
    saved = checkpoint.config_of(checkpoint.load(tmp_path / "d" / "last.pt"))
    assert saved.sharpen.anchor_scale == 4 and saved.sharpen.disc_width == 16
    assert saved.sharpen.prior_guide == str(tmp_path / "g" / "best.pt")
    assert saved.sharpen.guidance == 3.0


def test_diff_augment_is_the_same_transform_for_the_same_seed():
    x = torch.rand(4, 3, 16, 16)
    kinds = "color,translation,cutout"
    a = sharpen.diff_augment(x, kinds, torch.Generator().manual_seed(7))
    b = sharpen.diff_augment(x, kinds, torch.Generator().manual_seed(7))
    c = sharpen.diff_augment(x, kinds, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="unknown augmentation"):
        sharpen.diff_augment(x, "rotate")


def test_the_adaptive_weight_balances_the_gradients_at_the_last_layer():
    weight = torch.nn.Parameter(torch.ones(3))
    rec = (weight * 2.0).sum()  # gradient norm 2 * sqrt(3)
    adv = (weight * 0.5).sum()  # gradient norm 0.5 * sqrt(3)
    assert float(sharpen.adaptive_weight(rec, adv, weight)) == pytest.approx(4.0, rel=1e-3)


def test_the_focal_frequency_loss_is_zero_only_for_the_same_image():
    x = torch.rand(2, 3, 8, 8)
    assert float(sharpen.focal_frequency_loss(x, x)) == 0.0
    assert float(sharpen.focal_frequency_loss(x.flip(3), x)) > 0.0


def test_a_later_stage_whose_init_data_moved_says_so(vae_checkpoint, tmp_path):
    state = checkpoint.load(vae_checkpoint)
    state["config"]["data"] = [str(tmp_path / "photos-since-moved")]
    moved = tmp_path / "moved.pt"
    checkpoint.save_atomic(state, moved)
    args = ["--stage", "prior", "--init", str(moved), "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 2, result.output
    assert (
        f"the data folder {tmp_path / 'photos-since-moved'}, which --init {moved}'s run "
        "trained on, is not here; give the photos with --data"
    ) in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stage", "prior"], "--init"),
        (["--init", "{ckpt}"], "give --stage prior or --stage decoder"),
        (["--stage", "prior", "--init", "{ckpt}", "--latent-dim", "32"], "keeps the model"),
        (["--stage", "decoder", "--init", "{ckpt}", "--prior-width", "8"], "only for --stage"),
        (["--stage", "prior", "--init", "{ckpt}", "--anchor-weight", "1"], "only for --stage"),
        (["--data", "{ckpt}", "--anchor-weight", "1"], "only for --stage decoder"),
        (["--stage", "prior", "--init", "{ckpt}", "--anchor-scale", "4"], "only for --stage"),
        (["--stage", "decoder", "--init", "{ckpt}", "--anchor-scale", "3"], "'3' is not one of"),
        (["--stage", "prior", "--init", "{ckpt}", "--disc-width", "32"], "only for --stage"),
        (["--stage", "decoder", "--init", "{ckpt}", "--disc-width", "4"], "not in the range"),
        (["--stage", "decoder", "--init", "{ckpt}", "--compile"], "drop --compile"),
        (["--stage", "decoder", "--init", "{ckpt}", "--guidance", "3"], "give --prior-guide"),
        (["--stage", "prior", "--init", "{ckpt}", "--guidance", "3"], "only for --stage"),
        (["--stage", "prior", "--init", "{missing}"], "does not exist"),
        (["--stage", "prior", "--init", "{ckpt}", "--prior-width", "60000"], "parameters"),
    ],
)
def test_stage_mistakes_are_one_line(vae_checkpoint, tmp_path, args, message):
    filled = [a.format(ckpt=vae_checkpoint, missing=tmp_path / "no.pt") for a in args]
    result = CliRunner().invoke(train_command, [*filled, "-o", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_decoder_stage_refuses_compile_from_python_too_yet_a_saved_one_still_reads(
    vae_checkpoint, tmp_path
):
    """The rule is the stage's, so a Trainer built in Python hears it before any work; a
    checkpoint whose saved config asks to compile a decoder stage is still read (exported)."""
    config = tiny_stage(vae_checkpoint, "decoder", compile=True)
    with pytest.raises(TrainingError, match=r"the decoder stage is not compiled.*drop --compile"):
        DecoderTrainer(config, tmp_path / "run", log=quiet)
    assert not (tmp_path / "run").exists()
    state = checkpoint.load(vae_checkpoint)
    state["config"] = config.to_dict()
    assert checkpoint.config_of(state).compile is True


def test_the_decoder_stage_refuses_several_processes(vae_checkpoint, tmp_path):
    """Its discriminator is not shared between processes, so torchrun would train one per
    process against the decoder's averaged gradients: refused, in one line, before any work."""
    prior = tmp_path / "prior"
    PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=1), prior, log=quiet).fit()
    args = ["--stage", "decoder", "--init", str(prior / "best.pt"), "-o", str(tmp_path / "d")]
    launch = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
              "MASTER_PORT": "29500"}  # fmt: skip
    result = CliRunner().invoke(train_command, args, env=launch)
    assert result.exit_code == 2, result.output
    assert "run it without torchrun" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d" / LAST).exists()
    result = CliRunner().invoke(train_command, args, env={"WORLD_SIZE": "two"})
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "a torchrun variable is not a whole number" in result.output


def test_a_decoder_stage_from_a_compiled_vae_is_not_compiled_and_a_prior_stage_is():
    """torch.compile's backward refuses the decoder stage's second differentiation (its adaptive
    weight), so that stage leaves out the VAE run's --compile; the prior stage keeps it."""
    init = tiny_config(Path("birds"), compile=True)
    assert stage_config(init, "decoder", "vae/best.pt").compile is False
    assert stage_config(init, "prior", "vae/best.pt").compile is True


@pytest.mark.parametrize("stage", ["prior", "decoder"])
def test_an_init_checkpoint_whose_weights_do_not_fit_is_one_line(vae_checkpoint, tmp_path, stage):
    state = checkpoint.load(vae_checkpoint)
    for weights in ("model", "ema"):
        if state.get(weights):
            state[weights] = {k: v for k, v in state[weights].items() if "decoder" not in k}
    damaged = tmp_path / "damaged.pt"
    checkpoint.save_atomic(state, damaged)
    args = ["--stage", stage, "--init", str(damaged), "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 2, result.output
    assert "do not fit" in result.output and "Traceback" not in result.output


def test_a_prior_stage_resumes_quietly_and_rewrites_only_a_grid_a_kill_cut_off(
    vae_checkpoint, tmp_path
):
    run = tmp_path / "prior"
    args = ["--stage", "prior", "--init", str(vae_checkpoint), "-o", str(run), "--epochs", "1",
            "--prior-width", "32", "--prior-blocks", "2", "--batch-size", "8"]  # fmt: skip
    assert CliRunner().invoke(train_command, args).exit_code == 0
    grid = run / runfolder.GRIDS / "samples_0001.png"
    assert sorted(p.name for p in grid.parent.iterdir()) == [grid.name]
    resumed = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "2"])
    assert resumed.exit_code == 0 and "recovered" not in resumed.output, resumed.output
    (run / runfolder.GRIDS / "samples_0002.png").unlink()  # as a kill before the grid would
    again = CliRunner().invoke(train_command, ["--resume", str(run), "--epochs", "3"])
    assert "recovered from an interrupted epoch end: wrote grids of epoch 2" in again.output
    assert (run / runfolder.GRIDS / "samples_0002.png").is_file()


@pytest.mark.parametrize("rater_weight", [0.0, 0.5])
def test_a_decoder_stage_resumes_to_the_same_weights(vae_checkpoint, tmp_path, rater_weight):
    """The augmentations (and the rater's views) draw from their own generators; they are
    saved, so a resumed stage takes the same crops, shifts and colours as an unbroken one. The
    frozen VAE, the anchor and the carried prior come from last.pt: the --init checkpoint may
    be gone by then."""
    PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=1), tmp_path / "p", log=quiet).fit()

    def config() -> TrainConfig:
        decoder = tiny_stage(tmp_path / "p" / "best.pt", "decoder", epochs=2)
        decoder.sharpen.gan_start = 1
        decoder.sharpen.rater_weight = rater_weight
        return decoder

    DecoderTrainer(config(), tmp_path / "a", log=quiet).fit()
    half = DecoderTrainer(config(), tmp_path / "b", log=quiet)
    stop_at = half.steps_per_epoch + 1
    half.fit(on_step=lambda t: t.request_stop() if t.step == stop_at else None)
    state = checkpoint.load(tmp_path / "b" / LAST)
    assert state["step"] == stop_at
    without_anchor = {key: value for key, value in state.items() if key != "anchor"}
    with pytest.raises(checkpoint.CheckpointError, match="cannot be resumed: it holds no anchor"):
        DecoderTrainer(config(), tmp_path / "b", without_anchor, log=quiet)
    resumed = config()
    (tmp_path / "p").rename(tmp_path / "p.moved")  # a resume needs nothing but its run folder
    DecoderTrainer(resumed, tmp_path / "b", state, log=quiet).fit()
    a, b = (checkpoint.load(tmp_path / run / LAST) for run in ("a", "b"))
    for key in ("discriminator", "model"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), key


@pytest.mark.parametrize("stage", ["decoder", "prior"])
def test_a_stage_resumes_only_under_the_rater_it_followed(vae_checkpoint, tmp_path, stage):
    """The rater is part of a decoder stage's loss (--rater-weight) and picks a prior stage's
    photos (--prior-keep): resumed under another installed rater, a run would change its
    objective mid-way without a word. A checkpoint without the record predates the second
    rater, so it followed the first."""
    from birdvae.runtime import selection
    from birdvae.training.stages import RATER_SHA

    PriorTrainer(tiny_stage(vae_checkpoint, "prior", epochs=1), tmp_path / "p", log=quiet).fit()
    config = tiny_stage(tmp_path / "p" / "best.pt", stage, epochs=2)
    trainer_class = {"decoder": DecoderTrainer, "prior": PriorTrainer}[stage]
    if stage == "decoder":
        config.sharpen.rater_weight = 0.5
    else:
        config.prior.keep = 0.5
    half = trainer_class(config, tmp_path / "run", log=quiet)
    half.fit(on_step=lambda t: t.request_stop() if t.step == 1 else None)
    state = checkpoint.load(tmp_path / "run" / LAST)
    assert state[RATER_SHA] == selection.RATER_SHA256
    trainer_class(config, tmp_path / "run", dict(state), log=quiet)  # its own rater: resumes
    for followed in ("0" * 64, None):  # another rater; a checkpoint from before the record
        if followed is None:
            del state[RATER_SHA]
        else:
            state[RATER_SHA] = followed
        with pytest.raises(checkpoint.CheckpointError, match=r"cannot be resumed: .*followed"):
            trainer_class(config, tmp_path / "run", state, log=quiet)


def test_a_prior_run_resumes_without_its_init_checkpoint(vae_checkpoint, tmp_path):
    """The codes a resumed prior trains on come from the encoder its run started with, kept in
    last.pt, not from whatever --init holds (or no longer holds) by then."""
    import shutil

    init = tmp_path / "vae.pt"
    shutil.copyfile(vae_checkpoint, init)
    half = PriorTrainer(tiny_stage(init, "prior", epochs=2), tmp_path / "b", log=quiet)
    half.fit(on_step=lambda t: t.request_stop() if t.step == 2 else None)
    state = checkpoint.load(tmp_path / "b" / LAST)
    config = tiny_stage(init, "prior", epochs=2)
    init.unlink()  # the run's config still names it
    PriorTrainer(config, tmp_path / "b", state, log=quiet).fit()
    assert checkpoint.load(tmp_path / "b" / LAST)["epoch"] == 2
