"""The defaults `vae-train --help` states are the ones a run gets: help text is written by hand,
so a changed config default would otherwise leave the help (and docs/CLI.md) stating the old."""

from __future__ import annotations

import re

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

    trained = replace(TrainConfig(), device="cuda", precision="bf16", lr=0.5)
    for stage in ("prior", "decoder"):
        later = stage_config(trained, stage, "init.pt")
        assert (later.device, later.precision) == ("auto", "auto")
        assert later.model == trained.model and later.lr != 0.5


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


def test_every_hand_kept_flag_set_names_options_the_command_has():
    """A name in these sets that is not an option's (``compile`` for the option ``compile_``)
    makes the rule it serves refuse or allow the wrong flag without a word."""
    from birdvae.training.cli import ARCHITECTURE_FLAGS, RESUMABLE_FLAGS, SHOWN_FLAGS

    options = {param.name for param in train_command.params}
    for flags in (RESUMABLE_FLAGS, set(SHOWN_FLAGS), ARCHITECTURE_FLAGS):
        assert flags <= options, flags - options
