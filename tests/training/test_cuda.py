"""The GPU paths, as a user runs them: the same commands as on a CPU but ``--device cuda``.

Skipped without a CUDA GPU (CI has none). The tests run the real command lines in a subprocess,
so what is checked is what ``vae-train`` and ``vae-export`` do on a GPU box: bf16 autocast,
channels-last, ``--compile`` and ``--resume``; the prior stage; the decoder stage past the start
of its adversarial term, with the perceptual and projected terms on and its prior draws
autoguided; a GPU-trained checkpoint exported on the CPU with its parity proven; NCCL DDP where
there are two GPUs; and random draws that do not depend on the device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from birdvae.training import checkpoint, codes

from .conftest import write_images

# A CPU stands in only to check this file itself: BIRDVAE_TEST_DEVICE=cpu pytest this_file.
DEVICE = os.environ.get("BIRDVAE_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"
)
EXPORT = "from birdvae.export.cli import main; main()"

SMALL = ["--latent-dim", "16", "--decoder-width", "16", "--decoder-max-width", "32",
         "--batch-size", "16", "--seed", "0"]  # fmt: skip


def _run(*args: object, launcher: list[str] | None = None, code: str | None = None):
    """``vae-train ARGS`` (or ``vae-export ARGS`` given its ``code``) in a fresh process."""
    entry = ["-c", code] if code else ["-m", "birdvae.training"]
    command = [*(launcher or [sys.executable]), *entry, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def birds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gpu") / "birds"
    write_images(root / "a", 40, size=40, seed=1)
    write_images(root / "b", 40, size=40, seed=2)
    return root


@pytest.fixture(scope="module")
def vae_run(birds: Path, tmp_path_factory) -> Path:
    """Two epochs on the GPU in bf16, compiled, then a resume to a third."""
    run = tmp_path_factory.mktemp("gpu") / "vae"
    done = _run("--data", birds, "-o", run, "--epochs", "2", "--device", DEVICE,
                "--precision", "bf16", "--compile", *SMALL)  # fmt: skip
    assert DEVICE in done.stdout + done.stderr
    _run("--resume", run, "--epochs", "3")
    return run


def test_a_compiled_bf16_run_trains_and_resumes_on_the_gpu(vae_run: Path):
    rows = _metrics(vae_run)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(row["val_bpd"])) for row in rows)
    config = checkpoint.config_of(checkpoint.load(vae_run / "last.pt"))
    assert (config.device, config.precision, config.compile) == (DEVICE, "bf16", True)


def test_the_prior_and_decoder_stages_run_on_the_gpu_and_export_with_parity(
    vae_run: Path, birds: Path, tmp_path: Path
):
    prior, guide = tmp_path / "prior", tmp_path / "guide"
    decoder, model = tmp_path / "decoder", tmp_path / "model"
    for run, width in ((prior, "64"), (guide, "32")):
        _run("--data", birds, "-o", run, "--stage", "prior", "--init", vae_run / "best.pt",
             "--epochs", "2", "--prior-width", width, "--prior-blocks", "2",
             "--device", DEVICE)  # fmt: skip
    # 72 photos in batches of 8 for 25 epochs: 225 steps, past the adversarial term's start (200).
    _run("--data", birds, "-o", decoder, "--stage", "decoder", "--init", prior / "best.pt",
         "--epochs", "25", "--batch-size", "8", "--perceptual-weight", "0.1",
         "--projected-weight", "0.1", "--prior-guide", guide / "best.pt", "--device",
         DEVICE)  # fmt: skip
    last = _metrics(decoder)[-1]
    assert last["epoch"] == 25 and last["gan_on"] == 1.0
    assert json.loads((decoder / "config.json").read_text())["sharpen"]["guidance"] == 3.5
    assert all(torch.isfinite(torch.tensor(last[key])) for key in ("train_g_loss", "val_bpd"))
    _run(decoder / "best.pt", "-o", model, "--prior-guide", guide / "best.pt", code=EXPORT)
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["default_prior"] == "learned"
    assert manifest["priors"]["learned"]["source"]["autoguidance"]["weight"] == 3.5
    assert manifest["source"]["parity"]["max_abs_diff"]["decoder.image"] <= 1e-4


@pytest.mark.skipif(
    DEVICE != "cuda" or torch.cuda.device_count() < 2, reason="NCCL DDP needs two GPUs"
)
def test_a_two_gpu_nccl_ddp_run(birds: Path, tmp_path: Path):
    run = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2"]  # fmt: skip
    done = _run("--data", birds, "-o", run, "--epochs", "1", "--device", DEVICE, *SMALL,
                launcher=launcher)  # fmt: skip
    assert "x 2 processes" in done.stdout
    state = checkpoint.load(run / "last.pt")
    assert state["epoch"] == 1 and len(_metrics(run)) == 1


def test_random_draws_do_not_depend_on_the_device():
    """A seed gives the same views and code draws on the GPU as on the CPU (so a prior and its
    guide trained on different devices standardise codes with the same draws), and leaves the
    GPU's own random stream alone."""
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    bank = torch.randn(6, 2, 4)
    gpu = torch.device(DEVICE)
    torch.manual_seed(123)
    before = torch.rand(4, device=gpu)
    torch.manual_seed(123)
    views = torch.cat(list(codes.each_view(images.to(gpu), 4, 2, seed=7)))
    after = torch.rand(4, device=gpu)
    assert torch.equal(before, after)
    assert torch.equal(views.cpu(), torch.cat(list(codes.each_view(images, 4, 2, seed=7))))
    on_gpu = codes.draw(bank.to(gpu), torch.Generator().manual_seed(3))
    on_cpu = codes.draw(bank, torch.Generator().manual_seed(3))
    assert torch.allclose(on_gpu.cpu(), on_cpu, rtol=1e-5, atol=1e-6)  # exp may differ by an ulp
