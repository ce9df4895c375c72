"""The defaults `vae-train --help` states are the ones a run gets: help text is written by hand,
so a changed config default would otherwise leave the help (and docs/CLI.md) stating the old."""

from __future__ import annotations

import re
from typing import ClassVar

import pytest

from birdvae.training.cli import train_command
from birdvae.training.config import TrainConfig


def _config_default(name: str, config: TrainConfig):
    for holder in (config, config.model):
        if hasattr(holder, name):
            return getattr(holder, name)
    if name.startswith("prior_") and hasattr(config.prior, name[6:]):
        return getattr(config.prior, name[6:])
    if hasattr(config.sharpen, name):
        return getattr(config.sharpen, name)
    return None


def test_stated_numeric_defaults_match_the_config():
    config = TrainConfig()
    checked = 0
    for param in train_command.params:
        match = re.search(r"\[default: ([-+0-9.e]+)[;\]]", getattr(param, "help", "") or "")
        if not match:
            continue
        default = _config_default(param.name, config)
        if default is None or isinstance(default, bool):
            continue
        stated = match.group(1)
        assert float(stated) == float(default), f"--{param.name}: help says {stated}"
        checked += 1
    assert checked >= 10  # the decoder, prior, sharpen and optimiser flags are all covered


def test_stated_stage_defaults_match_the_stage_configs():
    """--epochs, --batch-size and --lr state each stage's own default beside the VAE's."""
    from birdvae.training.config import stage_config

    base = TrainConfig()
    stages = {stage: stage_config(base, stage, "init.pt") for stage in ("prior", "decoder")}
    for param in train_command.params:
        if param.name not in ("epochs", "batch_size", "lr"):
            continue
        for stage, config in stages.items():
            match = re.search(rf"--stage {stage}: ([-+0-9.e]+)[;\]]", param.help)
            assert match, f"--{param.name} states no --stage {stage} default"
            assert float(match.group(1)) == float(getattr(config, param.name)), param.name


def test_no_number_flag_takes_nan_or_infinity():
    """NaN passes every range comparison click makes: --lr nan reached the optimiser."""
    from click.testing import CliRunner

    from birdvae.runtime.command import FiniteRange

    ranged = [p for p in train_command.params if isinstance(p.type, FiniteRange)]
    assert len(ranged) >= 10
    for flag in ("--lr", "--kl-weight", "--free-bits"):
        for value in ("nan", "inf", "1e300"):  # 1e300: torch's overflow traceback
            result = CliRunner().invoke(train_command, [flag, value, "--data", ".", "-o", "x"])
            assert result.exit_code == 2 and f"'{flag}'" in result.output, result.output


def test_a_later_stage_runs_on_this_machine_not_the_init_runs():
    """A VAE trained with --device cuda made '--stage prior' on a CPU box fail with "--device
    cuda was asked for", and one trained with --device cpu kept later stages off a GPU."""
    from dataclasses import replace

    from birdvae.training.config import stage_config

    trained = replace(TrainConfig(), device="cuda", precision="bf16", lr=0.5, threads=16)
    for stage in ("prior", "decoder"):
        later = stage_config(trained, stage, "init.pt")
        assert (later.device, later.precision, later.threads) == ("auto", "auto", 0)
        assert later.model == trained.model and later.lr != 0.5


def test_a_stage_takes_todays_defaults_for_its_own_settings_from_a_run_of_another_stage():
    """Every checkpoint holds its whole config, so a prior run trained when the autoguidance
    weight defaulted to 2 handed that 2 to the decoder stage started from it."""
    from dataclasses import replace

    from birdvae.training.config import DEFAULT_GUIDANCE, PriorConfig, SharpenConfig, stage_config

    old_sharpen = replace(SharpenConfig(), guidance=2.0, disc_width=8)
    prior_run = replace(TrainConfig(), stage="prior", sharpen=old_sharpen,
                        prior=replace(PriorConfig(), width=256))  # fmt: skip
    decoder = stage_config(prior_run, "decoder", "prior.pt")
    assert decoder.sharpen == SharpenConfig() and decoder.sharpen.guidance == DEFAULT_GUIDANCE
    assert decoder.prior.width == 256  # the carried prior's own description
    vae_run = replace(TrainConfig(), prior=replace(PriorConfig(), views=2))
    assert stage_config(vae_run, "prior", "vae.pt").prior == PriorConfig()
    # A run of the same stage is carried on with its settings.
    decoder_run = replace(prior_run, stage="decoder")
    assert stage_config(decoder_run, "decoder", "decoder.pt").sharpen == old_sharpen


def test_each_stage_flag_set_holds_exactly_the_options_of_its_config_part():
    """The hand-kept sets that say which flags belong to the prior and decoder stages name
    every option named after a field of PriorConfig (as prior_<field>) or SharpenConfig, and
    nothing else: a new flag missing from its set would be accepted by every stage."""
    from dataclasses import fields

    from birdvae.training.cli import DECODER_FLAGS, PRIOR_FLAGS
    from birdvae.training.config import PriorConfig, SharpenConfig

    options = {param.name for param in train_command.params}
    prior = {f"prior_{f.name}" for f in fields(PriorConfig)} & options
    sharpen = {f.name for f in fields(SharpenConfig)} & options
    assert prior == PRIOR_FLAGS
    assert sharpen == DECODER_FLAGS


def test_every_option_is_a_setting_in_the_one_table_or_is_not_one():
    """SETTINGS is where a flag meets the config: a new option missing from it would be
    accepted and change nothing; every key it gives override() must name a config field."""
    from dataclasses import fields

    from birdvae.training.cli import SETTINGS
    from birdvae.training.config import ModelConfig, PriorConfig, SharpenConfig

    not_settings = {"out", "out_alias", "stage", "init", "preset", "resume", "threads", "version"}
    options = {param.name for param in train_command.params}
    assert options - not_settings == set(SETTINGS)
    config_keys = (
        {f.name for f in fields(TrainConfig)} | {f.name for f in fields(ModelConfig)}
        | {f"prior_{f.name}" for f in fields(PriorConfig)}
        | {f"sharpen_{f.name}" for f in fields(SharpenConfig)}
    )  # fmt: skip
    assert {key for key, _ in SETTINGS.values()} <= config_keys


def test_every_hand_kept_flag_set_names_options_the_command_has():
    """A name in these sets that is not an option's (``compile`` for the option ``compile_``)
    makes the rule it serves refuse or allow the wrong flag without a word."""
    from birdvae.training.cli import ARCHITECTURE_FLAGS, RESUMABLE_FLAGS, SHOWN_FLAGS

    options = {param.name for param in train_command.params}
    for flags in (RESUMABLE_FLAGS, set(SHOWN_FLAGS), ARCHITECTURE_FLAGS):
        assert flags <= options, flags - options
    from dataclasses import fields

    from birdvae.training.config import RESUMABLE_FIELDS, TrainConfig

    assert set(RESUMABLE_FIELDS) <= {field.name for field in fields(TrainConfig)}


def test_sizes_past_any_bound_are_one_line_before_any_work(tmp_path, monkeypatch, vae_checkpoint):
    """Each of these was a traceback: torch.set_num_threads overflowing an int64, and a prior
    width the command line set past the bound a config.json is held to."""
    from click.testing import CliRunner

    from birdvae.training import cli

    monkeypatch.setattr("birdvae.runtime.cpus.usable_cpus", lambda: 2)
    huge = str(10**20)
    for args, message in (
        (["--data", str(tmp_path), "-o", str(tmp_path / "a"), "--threads", huge],
         f"--threads {huge} is more than the 2 CPUs"),
        (["--data", str(tmp_path), "-o", str(tmp_path / "b"), "--threads", "3"],
         "--threads 3 is more than the 2 CPUs"),
        (["--stage", "prior", "--init", str(vae_checkpoint), "-o", str(tmp_path / "c"),
          "--prior-width", huge], "prior width must be a whole number from 1 to 65536"),
    ):  # fmt: skip
        result = CliRunner().invoke(cli.train_command, args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "a new run needs -o/--output and --data;"),
        (["-o", "{tmp}/run"], "a new run needs --data;"),
        (["--data", "{tmp}"], "a new run needs -o/--output;"),
        (["--stage", "prior", "-o", "{tmp}/run"],
         "--stage prior needs --init, the earlier stage's best.pt;"),
        (["--stage", "decoder", "--data", "{tmp}"],
         "--stage decoder needs -o/--output and --init, the earlier stage's best.pt;"),
    ],
)  # fmt: skip
def test_a_missing_flag_is_named_for_the_stage(tmp_path, args, message):
    """A prior stage given -o but no --init was told -o and --data were required."""
    from click.testing import CliRunner

    result = CliRunner().invoke(train_command, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {message} --resume RUN_DIR continues a run instead"
    ]
    assert not (tmp_path / "run").exists()


def test_a_data_folder_that_is_a_loop_of_links_is_one_line(tmp_path):
    """Path.resolve raised RuntimeError ("Symlink loop") from vae-train, vae-eval and
    vae-export --prior-data alike."""
    from click.testing import CliRunner

    from birdvae.training.cli import train_command

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for args in (["--data", str(tmp_path / "a"), "-o", str(tmp_path / "run")],
                 ["--data", str(tmp_path), "-o", str(tmp_path / "a" / "run")]):  # fmt: skip
        result = CliRunner().invoke(train_command, args)
        assert result.exit_code == 2 and "a loop of symbolic links" in result.output, result.output


class _Finished:
    """Stands in for a stage's trainer: records the config it is given and trains nothing."""

    configs: ClassVar[list[TrainConfig]] = []

    def __init__(self, config: TrainConfig, run_dir, resume_state) -> None:
        self.config, self.epoch, self.stop_signal = config, 0, None
        self.ddp = type("Processes", (), {"main": True})()
        _Finished.configs.append(config)

    def fit(self) -> None:
        self.epoch = self.config.epochs

    def close(self) -> None:
        pass


def _run_untrained(monkeypatch, args: list[str]) -> tuple[TrainConfig, str]:
    """What vae-train makes of ``args``: the config its trainer gets, and what it prints."""
    from click.testing import CliRunner

    from birdvae.training import stages

    monkeypatch.setattr(stages, "trainer_class", lambda stage: _Finished)
    _Finished.configs.clear()
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    assert len(_Finished.configs) == 1
    return _Finished.configs[0], result.output


def test_every_later_stage_flag_reaches_the_config(tmp_path, monkeypatch, vae_checkpoint):
    """Each prior- and decoder-stage flag, given a value other than its default, is the value
    the stage trains with: one left out of the config is accepted and silently does nothing."""
    from birdvae.training.cli import DECODER_FLAGS, PRIOR_FLAGS
    from birdvae.training.config import PriorConfig, SharpenConfig

    guide = str(vae_checkpoint)
    values = {
        "prior": {"prior_width": ("64", 64), "prior_blocks": ("3", 3), "prior_steps": ("7", 7),
                  "prior_keep": ("0.5", 0.5)},
        "decoder": {"gan_weight": ("0.3", 0.3), "disc_width": ("16", 16),
                    "prior_share": ("0.25", 0.25), "anchor_weight": ("2.5", 2.5),
                    "anchor_scale": ("8", 8), "perceptual_weight": ("0.2", 0.2),
                    "projected_weight": ("0.3", 0.3), "rater_weight": ("0.1", 0.1),
                    "prior_guide": (guide, guide), "guidance": ("3", 3.0)},
    }  # fmt: skip
    assert set(values["prior"]) == PRIOR_FLAGS and set(values["decoder"]) == DECODER_FLAGS
    defaults = {"prior": PriorConfig(), "decoder": SharpenConfig()}
    for stage, flags in values.items():
        args = ["--stage", stage, "--init", str(vae_checkpoint), "-o", str(tmp_path / stage)]
        for name, (text, _) in flags.items():
            args += [f"--{name.replace('_', '-')}", text]
        config, _ = _run_untrained(monkeypatch, args)
        part = config.prior if stage == "prior" else config.sharpen
        for name, (_, value) in flags.items():
            field = name.removeprefix("prior_") if stage == "prior" else name
            assert getattr(defaults[stage], field) != value, name  # else the test proves nothing
            assert getattr(part, field) == value, name


@pytest.mark.parametrize(
    "sizes",
    [
        ["--prior-width", "256"],
        ["--prior-blocks", "2"],
        ["--prior-width", "256", "--prior-blocks", "2"],
        [],
    ],
)
def test_a_prior_smaller_than_the_default_in_either_size_is_told_it_is_likely_a_guide(
    tmp_path, monkeypatch, vae_checkpoint, sizes
):
    """The recipe's guide is narrower and shallower, but a prior made smaller in either way is
    no model's own prior: the first command it is shown is the one that uses it as a guide."""
    args = ["--stage", "prior", "--init", str(vae_checkpoint), "-o", str(tmp_path / "p"), *sizes]
    _, output = _run_untrained(monkeypatch, args)
    assert ("a prior this small is likely a guide" in output) is bool(sizes), output


def test_a_new_runs_threads_are_kept_in_its_config(tmp_path, monkeypatch, vae_checkpoint):
    """What --resume reads back: a run's --threads, applied to torch and kept with the run."""
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    args = ["--stage", "prior", "--init", str(vae_checkpoint), "--threads", "1"]
    config, _ = _run_untrained(monkeypatch, [*args, "-o", str(tmp_path / "a")])
    assert config.threads == 1 and calls == [1]
    config, _ = _run_untrained(monkeypatch, [*args[:-2], "-o", str(tmp_path / "b")])
    assert config.threads == 0 and calls == [1]  # torch's default, left alone
