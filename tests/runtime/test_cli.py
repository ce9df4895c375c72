"""bird-gen end to end in this process: what each command writes and prints, and how every user
mistake ends: exit status 2, one ``error:`` line on stderr, no traceback, no file written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvae.runtime import durable
from birdvae.runtime.format import DECODER_FILE, MANIFEST_FILE, MIXTURE_FILE

from .conftest import one_error


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return np.asarray(image)


def _ok(result):
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def test_sample_writes_a_grid_of_the_documented_size(cli, tiny_model: Path, out: Path) -> None:
    result = cli("--n", 7, "-o", out / "birds.png", "--model", tiny_model, "--threads", 1)
    _ok(result)
    # S = 16, default scale 128 // 16 = 8: 3x3 tiles of 128 px with 2 px gutters.
    assert _png(out / "birds.png").shape == (3 * 128 + 4 * 2, 3 * 128 + 4 * 2, 3)
    assert "birds.png" in result.stdout and "7 birds" in result.stdout and "seed 0" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["birds.png"]


@pytest.mark.parametrize(("n", "scale", "side"), [(1, 1, 16 + 4), (64, 2, 8 * 32 + 18)])
def test_sample_grid_sizes(cli, tiny_model: Path, out: Path, n: int, scale: int, side: int) -> None:
    args = ("--n", n, "--scale", scale, "--model", tiny_model, "--threads", 1)
    _ok(cli(*args, "-o", out / "g.png"))
    assert _png(out / "g.png").shape == (side, side, 3)


@pytest.mark.parametrize("name", ["birds32", "birds64"])
def test_shipped_models_by_name(cli, out: Path, name: str) -> None:
    """Both sizes come out about 128 px a bird: scale 4 for 32x32, 2 for 64x64."""
    _ok(cli("--n", 4, "--model", name, "--threads", 1, "-o", out / "b.png"))
    side = 2 * 128 + 3 * 2  # 2x2 birds of 128 px, 2 px gutters
    assert _png(out / "b.png").shape == (side, side, 3)


def test_pixel_noise_option(cli, tiny_model: Path, out: Path) -> None:
    common = ("--n", 4, "--scale", 1, "--model", tiny_model, "--threads", 1)
    _ok(cli(*common, "-o", out / "smooth.png"))
    result = cli(*common, "--noise", 0.7, "-o", out / "grainy.png")
    _ok(result)
    assert "noise 0.7" in result.stdout
    smooth, grainy = _png(out / "smooth.png"), _png(out / "grainy.png")
    assert smooth.shape == grainy.shape and not np.array_equal(smooth, grainy)


def test_default_output_name(cli, tiny_model: Path, out: Path, monkeypatch) -> None:
    monkeypatch.chdir(out)
    _ok(cli("--n", 2, "--model", tiny_model, "--threads", 1))
    assert (out / "birds.png").is_file()


def test_same_seed_same_bytes_other_seed_other_bytes(cli, tiny_model: Path, out: Path) -> None:
    common = ("--n", 9, "--model", tiny_model, "--threads", 1)
    for name, seed in (("a.png", 5), ("b.png", 5), ("c.png", 6)):
        _ok(cli(*common, "--seed", seed, "-o", out / name))
    assert (out / "a.png").read_bytes() == (out / "b.png").read_bytes()
    assert (out / "a.png").read_bytes() != (out / "c.png").read_bytes()


def test_batch_size_does_not_change_the_birds(cli, tiny_model: Path, out: Path) -> None:
    common = ("--n", 10, "--seed", 2, "--model", tiny_model, "--threads", 1)
    _ok(cli(*common, "--batch", 3, "-o", out / "a.png"))
    _ok(cli(*common, "--batch", 64, "-o", out / "b.png"))
    difference = np.abs(_png(out / "a.png").astype(int) - _png(out / "b.png").astype(int))
    assert difference.max() <= 1  # float noise may flip a rounding, never more


def test_prior_and_temperature_options_change_the_birds(cli, tiny_model: Path, out: Path) -> None:
    common = ("--n", 4, "--model", tiny_model, "--threads", 1)
    _ok(cli(*common, "-o", out / "default.png"))
    _ok(cli(*common, "--prior", "fitted", "--temperature", 0.8, "-o", out / "explicit.png"))
    _ok(cli(*common, "--prior", "standard", "-o", out / "standard.png"))
    _ok(cli(*common, "-t", 0, "-o", out / "cold.png"))
    default = (out / "default.png").read_bytes()
    assert (out / "explicit.png").read_bytes() == default
    assert (out / "standard.png").read_bytes() != default
    assert (out / "cold.png").read_bytes() != default


def test_separate_writes_n_files(cli, tiny_model: Path, out: Path) -> None:
    folder = out / "birds"  # created by the command
    result = cli(
        "--n", 11, "--separate", folder, "--batch", 4, "--model", tiny_model, "--threads", 1
    )
    _ok(result)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"bird_{i:05d}.png" for i in range(11)]
    assert _png(folder / "bird_00000.png").shape == (16, 16, 3)  # native size by default
    assert "11 birds" in result.stdout
    _ok(cli("--n", 11, "--separate", out / "big", "--scale", 3, "--model", tiny_model))
    assert _png(out / "big" / "bird_00010.png").shape == (48, 48, 3)


def test_a_separate_folder_that_cannot_take_birds_is_refused_before_the_model_runs(
    cli, out: Path, monkeypatch
) -> None:
    """Found only after the first batch was drawn (24 s for birds64 --best-of 16)."""
    import birdvae.runtime.cli as bird_gen

    opened = []
    monkeypatch.setattr(bird_gen, "_open_model", lambda *args: opened.append(args))
    (out / "nowhere").symlink_to(out / "missing")
    one_error(cli("--separate", out / "nowhere"), "a link to nothing")
    (out / "file").write_bytes(b"")
    one_error(cli("--separate", out / "file" / "birds"), "is not a folder")
    real_access = os.access
    locked = out / "locked"
    locked.mkdir()
    monkeypatch.setattr(  # root may write anywhere: play a user who may not write here
        bird_gen.os, "access", lambda p, m: m != os.W_OK and real_access(p, m)
        if Path(p) == locked else real_access(p, m)
    )  # fmt: skip
    one_error(cli("--separate", locked), "is not writable")
    one_error(cli("--separate", locked / "new" / "birds"), f"the folder {locked} is not")
    assert opened == []


def test_an_output_that_is_a_loop_of_links_is_refused_before_the_model_runs(
    cli, out: Path, monkeypatch
) -> None:
    import birdvae.runtime.cli as bird_gen

    monkeypatch.setattr(bird_gen, "_open_model", None)  # opening a model is a TypeError
    (out / "loop.png").symlink_to("loop.png")
    one_error(cli("-o", out / "loop.png"), "loop.png: Too many levels of symbolic links")
    assert (out / "loop.png").is_symlink()


def test_two_runs_never_write_birds_into_one_folder_at_once(
    cli, tiny_model: Path, out: Path
) -> None:
    """Each saw the folder empty of older birds, and one's birds were written over the other's
    with no --force, both reporting success."""
    folder = out / "birds"
    folder.mkdir()
    other_run = durable.hold(folder)
    assert other_run is not None
    try:
        result = cli("--n", 3, "--separate", folder, "--model", tiny_model)
    finally:
        os.close(other_run)
    one_error(result, "another bird-gen is writing birds into")
    assert list(folder.iterdir()) == []
    _ok(cli("--n", 3, "--separate", folder, "--model", tiny_model))
    assert len(list(folder.iterdir())) == 3


def test_separate_files_are_the_grid_birds(cli, tiny_model: Path, out: Path) -> None:
    common = ("--n", 4, "--seed", 9, "--scale", 1, "--model", tiny_model, "--threads", 1)
    _ok(cli(*common, "-o", out / "grid.png"))
    _ok(cli(*common, "--separate", out / "each"))
    grid = _png(out / "grid.png")
    np.testing.assert_array_equal(grid[2:18, 20:36], _png(out / "each" / "bird_00001.png"))


def test_recon_writes_pairs_and_prints_psnr(cli, tiny_model: Path, birds: list[Path], out: Path):
    result = cli("recon", *birds, "-o", out / "recon.png", "--model", tiny_model, "--threads", 1)
    _ok(result)
    lines = result.stdout.splitlines()
    scores = [float(line.split()[-2]) for line in lines[: len(birds) + 1]]
    for line, bird in zip(lines, birds):
        assert line.startswith(str(bird)) and line.endswith(" dB")
    assert lines[len(birds)].startswith("mean")
    assert scores[-1] == pytest.approx(np.mean(scores[:-1]), abs=0.01)
    assert all(0 < score < 60 for score in scores)
    # 3 photos: originals on one row, reconstructions below: 2 rows x 3 columns of 128 px.
    figure = _png(out / "recon.png")
    assert figure.shape == (2 * 128 + 3 * 2, 3 * 128 + 4 * 2, 3)
    assert not np.array_equal(figure[2:130], figure[132:260])
    assert "3 originals and reconstructions" in lines[-1]
    one = cli("recon", birds[0], "-o", out / "one.png", "--model", tiny_model, "--threads", 1)
    assert "1 original and its reconstruction," in one.stdout
    # The model and threads may come before the command's name, as they do for sampling.
    before = cli("--model", tiny_model, "--threads", 1, "recon", birds[0], "-o", out / "b.png")
    _ok(before)
    np.testing.assert_array_equal(_png(out / "b.png"), _png(out / "one.png"))
    _ok(cli("recon", birds[0], "-o", out / "shipped.png", "--threads", 1))  # the default model
    assert not np.array_equal(_png(out / "b.png"), _png(out / "shipped.png"))
    many = cli("-m", tiny_model, "--threads", 100_000, "recon", birds[0], "-o", out / "t.png")
    assert many.exit_code == 2 and "threads 100000 is more than the" in many.stderr


def test_paths_are_printed_escaped(cli, tiny_model: Path, birds: list[Path], out: Path) -> None:
    """A file name may hold escape sequences, or bytes that are not UTF-8 (surrogates in
    Python), which a strict stdout cannot encode: every line that shows a path escapes them."""
    odd = "b\x1b]0;owned\x07\udcff"
    photo = out / f"{odd}.jpg"
    photo.write_bytes(birds[0].read_bytes())
    runs = [
        ("--n", 1, "-o", out / f"{odd}.png"),
        ("--n", 1, "--separate", out / odd),
        ("recon", photo, "-o", out / f"r{odd}.png"),
        ("interp", photo, birds[1], "--steps", 2, "-o", out / f"i{odd}.png"),
    ]
    for args in runs:
        result = cli(*args, "--model", tiny_model, "--threads", 1)
        _ok(result)
        assert "\x1b" not in result.stdout and "\udcff" not in result.stdout, result.stdout
        assert "\\x1b]0;owned\\x07\\udcff" in result.stdout, result.stdout
    assert len(list(out.iterdir())) == 5


def test_interp_writes_one_row(cli, tiny_model: Path, birds: list[Path], out: Path) -> None:
    args = ("interp", birds[0], birds[1], "--steps", 5, "-o", out / "i.png", "--scale", 2)
    result = cli(*args, "--model", tiny_model, "--threads", 1)
    _ok(result)
    # photo A, 5 steps, photo B: 7 tiles of 32 px in one row.
    assert _png(out / "i.png").shape == (32 + 4, 7 * 32 + 8 * 2, 3)
    assert "i.png" in result.stdout


def test_a_figure_never_overwrites_a_photo_it_reads(cli, tiny_model: Path, birds, out: Path):
    photo = out / "photo.png"
    Image.open(birds[0]).save(photo)
    link = out / "link.png"
    link.symlink_to(photo)
    before = photo.read_bytes()
    for args in (("recon", birds[1], photo, "-o", photo), ("interp", birds[1], photo, "-o", link)):
        result = cli(*args, "--model", tiny_model, "--threads", 1)
        assert result.exit_code == 2, result.stdout
        assert "is one of the photos read" in result.stderr
    assert photo.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["link.png", "photo.png"]


def test_info(cli, tiny_model: Path) -> None:
    result = cli("info", "--model", tiny_model)
    _ok(result)
    text = result.stdout
    facts = ["16x16", "latent size  8", "coupled_logistic", "opset 17", "IR version 8"]
    facts += ["fitted: Gaussian mixture of 2 components", "standard: N(0, I)", "pixel noise 0"]
    facts += ["epochs: 0", "encoder.onnx"]
    facts += [str(tiny_model)]
    for fact in facts:
        assert fact in text, fact
    assert "card" not in text  # the test model has none


def test_info_lays_out_the_models_history_to_read_not_as_json(cli) -> None:
    """A group of figures (the int8 measurements per graph) is indented under its name, a
    group of plain values is one line of key=value pairs, and no line is a JSON object."""
    result = cli("info", "--model", "birds32")
    _ok(result)
    lines = result.stdout.splitlines()
    int8 = next(i for i, line in enumerate(lines) if line.endswith(" int8:"))
    decoder = next(line for line in lines[int8:] if line.lstrip().startswith("decoder:"))
    assert decoder.startswith(" " * 15 + "decoder: fp32_ms=") and "used=true" in decoder
    assert not [line for line in lines if ": {" in line]


def test_info_says_how_each_prior_was_made_and_whose_epochs_it_shows(cli) -> None:
    """The card's sampler facts (guidance, the built-in choice among draws) were in the manifest
    but not in info, and the source's epochs read as the whole model's training."""
    from birdvae.runtime.model import BirdVAE

    learned = BirdVAE.load("birds32").manifest.priors["learned"].source
    result = cli("info", "--model", "birds32")
    _ok(result)
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("priors       learned:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("             fitted:"))
    block = "\n".join(lines[start:end])
    assert "weight: " + str(learned["autoguidance"]["weight"]) in block
    assert f"best_of: k={learned['best_of']['k']}," in block
    source = next(line for line in lines if line.startswith("source "))
    assert source.endswith("the checkpoint exported, as its last training stage left it")


def test_info_outline_shows_deep_groups_as_json_past_its_depth():
    from birdvae.runtime.cli import MAX_OUTLINE_DEPTH, _outline

    deep: dict = {"leaf": 1}
    for level in range(MAX_OUTLINE_DEPTH + 2):
        deep = {f"g{level}": deep, "n": level}
    lines = _outline(deep)
    assert lines[0] == f"g{MAX_OUTLINE_DEPTH + 1}:" and lines[1].startswith("  g")
    assert lines[MAX_OUTLINE_DEPTH].startswith("  " * MAX_OUTLINE_DEPTH + "g")
    assert '{"' in lines[MAX_OUTLINE_DEPTH]  # what is deeper stays on its line, as JSON
    assert _outline({"empty": {}, "text": "a b", "none": None}) == [
        "empty: {}", "text: a b", "none: null"]  # fmt: skip
    tricky = _outline({"g": {"x": "1, used=true", "used": False}})  # a value that reads as pairs
    assert tricky == ['g: x="1, used=true", used=false']


def test_info_points_to_a_shipped_models_card(cli) -> None:
    from birdvae.runtime.model import shipped_model_dir

    result = cli("info", "--model", "birds64")
    _ok(result)
    card = shipped_model_dir("birds64") / "MODEL_CARD.md"
    assert result.stdout.splitlines()[-1] == f"card         {card}"
    assert card.read_text(encoding="utf-8").startswith("# birds64")


@pytest.mark.parametrize("command", [[], ["recon"], ["interp"], ["info"]])
def test_help(cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    _ok(result)
    assert "Usage:" in result.stdout and "--model" in result.stdout


def _damage_hash(model: Path, refresh) -> None:
    data = bytearray((model / DECODER_FILE).read_bytes())
    data[100] ^= 0xFF
    (model / DECODER_FILE).write_bytes(bytes(data))


def _corrupt_onnx(model: Path, refresh) -> None:
    (model / DECODER_FILE).write_bytes(b"this is not an onnx file at all")
    refresh(model)


def _bad_prior(model: Path, refresh) -> None:
    np.savez(model / MIXTURE_FILE, weights=np.ones(2), means=np.zeros((2, 5)), cholesky=np.ones(1))
    refresh(model)


def _bad_json(model: Path, refresh) -> None:
    (model / MANIFEST_FILE).write_text("{not json")


def _huge_integer(model: Path, refresh) -> None:
    """Valid JSON that Python's int() refuses (more than 4300 digits): a ValueError of its own."""
    text = (model / MANIFEST_FILE).read_text()
    (model / MANIFEST_FILE).write_text(text.replace('"opset": 17', '"opset": ' + "9" * 5000))


def _deep_source(model: Path, refresh) -> None:
    """A manifest whose free-text source nests 500 deep: it loaded, then info's copy of it
    ran out of Python's recursion."""
    text = (model / MANIFEST_FILE).read_text()
    deep = "[" * 500 + "]" * 500
    (model / MANIFEST_FILE).write_text(text.replace("{", f'{{"x": {deep}, ', 1))


def _no_prior(model: Path, refresh) -> None:
    manifest = json.loads((model / MANIFEST_FILE).read_text())
    manifest.update(priors={}, default_prior="standard")
    (model / MANIFEST_FILE).write_text(json.dumps(manifest))


# Each case: the arguments (with {model}, {out}, {bird}, {text} filled in), how to break the
# copied model first, and what its error line says. Every one must fail with status 2 and write
# nothing into {out}.
BAD_INPUTS = {
    "n-zero": ("--n 0 -o {out}/b.png", None, "0 is not in the range x>=1"),
    "n-negative": ("--n -3 -o {out}/b.png", None, "-3 is not in the range x>=1"),
    "n-huge-without-separate": ("--n 5000 -o {out}/b.png", None, "too many birds for one grid"),
    "batch-zero": ("--batch 0 -o {out}/b.png", None, "'--batch': 0 is not in the range"),
    "best-of-too-many": (
        "--best-of 17 -o {out}/b.png",
        None,
        "'--best-of': 17 is not in the range 1<=x<=16",
    ),
    "seed-negative": ("--seed -1 -o {out}/b.png", None, "'--seed': -1 is not in the range"),
    "temperature-negative": (
        "--temperature -1 -o {out}/b.png",
        None,
        "-1.0 is not in the range 0<=x<=10.0",
    ),
    "temperature-nan": ("--temperature nan -o {out}/b.png", None, "'nan' is not a finite number"),
    "noise-negative": ("--noise -0.5 -o {out}/b.png", None, "'--noise': -0.5 is not in the range"),
    "noise-without-pixel-scales": (
        "--noise 0.5 --model {mean_only} -o {out}/b.png",
        None,
        "has no pixel scales",
    ),
    "unknown-prior": ("--prior uniform -o {out}/b.png", None, "'uniform' is not one of"),
    "fitted-prior-missing": (
        "--prior fitted -o {out}/b.png",
        _no_prior,
        "has no fitted prior (it has: standard)",
    ),
    "output-is-a-directory": ("-o {out}", None, "is a directory"),
    "output-folder-missing": (
        "-o {out}/missing/b.png",
        None,
        "missing does not exist; make it first",
    ),
    "output-under-a-file": ("-o {text}/b.png", None, "notes.txt is not a folder"),
    "output-not-png": ("-o {out}/b.jpg", None, "the output must be a .png file"),
    "output-only-an-extension": (
        "-o {out}/.png",
        None,
        ".png: the output must be a .png file with a name before .png",
    ),
    "output-only-an-extension-in-capitals": (
        "-o {out}/.PNG",
        None,
        ".PNG: the output must be a .png file with a name before .png",
    ),
    "output-name-too-long": ("-o {out}/" + "a" * 250 + ".png", None, "the file name is too long"),
    "separate-and-output": (
        "--separate {out}/s -o {out}/b.png",
        None,
        "give either -o/--output or --separate, not both",
    ),
    "separate-is-a-file": ("--n 2 --separate {text}", None, "notes.txt' is a file"),
    "unknown-option": ("--colour red -o {out}/b.png", None, "No such option"),
    "unknown-command": ("paint -o {out}/b.png", None, "No such command 'paint'"),
    "count-as-command": ("64", None, "no command '64'; to draw 64 birds give bird-gen --n 64"),
    "count-as-command-after-n": ("--n 3 64", None, "No such command '64'"),
    "sampling-option-before-command": (
        "--n 3 info",
        None,
        "options before 'info' are for sampling (--n); give info's options after its name",
    ),
    "threads-before-a-command-without-them": ("--threads 1 info", None, "info takes no --threads"),
    "model-before-and-after-a-command": (
        "-m birds32 info -m birds64",
        None,
        "-m is given before 'info' and after it; give it once",
    ),
    "model-missing": ("--model {out}/no_model -o {out}/b.png", None, "no_model does not exist"),
    "manifest-hash-mismatch": (
        "-o {out}/b.png",
        _damage_hash,
        "decoder.onnx does not match its sha256",
    ),
    "manifest-not-json": ("-o {out}/b.png", _bad_json, "manifest.json is not valid JSON"),
    "manifest-huge-integer": (
        "-o {out}/b.png",
        _huge_integer,
        "holds a number of 5000 digits, longer than any a model has",
    ),
    "info-manifest-nested-deep": ("info", _deep_source, "nests its JSON more than 32 levels deep"),
    "info-manifest-huge-integer": (
        "info",
        _huge_integer,
        "holds a number of 5000 digits, longer than any a model has",
    ),
    "corrupt-onnx": (
        "-o {out}/b.png",
        _corrupt_onnx,
        "decoder.onnx is not a well-formed ONNX file",
    ),
    "bad-prior-file": (
        "-o {out}/b.png",
        _bad_prior,
        "prior.npz means has shape [2, 5], expected [2, 8]",
    ),
    "wrong-input-names": (
        "--model {wrong} -o {out}/b.png",
        None,
        "takes inputs ['latent'], the format needs ['z']",
    ),
    "separate-wrong-input-names": (
        "--model {wrong} --separate {out}/s",
        None,
        "takes inputs ['latent'], the format needs ['z']",
    ),
    "recon-unreadable-image": (
        "recon {text} -o {out}/r.png",
        None,
        "notes.txt: not a photo in a format bird-vae reads",
    ),
    "recon-missing-image": (
        "recon {bird} {out}/missing.jpg -o {out}/r.png",
        None,
        "missing.jpg: no such file",
    ),
    "recon-directory-as-image": (
        "recon {out} -o {out}/r.png",
        None,
        "is a folder; give the photos in it",
    ),
    "recon-no-images": ("recon -o {out}/r.png", None, "Missing argument 'IMAGES...'"),
    "recon-corrupt-onnx": (
        "recon {bird} -o {out}/r.png",
        _corrupt_onnx,
        "decoder.onnx is not a well-formed ONNX file",
    ),
    "recon-output-not-png": (
        "recon {bird} -o {out}/r.txt",
        None,
        "r.txt: the output must be a .png file",
    ),
    "interp-steps-one": (
        "interp {bird} {bird} --steps 1 -o {out}/i.png",
        None,
        "'--steps': 1 is not in the range 2<=x<=256",
    ),
    "interp-missing-image": (
        "interp {bird} {out}/missing.jpg -o {out}/i.png",
        None,
        "missing.jpg: no such file",
    ),
    "interp-one-image": ("interp {bird} -o {out}/i.png", None, "Missing argument 'B'"),
    "interp-wrong-input-names": (
        "interp {bird} {bird} --model {wrong} -o {out}/i.png",
        None,
        "takes inputs ['latent'], the format needs ['z']",
    ),
    "info-model-missing": ("info --model {out}/no_model", None, "no_model does not exist"),
    "info-hash-mismatch": ("info", _damage_hash, "decoder.onnx does not match its sha256"),
}


@pytest.mark.parametrize(("template", "damage", "says"), BAD_INPUTS.values(),
                         ids=BAD_INPUTS.keys())  # fmt: skip
def test_user_mistakes_end_in_one_error_line(
    cli,
    template,
    damage,
    says,
    model_copy,
    wrong_names_model,
    mean_only_model,
    birds,
    out,
    tmp_path,
    refresh_manifest,
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("a text file, not an image")
    if damage is not None:
        damage(model_copy, refresh_manifest)
    args = template.format(
        out=out, text=text, bird=birds[0], wrong=wrong_names_model, mean_only=mean_only_model
    ).split()
    if "--model" not in args:
        args += ["--model", str(model_copy)]
    result = cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit)  # not an escaped exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert says in lines[0], lines[0]  # the mistake the case makes, not another one
    assert "Traceback" not in result.stderr + result.stdout
    assert list(out.iterdir()) == [], "a failed command left files behind"


def test_errors_say_what_is_wrong_not_only_that_it_is(cli, tiny_model: Path, birds, out):
    """A model "folder" that is a photo, and a folder that takes no new files (/proc)."""
    one_error(cli("--model", birds[0], "-o", out / "b.png"), "is a file, not a folder")
    if Path("/proc/self").is_dir():
        result = cli("--n", 1, "--model", tiny_model, "-o", "/proc/birds.png")
        one_error(result, "/proc/birds.png", "does not take new files")
    assert list(out.iterdir()) == []


def test_common_mistakes_say_how_to_put_them_right(cli, tiny_model, birds, out, tmp_path):
    """A checkpoint or run folder of vae-train given as the model, a missing output folder, a
    folder or a HEIC photo given as a photo: each line says what to do."""
    run = tmp_path / "runs" / "vae32"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"a checkpoint")
    one_error(cli("--model", run / "best.pt", "-o", out / "b.png"),
              f"vae-export {run / 'best.pt'} -o my-model")  # fmt: skip
    one_error(cli("--model", run, "-o", out / "b.png"), "a vae-train run folder",
              f"vae-export {run / 'best.pt'} -o my-model")  # fmt: skip
    one_error(cli("--model", tiny_model, "-o", out / "new" / "b.png"),
              f"make it first (mkdir -p {out / 'new'})")  # fmt: skip
    one_error(cli("--model", tiny_model, "-o", out / "new dir" / "b.png"),
              f"make it first (mkdir -p '{out / 'new dir'}')")  # fmt: skip
    missing = cli("--model", tmp_path / "nowhere" / "best.pt", "-o", out / "b.png")
    assert "vae-export" not in one_error(missing, "does not exist")  # nothing to export
    one_error(cli("recon", birds[0].parent, "--model", tiny_model, "-o", out / "r.png"),
              "is a folder; give the photos in it")  # fmt: skip
    heic = tmp_path / "phone.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    one_error(cli("recon", heic, "--model", tiny_model, "-o", out / "r.png"),
              "not a photo in a format bird-vae reads (JPEG, PNG", "convert it to PNG")  # fmt: skip
    assert list(out.iterdir()) == []


def test_version(cli) -> None:
    from importlib.metadata import version

    result = cli("--version")
    _ok(result)
    assert result.stdout.strip() == f"bird-gen {version('bird-vae')}"


def test_a_long_grid_shows_its_progress_and_the_default_one_does_not(cli, tiny_model, out):
    common = ("--model", tiny_model, "--threads", 1, "--scale", 1)
    quiet = cli("--n", 64, *common, "-o", out / "small.png")
    _ok(quiet)
    assert quiet.stderr == ""
    long = cli("--n", 512, "--best-of", 2, *common, "-o", out / "long.png")
    _ok(long)
    assert "drawing birds" in long.stderr


def test_a_named_pipe_is_refused_as_a_photo_not_waited_on(
    cli, tiny_model: Path, out: Path, tmp_path: Path
) -> None:
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    import threading

    fifo = tmp_path / "bird.png"
    os.mkfifo(fifo)  # opening it would block until something writes to it
    waited = []

    def end_the_wait() -> None:  # a regression fails here instead of hanging the suite
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # only if a reader waits
            waited.append(True)
        except OSError:
            pass

    for args in (("recon", fifo), ("interp", fifo, fifo)):
        watchdog = threading.Timer(20, end_the_wait)
        watchdog.start()
        try:
            result = cli(*args, "-o", out / "r.png", "--model", tiny_model, "--threads", 1)
        finally:
            watchdog.cancel()
        assert not waited, "bird-gen opened the pipe and waited for a writer"
        assert result.exit_code == 2 and "is not a file but a pipe" in result.stderr
    assert list(out.iterdir()) == []


def test_a_shipped_name_says_when_it_hides_a_folder_of_that_name(
    cli, tiny_model: Path, out: Path, monkeypatch
) -> None:
    import shutil

    shutil.copytree(tiny_model, out / "birds64")
    monkeypatch.chdir(out)
    result = cli("info", "--model", "birds64")
    _ok(result)
    assert "64x64" in result.stdout and "give ./birds64" in result.stderr
    local = cli("info", "--model", "./birds64")
    _ok(local)
    assert "16x16" in local.stdout and local.stderr == ""


def test_an_output_link_is_checked_swept_and_written_at_its_target(
    cli, tiny_model: Path, out: Path
) -> None:
    real = out / "real"
    real.mkdir()
    dead = real / ".t.png.bvae-0000abcd.tmp"  # a killed bird-gen's, beside the target
    dead.write_bytes(b"half a png")
    (out / "l.png").symlink_to(Path("real") / "t.png")
    _ok(cli("--n", 4, "-o", out / "l.png", "--model", tiny_model, "--threads", 1))
    assert _png(real / "t.png").shape[2] == 3 and (out / "l.png").is_symlink()
    assert sorted(p.name for p in real.iterdir()) == ["t.png"]


def test_a_photo_from_an_open_descriptor_is_read(cli, tiny_model: Path, birds, out: Path):
    """Standard input and a shell's <(...) are descriptors already open: not refused as a
    named pipe is."""
    import os

    read_end, write_end = os.pipe()
    os.write(write_end, Path(birds[0]).read_bytes())
    os.close(write_end)
    try:
        result = cli("recon", f"/dev/fd/{read_end}", "-o", out / "r.png", "--model", tiny_model,
                     "--threads", 1)  # fmt: skip
    finally:
        os.close(read_end)
    _ok(result)
    assert (out / "r.png").is_file()


def test_best_of_keeps_one_bird_of_each_k_and_says_so(cli, tiny_model: Path, out: Path) -> None:
    common = ("--n", 4, "--scale", 1, "--seed", 3, "--model", tiny_model, "--threads", 1)
    _ok(cli(*common, "-o", out / "plain.png"))
    result = cli(*common, "--best-of", 4, "-o", out / "best.png")
    _ok(result)
    assert "best of 4" in result.stdout
    plain, best = _png(out / "plain.png"), _png(out / "best.png")
    assert plain.shape == best.shape and not np.array_equal(plain, best)


@pytest.mark.parametrize(
    ("best_of", "prior", "asked", "noted"),
    [({"k": 8}, "learned", 2, True), ({"k": 8}, "learned", 1, False),
     ({"k": 8}, "fitted", 2, False), ({"k": "8"}, "learned", 2, False),
     ({"k": 8.0}, "learned", 2, False), ({"k": 1}, "learned", 2, False),
     ("eight", "learned", 2, False), (None, "learned", 2, False)],
)  # fmt: skip
def test_best_of_over_a_sampler_that_chooses_already_is_noted(
    cli, model_copy: Path, out: Path, best_of, prior: str, asked: int, noted: bool
) -> None:
    """vae-export records a sampler's own choice in the manifest's free-form source; read
    only for a note, so anything else there is no note and no error. The fitted prior's
    source is given the same record: only the learned sampler's counts."""
    manifest = json.loads((model_copy / MANIFEST_FILE).read_text())
    for name in ("learned", "fitted"):
        manifest["priors"][name]["source"]["best_of"] = best_of
    (model_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    result = _ok(cli("--n", 2, "--best-of", asked, "--prior", prior, "--model", model_copy,
                     "--threads", 1, "-o", out / "b.png"))  # fmt: skip
    note = ("note: this model's sampler already keeps the best of 8 draws; --best-of 2 chooses "
            "again among those, at 2 times the work\n")  # fmt: skip
    assert result.stderr == (note if noted else "")


@pytest.mark.parametrize("command", ["sample", "recon", "interp"])
def test_an_output_bird_gen_did_not_write_is_replaced_only_with_force(
    cli, tiny_model: Path, birds: list[Path], out: Path, command: str
) -> None:
    """A user's file at -o (notes, a photo of their own saved as PNG) is never drawn over
    unasked; a PNG bird-gen wrote, an earlier run's, is replaced without --force."""
    args = {"sample": ("--n", 2), "recon": ("recon", *birds[:2]), "interp": ("interp", *birds[:2])}
    common = (*args[command], "--model", tiny_model, "--threads", 1)
    notes, photo = out / "notes.png", out / "photo.png"
    notes.write_text("my notes")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(photo)
    kept = photo.read_bytes()
    for target in (notes, photo):
        one_error(cli(*common, "-o", target), str(target), "bird-gen did not write it", "--force")
    assert notes.read_text() == "my notes" and photo.read_bytes() == kept
    replacing = f"wrote {photo} (replacing the file that was there): "
    assert _ok(cli(*common, "-o", photo, "--force")).stdout.count(replacing) == 1
    drawn = _png(photo)
    again = _ok(cli(*common, "-o", photo))  # now ours: a second run replaces it, and says so
    assert np.array_equal(_png(photo), drawn) and again.stdout.count(replacing) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.png", "photo.png"]
    fresh = _ok(cli(*common, "-o", out / "new.png")).stdout
    assert f"wrote {out / 'new.png'}: " in fresh and "replacing" not in fresh


def test_a_file_put_at_the_output_while_birds_are_drawn_is_kept(
    cli, tiny_model: Path, out: Path, monkeypatch
) -> None:
    from birdvae.runtime import cli as command

    target = out / "birds.png"
    real_grid = command.images.grid

    def grid_while_the_user_saves(*args, **kwargs):
        target.write_text("saved meanwhile")
        return real_grid(*args, **kwargs)

    monkeypatch.setattr(command.images, "grid", grid_while_the_user_saves)
    one_error(cli("--n", 2, "--model", tiny_model, "--threads", 1, "-o", target), "--force")
    assert target.read_text() == "saved meanwhile"
    real_encode = command.images.encode_png

    def encode_while_the_user_saves(pixels):  # the last moment before the rename
        target.write_text("saved later still")
        return real_encode(pixels)

    monkeypatch.setattr(command.images, "grid", real_grid)
    monkeypatch.setattr(command.images, "encode_png", encode_while_the_user_saves)
    target.unlink()
    one_error(cli("--n", 2, "--model", tiny_model, "--threads", 1, "-o", target), "--force")
    assert target.read_text() == "saved later still"
    assert sorted(p.name for p in out.iterdir()) == ["birds.png"]  # no temporary left


def test_only_pngs_bird_gen_wrote_read_as_its_own(tmp_path: Path) -> None:
    from birdvae.runtime import images

    ours = tmp_path / "ours.png"
    ours.write_bytes(images.encode_png(np.zeros((3, 2, 3), np.uint8)))
    with Image.open(ours) as image:
        assert image.info["Software"] == "bird-gen"  # a standard PNG text chunk
    pil = tmp_path / "pil.png"
    Image.new("RGB", (2, 3)).save(pil, pnginfo=None)
    short = tmp_path / "short.png"
    short.write_bytes(ours.read_bytes()[:40])
    assert images.written_by_bird_gen(ours)
    assert not any(map(images.written_by_bird_gen, (pil, short, tmp_path / "missing.png")))


@pytest.mark.parametrize("force", [False, True])
def test_a_bird_name_taken_while_separate_writes_is_not_written_over(
    cli, tiny_model: Path, out: Path, monkeypatch, force: bool
) -> None:
    """A file put at a bird's name after the folder was checked is refused without --force,
    and a link there is refused even with it: no bird is written through a link, out of the
    folder."""
    from birdvae.runtime import cli as command

    folder, notes = out / "birds", out / "notes.txt"
    notes.write_text("my notes")
    taken = folder / "bird_00001.png"
    real_encode = command.images.encode_png
    encoded = []

    def encode_while_the_user_saves(pixels):  # bird 1's own encode, after its name was read
        encoded.append(pixels)
        if len(encoded) == 2:
            taken.symlink_to(notes) if force else taken.write_text("saved meanwhile")
        return real_encode(pixels)

    monkeypatch.setattr(command.images, "encode_png", encode_while_the_user_saves)
    args = ("--n", 3, "--separate", folder, "--model", tiny_model, "--threads", 1)
    result = cli(*args, *(["--force"] if force else []))
    assert result.exit_code == 2 and "bird_00001.png" in result.stderr, result.stderr
    assert ("is a link" if force else "appeared while") in result.stderr
    assert "note: 1 of the 3 birds were written" in result.stderr  # not the user's file
    assert notes.read_text() == "my notes"
    if not force:
        assert taken.read_text() == "saved meanwhile"
    assert (folder / "bird_00000.png").is_file()  # the bird before it, whole


def test_more_photos_than_one_figure_holds_are_refused_before_any_is_read(
    cli, tiny_model, birds, tmp_path, monkeypatch
):
    """A recon figure is a grid of pairs; past MAX_FIGURE photos its PNG would be too large to
    write or look at. Refused before a photo is decoded or the model opened."""
    from birdvae.runtime import cli as bird_gen

    monkeypatch.setattr(bird_gen, "MAX_FIGURE", 2)
    out = tmp_path / "recon.png"
    one_error(cli("recon", *birds[:3], "--model", tiny_model, "-o", out),
              "3 photos are too many for one figure (at most 2)")  # fmt: skip
    assert not out.exists()
    assert cli("recon", *birds[:2], "--model", tiny_model, "-o", out).exit_code == 0
