from __future__ import annotations

import math
import re

import pytest
import torch

from birdvae.training.config import RANK_STRIDE, ModelConfig, Stream, TrainConfig, preset
from birdvae.training.likelihood import (
    Bernoulli,
    CoupledLogistic,
    DiscretizedLogistic,
    bits_per_dim,
)
from birdvae.training.model import VAE, count_parameters, kl_per_dim


def test_discretized_logistic_sums_to_one_over_256_values():
    likelihood = DiscretizedLogistic()
    values = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1).expand(256, 3, 1, 1)
    for loc, log_scale in [(0.5, -3.0), (0.02, -6.5), (0.97, -1.0), (0.3, 1.0), (1.4, -4.0)]:
        params = torch.tensor([loc] * 3 + [log_scale] * 3).view(1, 6, 1, 1).expand(256, 6, 1, 1)
        log_p = likelihood.log_prob(params, values)
        total = torch.logsumexp(log_p, dim=0).exp()
        assert torch.allclose(total, torch.ones_like(total), atol=2e-3), (loc, log_scale, total)


def test_discretized_logistic_prefers_the_right_value():
    likelihood = DiscretizedLogistic()
    params = torch.tensor([100 / 255] * 3 + [-5.0] * 3).view(1, 6, 1, 1)
    near = likelihood.nll(params, torch.full((1, 3, 1, 1), 100, dtype=torch.uint8))
    far = likelihood.nll(params, torch.full((1, 3, 1, 1), 140, dtype=torch.uint8))
    assert near < far


def test_discretized_logistic_keeps_float32_precision_in_both_tails():
    """A pixel far above the loc has a bin mass that is the difference of two sigmoids near 1;
    taken that way in float32 it loses about three digits. Both tails must match float64."""
    from birdvae.training.likelihood import logistic_bin_log_prob

    values = torch.arange(1, 255, dtype=torch.uint8).view(-1, 1)
    for loc, log_scale in [(0.5, -3.0), (0.2, -2.5), (0.8, -2.5)]:
        loc_t = torch.full((254, 1), loc)
        got = logistic_bin_log_prob(loc_t, torch.full((254, 1), log_scale), values)
        want = logistic_bin_log_prob(
            loc_t.double(), torch.full((254, 1), log_scale, dtype=torch.float64), values
        )
        torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=0)


def _coupled_params(n: int, coupling: tuple[float, float, float]) -> torch.Tensor:
    raw = torch.atanh(torch.tensor(coupling))
    row = torch.cat([torch.tensor([0.4, 0.5, 0.6, -3.0, -4.0, -3.5]), raw])
    return row.view(1, 9, 1, 1).expand(n, 9, 1, 1)


def test_coupled_logistic_conditionals_each_sum_to_one():
    """Channel c's term is log p(x_c | earlier channels): summed over x_c it must give 1."""
    likelihood = CoupledLogistic()
    values = torch.arange(256, dtype=torch.uint8)
    for red, green in [(0, 0), (90, 200), (255, 30)]:
        x = torch.stack([torch.full((256,), red, dtype=torch.uint8), values, values], 1).view(
            256, 3, 1, 1
        )
        x[:, 1] = values.view(256, 1, 1)  # green runs over its values for this red
        log_p = likelihood.log_prob(_coupled_params(256, (0.7, -0.5, 0.6)), x)
        assert torch.allclose(log_p[:, 1].logsumexp(0).exp(), torch.ones(1), atol=2e-3)
        x[:, 1] = green  # blue runs over its values for this red and green
        log_p = likelihood.log_prob(_coupled_params(256, (0.7, -0.5, 0.6)), x)
        assert torch.allclose(log_p[:, 2].logsumexp(0).exp(), torch.ones(1), atol=2e-3)


def test_coupled_logistic_moves_green_with_red_and_matches_plain_when_uncoupled():
    likelihood = CoupledLogistic()
    values = torch.arange(256, dtype=torch.uint8)
    x = torch.stack([torch.full((256,), 150, dtype=torch.uint8), values, values], 1)
    log_p = likelihood.log_prob(_coupled_params(256, (0.9, 0.0, 0.0)), x.view(256, 3, 1, 1))
    # red sits 48 levels above its location 0.4, so green's likeliest value moves up by 0.9 x that
    best_green = int(log_p[:, 1].flatten().argmax())
    assert abs(best_green - (0.5 * 255 + 0.9 * (150 - 0.4 * 255))) <= 2
    x = x.view(256, 3, 1, 1)
    plain = DiscretizedLogistic().log_prob(_coupled_params(256, (0, 0, 0))[:, :6], x)
    uncoupled = likelihood.log_prob(_coupled_params(256, (0, 0, 0)), x)
    assert torch.allclose(plain, uncoupled)
    location, scale, coupling = likelihood.noise_params(_coupled_params(2, (0.9, -0.5, 0.1)))
    assert torch.allclose(location[0].flatten(), torch.tensor([0.4, 0.5, 0.6]))
    assert torch.allclose(coupling[0].flatten(), torch.tensor([0.9, -0.5, 0.1]), atol=1e-6)
    assert torch.allclose(scale[0].flatten(), torch.tensor([-3.0, -4.0, -3.5]).exp())


@pytest.mark.parametrize("name", ["logistic", "coupled_logistic", "bernoulli"])
def test_every_likelihood_serves_the_one_interface(name):
    """Callers never ask which likelihood they hold: each takes a coupling weight (which moves
    the loss only where there are couplings) and says whether the runtime can draw its pixels."""
    from birdvae.training.likelihood import make_likelihood

    likelihood = make_likelihood(name)
    torch.manual_seed(0)
    params = torch.randn(2, 3 * likelihood.params_per_channel, 4, 4)
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    weighted, full = likelihood.nll(params, x, 0.0), likelihood.nll(params, x)
    assert weighted.shape == (2,) and torch.isfinite(weighted).all()
    assert (not torch.equal(weighted, full)) is likelihood.has_coupling
    assert likelihood.draws_pixels is hasattr(likelihood, "noise_params")


def test_resnet_shapes_and_image_range():
    for size, spatial in ((16, True), (32, False), (64, True)):
        cfg = ModelConfig(image_size=size, latent_dim=32, encoder_width=8, decoder_width=8,
                          spatial_latent=spatial)  # fmt: skip
        vae = VAE(cfg).eval()
        x = torch.rand(3, 3, size, size)
        params, mean, logvar = vae(x)
        assert params.shape == (3, 6, size, size)
        assert mean.shape == logvar.shape == (3, 32)
        image = vae.decode_image(torch.randn(3, 32) * 3)
        assert image.shape == (3, 3, size, size)
        assert image.min() >= 0 and image.max() <= 1


def test_spatial_latent_is_a_4x4_grid_behind_the_same_flat_code():
    """No linear layer is left, and the flat code is the grid channel-major, both ways."""
    cfg = ModelConfig(image_size=16, latent_dim=32, encoder_width=8, decoder_width=8,
                      spatial_latent=True)  # fmt: skip
    vae = VAE(cfg).eval()
    assert not any(isinstance(m, torch.nn.Linear) for m in vae.modules())
    x = torch.rand(3, 3, 16, 16)
    params, mean, logvar = vae(x)
    assert params.shape == (3, 6, 16, 16) and mean.shape == logvar.shape == (3, 32)
    grid = vae.encoder.head(vae.encoder.features(x * 2 - 1))  # [3, 2 * 2 channels, 4, 4]
    assert torch.allclose(mean, grid[:, :2].flatten(1))
    seen = []
    vae.decoder.fc.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    vae.decoder(mean)
    assert torch.equal(seen[0], grid[:, :2])
    with pytest.raises(ValueError, match="divisible by 16"):
        VAE(ModelConfig(latent_dim=100, spatial_latent=True))
    with pytest.raises(ValueError, match="expected codes of 32"):  # not reshaped into 2 codes
        vae.decoder(torch.zeros(4, 16))


def test_baseline_matches_the_blog_post():
    vae = VAE(preset("baseline").model)
    assert isinstance(vae.likelihood, Bernoulli)
    assert abs(count_parameters(vae) - 1.85e6) < 0.01e6
    assert not any(isinstance(m, torch.nn.Conv2d) for m in vae.decoder.modules())
    params, mean, _ = vae(torch.rand(2, 3, 32, 32))
    assert params.shape == (2, 3, 32, 32) and mean.shape == (2, 180)


def test_default_decoder_has_no_conv_transpose_and_no_full_resolution_conv():
    vae = VAE(ModelConfig())
    convs = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in vae.decoder.modules())
    shapes = []
    for conv in convs:
        conv.register_forward_hook(lambda m, i, o: shapes.append(i[0].shape[-1]))
    vae.decoder(torch.randn(1, vae.cfg.latent_dim))
    assert max(shapes) == vae.cfg.image_size // 2


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zero = kl_per_dim(torch.zeros(2, 4), torch.zeros(2, 4))
    assert torch.allclose(zero, torch.zeros_like(zero))
    assert (kl_per_dim(torch.ones(2, 4), torch.full((2, 4), -1.0)) > 0).all()


def test_kl_per_dim_has_the_closed_form_in_nats():
    """KL(N(m, v) || N(0, 1)) = (m^2 + v - 1 - ln v) / 2 per dimension: a mean of 2 costs 2 nats
    (not 1, as |m| would give), and variance 2 at mean 0 costs (1 - ln 2) / 2."""
    mean = torch.tensor([[2.0, 0.0, -3.0, 0.5]])
    logvar = torch.tensor([[0.0, math.log(2.0), 0.0, math.log(0.25)]])
    expected = torch.tensor([[2.0, 0.5 * (1 - math.log(2.0)), 4.5,
                              0.5 * (0.25 + 0.25 - 1 - math.log(0.25))]])  # fmt: skip
    assert torch.allclose(kl_per_dim(mean, logvar), expected, atol=1e-6)


def test_the_posterior_sample_has_the_posteriors_standard_deviation():
    """z = mean + eps * exp(logvar / 2): logvar ln 4 must draw codes of std 2, not 4."""

    class Fixed(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            rows = torch.zeros(4096, 16)
            return rows + 3.0, rows + math.log(4.0)

    vae = VAE(ModelConfig(image_size=16, latent_dim=16, encoder_width=8, decoder_width=8))
    vae.encoder, vae.decoder = Fixed(), torch.nn.Identity()  # the decoder hands back the code
    torch.manual_seed(0)
    z, mean, _ = vae(torch.zeros(1, 3, 16, 16))
    assert z.shape == (4096, 16) and torch.equal(mean, torch.full_like(z, 3.0))
    assert abs(float(z.mean()) - 3.0) < 0.02
    assert abs(float(z.std()) - 2.0) < 0.02


def test_bits_per_dim_converts_nats():
    nats = 3 * 32 * 32 * torch.log(torch.tensor(2.0))
    assert abs(bits_per_dim(nats, 32) - 1.0) < 1e-6


def test_config_round_trips_through_json(tmp_path):
    config = preset("baseline")
    config.model.latent_dim = 99
    (tmp_path / "config.json").write_text(config.to_json())
    assert TrainConfig.load(tmp_path / "config.json") == config


def _version_1_config() -> dict:
    """A config as version 1 saved it: one data folder as a string, and no config_version,
    kl_weight, precision or spatial_latent."""
    old = TrainConfig().to_dict()
    for key in ("config_version", "kl_weight", "precision"):
        del old[key]
    del old["model"]["spatial_latent"]
    old["data"] = "/data/CUB_200_2011"
    return old


def test_no_two_random_streams_of_a_run_share_a_seed():
    """Each stream is the run's seed plus its own offset (an alias would share one), and every
    process of a distributed run seeds its global stream clear of them all."""
    offsets = [member.value for member in Stream.__members__.values()]
    assert len(set(offsets)) == len(offsets)
    for rank in range(1, 64):
        assert RANK_STRIDE * rank not in offsets
        assert all(abs(RANK_STRIDE * rank - offset) >= RANK_STRIDE // 2 for offset in offsets)


def test_a_version_1_config_upgrades_to_what_it_trained_with():
    config = TrainConfig.from_dict(_version_1_config())
    assert config.config_version == 2
    assert config.kl_weight == 1.0 and config.precision == "fp32"
    assert config.model.spatial_latent is False
    assert config.data == ["/data/CUB_200_2011"]
    current = TrainConfig.from_dict(TrainConfig().to_dict())
    assert (current.kl_weight, current.precision) == (1.0, "auto")


def test_a_version_1_config_keeps_the_fields_it_did_save():
    old = _version_1_config()
    old["kl_weight"], old["model"]["spatial_latent"] = 0.5, True
    config = TrainConfig.from_dict(old)
    assert config.kl_weight == 0.5 and config.model.spatial_latent is True


def test_a_seed_past_what_the_flag_takes_still_loads():
    """Runs before --seed was bounded could take any seed torch takes; their checkpoints
    must still resume, start a stage and export."""
    data = {**TrainConfig().to_dict(), "seed": 3_000_000_000}
    assert TrainConfig.from_dict(data).seed == 3_000_000_000


def test_a_config_from_a_newer_version_is_refused():
    newer = {**TrainConfig().to_dict(), "config_version": 99}
    with pytest.raises(ValueError, match="config_version 99 is newer"):
        TrainConfig.from_dict(newer)


def test_random_shift_moves_each_image_and_repeats_its_edges():
    from birdvae.training.augment import random_shift

    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6).to(torch.uint8)
    shifted = random_shift(x, 2)
    assert shifted.shape == x.shape and shifted.dtype == x.dtype
    for image, moved in zip(x, shifted):
        # Some (dy, dx) in [-2, 2] explains every pixel, with edge rows/columns repeated.
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = (torch.arange(6) + dy).clamp(0, 5)
                cols = (torch.arange(6) + dx).clamp(0, 5)
                matches.append(torch.equal(image[:, rows][:, :, cols], moved))
        assert any(matches)
    assert torch.equal(random_shift(x, 0), x)


def test_augmentation_draws_leave_the_callers_random_streams_as_they_were():
    """A block under private_seed draws from its own seed and puts torch's global stream back:
    the training step after it draws what it would have drawn, so a resumed run is the same."""
    from birdvae.training.augment import private_seed

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with private_seed(5):
        inside = torch.rand(2)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(1)
    with private_seed(5):
        assert torch.equal(torch.rand(2), inside)  # its own seed, not the caller's


def _tiny_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(image_size=16, latent_dim=16, encoder_width=8, encoder_max_width=16,
                           decoder_width=8, decoder_max_width=16))  # fmt: skip


def test_the_code_bank_holds_each_photos_posterior_mean_then_log_variance():
    """The later stages read row [:, 0] as the mean and [:, 1] as the log-variance: swapped, the
    prior would learn log-variances as codes."""
    from birdvae.training.codes import encode_bank
    from birdvae.training.likelihood import to_unit

    vae = _tiny_vae()
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    bank = encode_bank(vae, images)
    with torch.no_grad():
        mean, logvar = vae.eval().encoder(to_unit(images))
    assert bank.shape == (3, 2, 16) and bank.dtype == torch.float32
    torch.testing.assert_close(bank[:, 0], mean)
    torch.testing.assert_close(bank[:, 1], logvar)


def test_a_draw_from_the_bank_has_the_posteriors_spread():
    """z = mean + eps * exp(logvar / 2): the standard deviation is exp(logvar / 2), not
    exp(logvar), or the prior learns from codes spread four times too wide at logvar 2.8."""
    from birdvae.training.codes import draw

    bank = torch.stack([torch.full((20000, 2), 3.0), torch.full((20000, 2), 2.8)], dim=1)
    z = draw(bank, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), torch.full((2,), 3.0), atol=0.1, rtol=0)
    torch.testing.assert_close(z.std(0), torch.full((2,), math.exp(1.4)), atol=0.1, rtol=0)


def test_a_gpu_computes_bfloat16_natively_from_ampere_on(monkeypatch):
    """Compute capability 8 (A100, RTX 30xx) and later run --precision auto in bf16."""
    from birdvae.training import precision

    for capability, native in (((7, 5), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _, c=capability: c)
        assert precision.gpu_has_native_bf16(torch.device("cuda")) == native, capability


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_a_cpu_with_either_bfloat16_flag_computes_it_natively(monkeypatch, tmp_path, flag):
    """Sapphire Rapids lists amx_bf16, some AMD chips avx512_bf16 only: either one is native."""
    from birdvae.training import precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flag}\n")
    monkeypatch.setattr(precision, "Path", lambda _: cpuinfo)
    assert precision.cpu_has_native_bf16()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not precision.cpu_has_native_bf16()


@pytest.mark.parametrize(("changes", "says"), [
    ({"model": "abc"}, "ModelConfig must be a mapping of settings, not str"),
    ({"model": None}, "ModelConfig must be a mapping of settings, not NoneType"),
    ({"config_version": "x"}, "config_version must be a whole number from 1, not 'x'"),
    ({"config_version": 0}, "config_version must be a whole number from 1, not 0"),
    ({"data": 5}, "data must be a list of text, not 5"),
    ({"lr": float("nan")}, "TrainConfig lr must be a number, at least 0, not nan"),
    ({"kl_weight": float("inf")}, "TrainConfig kl_weight must be a number, at least 0, not inf"),
    ({"epochs": -3}, "TrainConfig epochs must be a count, not -3"),
    ({"learning_rate": 1e-3}, "unknown TrainConfig keys: ['learning_rate']"),
    ({"model": {"width": 32}}, "unknown ModelConfig keys: ['width']"),
])  # fmt: skip
def test_a_damaged_config_of_any_version_is_refused_by_name(changes, says):
    """Version 1 configs (no config_version) are upgraded before they are checked: their
    damage was reported in Python's words."""
    from birdvae.training.checkpoint import CheckpointError, config_of

    for data in (_version_1_config(), TrainConfig().to_dict()):
        with pytest.raises(CheckpointError, match=re.escape(says)):
            config_of({"config": {**data, **changes}})


@pytest.mark.parametrize(("section", "name", "value", "says"), [
    (None, "schedule", "linear", "TrainConfig schedule must be one of cosine, constant, not "
                                 "'linear'"),
    (None, "precision", "fp16", "TrainConfig precision must be one of auto, fp32, bf16"),
    (None, "device", "tpu", "TrainConfig device must be one of auto, cpu, cuda"),
    (None, "crop", "zoom", "TrainConfig crop must be one of center, squash"),
    (None, "stage", "vq", "TrainConfig stage must be one of vae, prior, decoder"),
    (None, "preset", "huge", "TrainConfig preset must be one of default, baseline"),
    (None, "ema_decay", 5.0, "ema_decay must be at least 0 and below 1, not 5.0"),
    (None, "ema_decay", 1.0, "ema_decay must be at least 0 and below 1, not 1.0"),  # never moves
    (None, "lr_floor", 1.5, "lr_floor must be at least 0 and at most 1, not 1.5"),
    (None, "lr_floor", -0.1, "lr_floor must be a number, at least 0, not -0.1"),
    # A negative weight or rate trained something else without a word.
    (None, "kl_weight", -1.0, "TrainConfig kl_weight must be a number, at least 0, not -1.0"),
    (None, "free_bits", -5, "TrainConfig free_bits must be a number, at least 0, not -5"),
    (None, "grad_clip", -0.5, "TrainConfig grad_clip must be a number, at least 0"),
    (None, "lr", 0.0, "TrainConfig lr must be above 0, not 0.0"),
    (None, "val_fraction", 1.0, "TrainConfig val_fraction must be at least 0 and below 1, not 1.0"),
    (None, "box_margin", 1.5, "TrainConfig box_margin must be at least 0 and at most 1"),
    ("prior", "dropout", 1.0, "PriorConfig dropout must be at least 0 and below 1, not 1.0"),
    ("prior", "keep", 0.0, "PriorConfig keep must be above 0 and at most 1, not 0.0"),
    ("prior", "sigma_min", 80.0, "PriorConfig sigma_min must be above 0 and below 80.0"),
    ("prior", "sigma_min", 0.0, "PriorConfig sigma_min must be above 0 and below 80.0, not 0.0"),
    ("prior", "rho", 0.0, "PriorConfig rho must be above 0, not 0.0"),
    ("sharpen", "gan_weight", -0.8, "SharpenConfig gan_weight must be a number, at least 0"),
    ("sharpen", "disc_lr", 0.0, "SharpenConfig disc_lr must be above 0, not 0.0"),
    ("sharpen", "prior_share", 5.0, "SharpenConfig prior_share must be at least 0 and at most 4"),
    ("sharpen", "adam_betas", [0.5, 1.0], "SharpenConfig adam_betas must each be below 1"),
    ("sharpen", "adam_betas", [-0.5, 0.9], "SharpenConfig adam_betas must be a pair of numbers"),
    # Each of these was a traceback or a process killed for memory (a red-team review).
    (None, "grid_size", 2_000_000, "TrainConfig grid_size must be a whole number from 1 to 1024"),
    (None, "seed", 2**70, "TrainConfig seed must be a whole number from 0 to 9223372036854775807"),
    (None, "weight_decay", -1.0, "TrainConfig weight_decay must be a number, at least 0"),
    ("prior", "sigma_max", 0.0, "PriorConfig sigma_max must be above 0, not 0.0"),
    ("sharpen", "anchor_scale", 0, "SharpenConfig anchor_scale must be one of 2, 4, 8, not 0"),
    ("sharpen", "anchor_scale", 10**6, "SharpenConfig anchor_scale must be one of 2, 4, 8"),
    ("model", "arch", "unet", "ModelConfig arch must be one of resnet, baseline"),
    ("model", "likelihood", "gaussian", "ModelConfig likelihood must be one of logistic"),
    ("sharpen", "augment", "color,blur", "SharpenConfig augment holds blur; choose among color"),
    ("sharpen", "rater_augment", "noise", "SharpenConfig rater_augment holds noise"),
])  # fmt: skip
def test_a_config_setting_outside_its_choices_is_refused_by_name(section, name, value, says):
    """Each would otherwise be a traceback once work starts (an unknown augmentation at the
    decoder stage's first step), or a different run without a word (any schedule but
    "constant" trained as cosine)."""
    from birdvae.training.checkpoint import CheckpointError, config_of

    data = TrainConfig().to_dict()
    (data[section] if section else data)[name] = value
    with pytest.raises(CheckpointError, match=re.escape(says)):
        config_of({"config": data})


def test_augmentations_may_be_any_of_their_names_or_none():
    from birdvae.training.config import SharpenConfig

    for kinds in ("", "cutout", "translation,color", "color,translation,cutout"):
        assert SharpenConfig.from_dict({"augment": kinds}).augment == kinds


def test_the_config_names_every_likelihood_the_model_can_make():
    from birdvae.training.config import LIKELIHOODS
    from birdvae.training.likelihood import LIKELIHOODS as MADE

    assert sorted(LIKELIHOODS) == sorted(MADE)


@pytest.mark.parametrize("part", [None, "model", "prior", "sharpen"])
def test_a_config_part_that_is_not_a_mapping_is_named(part):
    from birdvae.training.checkpoint import CheckpointError, config_of

    data = TrainConfig().to_dict()
    if part is None:
        data = [data]
    else:
        data[part] = "x"
    with pytest.raises(CheckpointError, match="must be a mapping of settings, not"):
        config_of({"config": data})


@pytest.mark.parametrize(
    "name, value",
    [("latent_dim", -5), ("decoder_width", 0), ("image_size", 2.5), ("blocks_per_level", True)],
)
def test_a_checkpoint_config_with_impossible_sizes_is_refused_by_name(name, value):
    from birdvae.training.checkpoint import CheckpointError, config_of

    data = TrainConfig().to_dict()
    data["model"][name] = value
    with pytest.raises(CheckpointError, match=f"model {name} must be a whole number"):
        config_of({"config": data})


@pytest.mark.parametrize("stage, section, sizes", [
    ("vae", "model", {"latent_dim": 65536, "decoder_width": 65536, "decoder_max_width": 65536}),
    ("prior", "prior", {"width": 1 << 16}),
    ("decoder", "sharpen", {"disc_width": 1 << 16}),
])  # fmt: skip
def test_a_checkpoint_config_larger_than_a_run_may_build_is_refused_unbuilt(stage, section,
                                                                            sizes):  # fmt: skip
    """Every network a checkpoint's stage builds is counted on the meta device before anything
    is allocated: a config is as hostile as the rest of the file."""
    from birdvae.training.checkpoint import MAX_PARAMETERS, CheckpointError, config_of

    data = TrainConfig().to_dict()
    data["stage"] = stage
    data[section].update(sizes)
    with pytest.raises(CheckpointError, match=f"more than the {MAX_PARAMETERS:,} a run may"):
        config_of({"config": data})


def test_only_the_networks_a_checkpoint_builds_are_counted():
    """A VAE checkpoint builds no prior, so its config's prior sizes do not count against it;
    the same config with prior weights in the file does."""
    from birdvae.training.checkpoint import CheckpointError, config_of

    data = TrainConfig().to_dict()
    data["prior"]["width"] = 1 << 16
    assert config_of({"config": data}).prior.width == 1 << 16
    with pytest.raises(CheckpointError, match="more than"):
        config_of({"config": data, "prior_ema": {"w": torch.zeros(1)}})


@pytest.mark.parametrize("section, name, value, says", [
    ("prior", "blocks", 10**6, "prior blocks must be a whole number from 1 to 64"),
    ("prior", "width", 0, "prior width must be a whole number from 1 to 65536"),
    ("prior", "steps", 10**7, "prior steps must be a whole number from 2 to 64"),
    ("prior", "views", 10**6, "prior views must be a whole number from 1 to 64"),
    ("sharpen", "disc_width", 0, "sharpen disc_width must be a whole number from 1 to 65536"),
])  # fmt: skip
def test_counts_that_would_take_unbounded_work_are_refused_by_name(section, name, value, says):
    """A million prior blocks of width 0 hold no weights, yet Python builds each one: such
    counts are refused before any module is built."""
    from birdvae.training.checkpoint import CheckpointError, config_of

    data = TrainConfig().to_dict()
    data[section][name] = value
    with pytest.raises(CheckpointError, match=re.escape(says)):
        config_of({"config": data})


def test_weight_names_that_are_not_text_are_one_checkpoint_error():
    from birdvae.training import checkpoint

    config = TrainConfig()
    weights = {**VAE(config.model).state_dict(), 1: torch.zeros(1), "zz": torch.zeros(1)}
    state = {"config": config.to_dict(), "model": weights, "ema": None}
    with pytest.raises(checkpoint.CheckpointError, match="names are not text"):
        checkpoint.build_vae(state)


def test_weights_that_do_not_fit_the_config_are_refused_before_the_model_is_built(monkeypatch):
    """A config that disagrees with its own weights (a larger code than they hold) names the
    first weight that differs, and the config's VAE is only ever built on the meta device."""
    from birdvae.training import checkpoint

    config = TrainConfig()
    config.model.latent_dim = 64
    weights = VAE(config.model).state_dict()
    config.model.latent_dim = 4096
    devices = []

    def recording_vae(model_config: ModelConfig) -> VAE:
        devices.append(torch.empty(0).device.type)  # the device a module would be built on
        return VAE(model_config)

    monkeypatch.setattr(checkpoint, "VAE", recording_vae)
    state = {"config": config.to_dict(), "model": weights, "ema": None}
    with pytest.raises(checkpoint.CheckpointError, match=r"do not fit its model: \S+ is \("):
        checkpoint.build_vae(state)
    assert devices and set(devices) == {"meta"}


@pytest.mark.parametrize("image_size, width", [(16, 1), (32, 24), (64, 48), (256, 7)])
def test_the_discriminators_count_from_its_sizes_is_the_built_ones(image_size, width):
    from birdvae.training.sharpen import Discriminator

    built = Discriminator(image_size, width)
    assert Discriminator.parameter_count(image_size, width) == sum(
        p.numel() for p in built.parameters()
    )
