"""The GPU paths, as a user runs them: the same commands as on a CPU but ``--device cuda``.

Skipped without a CUDA GPU (CI has none). Each test runs the real command lines in a
subprocess, so what is checked is what ``vae-train`` and ``vae-export`` do on a GPU box: bf16
autocast, channels-last, ``--compile``, one-process NCCL DDP, the prior and decoder stages,
``--resume``, and a GPU-trained checkpoint exported on the CPU with its parity proven.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from birdvae.training import checkpoint

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
    assert rows[-1]["val_bpd"] < rows[0]["val_bpd"]
    state = checkpoint.load(vae_run / "last.pt")
    config = checkpoint.config_of(state)
    assert (config.device, config.precision, config.compile) == (DEVICE, "bf16", True)
    # Weights saved from the GPU load on a machine without one.
    assert all(tensor.device.type == "cpu" for tensor in state["model"].values())


def test_the_prior_and_decoder_stages_run_on_the_gpu_and_export_with_parity(
    vae_run: Path, birds: Path, tmp_path: Path
):
    prior, decoder, model = tmp_path / "prior", tmp_path / "decoder", tmp_path / "model"
    _run("--data", birds, "-o", prior, "--stage", "prior", "--init", vae_run / "best.pt",
         "--epochs", "2", "--prior-width", "64", "--prior-blocks", "2",
         "--device", DEVICE)  # fmt: skip
    _run("--data", birds, "-o", decoder, "--stage", "decoder", "--init", prior / "best.pt",
         "--epochs", "2", "--device", DEVICE)  # fmt: skip
    assert len(_metrics(decoder)) == 2
    _run(decoder / "best.pt", "-o", model, code=EXPORT)
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["default_prior"] == "learned"
    assert manifest["source"]["parity"]["max_abs_diff"]["decoder.image"] <= 1e-4


def test_one_process_nccl_ddp_run(birds: Path, tmp_path: Path):
    run = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
                "--master-port", "29541"]  # fmt: skip
    _run("--data", birds, "-o", run, "--epochs", "1", "--device", DEVICE, *SMALL,
         launcher=launcher)  # fmt: skip
    state = checkpoint.load(run / "last.pt")
    assert state["epoch"] == 1 and len(_metrics(run)) == 1
