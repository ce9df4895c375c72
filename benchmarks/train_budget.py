"""Training speed and quality of the default preset vs the blog baseline, for the same wall clock.

    python benchmarks/train_budget.py --data ../shared/data/cub-birds --minutes 3
    python benchmarks/train_budget.py --runs runs/birds32 runs/baseline32   # summarise runs

The first form trains each preset in turn for the same number of minutes (same threads), then
scores its EMA weights on the validation split; the second reads finished run folders.
Prints training images/s and the validation bits/dim and PSNR each reached, with ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from birdvae.training import checkpoint
from birdvae.training.config import override, preset
from birdvae.training.loop import Trainer
from birdvae.training.runfolder import BEST, METRICS
from birdvae.training.vae_stage import VAETrainer


def train_for(name: str, data: str, minutes: float, folder: Path) -> Path:
    """Train preset ``name`` until ``minutes`` of wall clock have passed; return its run folder."""
    config = override(preset(name), data=data, epochs=10_000)
    run = folder / name
    trainer = VAETrainer(config, run, log=lambda _: None)
    deadline = time.perf_counter() + minutes * 60

    def stop_at_deadline(t: Trainer) -> None:
        if time.perf_counter() > deadline:
            t.request_stop()

    trainer.fit(on_step=stop_at_deadline)
    return run


def summarise(run: Path) -> dict[str, float]:
    """Wall clock, throughput and the best validation figures recorded in a run folder."""
    records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    state = checkpoint.load(run / BEST)
    metrics = state["metrics"]
    seconds = sum(r["epoch_seconds"] for r in records)
    images = sum(r["items_per_s"] * r["epoch_seconds"] for r in records)
    return {
        "preset": state["config"]["preset"],
        "epochs": len(records),
        "train_minutes": seconds / 60,
        "items_per_s": images / max(seconds, 1e-9),
        "val_bpd": metrics["val_bpd"],
        "val_psnr": metrics["val_psnr"],
        "best_epoch": metrics["epoch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="image folder or CUB_200_2011 folder")
    parser.add_argument("--minutes", type=float, default=3.0, help="wall clock per preset")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--runs", nargs=2, type=Path, metavar=("DEFAULT_RUN", "BASELINE_RUN"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.runs:
        runs = list(args.runs)
    else:
        if not args.data:
            parser.error("--data is needed unless --runs is given")
        folder = Path(tempfile.mkdtemp(prefix="bird-vae-bench-"))
        runs = [
            train_for(name, args.data, args.minutes, folder) for name in ("default", "baseline")
        ]
    ours, base = (summarise(run) for run in runs)
    print(
        f"{'preset':<10}{'epochs':>8}{'minutes':>9}{'img/s':>9}{'val bits/dim':>14}{'PSNR dB':>9}"
    )
    for row in (ours, base):
        print(
            f"{row['preset']:<10}{row['epochs']:>8}{row['train_minutes']:>9.1f}"
            f"{row['items_per_s']:>9.0f}{row['val_bpd']:>14.3f}{row['val_psnr']:>9.2f}"
        )
    print(
        f"default vs baseline: {ours['items_per_s'] / base['items_per_s']:.2f}x images/s, "
        f"{base['val_bpd'] - ours['val_bpd']:+.3f} bits/dim better, "
        f"{ours['val_psnr'] - base['val_psnr']:+.2f} dB PSNR"
    )


if __name__ == "__main__":
    main()
