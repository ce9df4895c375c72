"""The best-of-K selector's training: a small MLP that learns, from a learned prior's noise
alone, how readily a person will call the bird that noise becomes a bird (the shipped rater's
score of it). ``vae-export --best-of K`` runs it on the prior it exports, then puts the MLP in
front of the sampler in ``prior.onnx`` (export/selector.py), so the choice among K candidates
costs one MLP run, not K decoded birds.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from birdvae.runtime.command import echo
from birdvae.runtime.selection import Rate

SELECTOR_WIDTH = 128
# Birds sampled, decoded and rated to teach the selector. The rater's score is a harder function
# of the noise than a pixel rule: on birds32 the held-out correlation went 0.62, 0.71, 0.75,
# 0.78 from 32k to 256k draws, and wider or deeper MLPs did not make up for fewer.
SELECTOR_DRAWS = 262144
SELECTOR_EPOCHS = 20
SELECTOR_LR = 2e-3
SELECTOR_WEIGHT_DECAY = 1e-4
HELD_OUT = 0.1
CHUNK = 512


@dataclass
class Selection:
    """A trained selector and how many candidates it chooses among."""

    selector: nn.Module
    k: int
    facts: dict[str, Any]


@torch.no_grad()
def scored_draws(
    sampler: nn.Module,
    decode: Any,
    rate: Rate,
    dim: int,
    draws: int,
    seed: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, np.ndarray]:
    """``draws`` noises as the runtime feeds the graph at ``temperature`` (standard normal times
    it), and the rater's score of the bird each becomes."""
    noise = temperature * torch.randn(draws, dim, generator=torch.Generator().manual_seed(seed))
    scores = []
    # Minutes of work: a bar on a terminal, a line at each tenth in a log (a CI job, nohup).
    on_terminal = sys.stderr.isatty()
    started, tenths = time.perf_counter(), 0
    with tqdm(total=draws, unit="bird", desc="rating draws", leave=False,
              disable=not on_terminal, dynamic_ncols=True, file=sys.stderr) as bar:  # fmt: skip
        for start in range(0, draws, CHUNK):
            chunk = noise[start : start + CHUNK]
            scores.append(rate(decode(sampler(chunk)).float().numpy()))
            bar.update(len(chunk))
            done = start + len(chunk)
            if not on_terminal and done * 10 // draws > tenths:
                tenths = done * 10 // draws
                echo(_progress_line(done, draws, time.perf_counter() - started), err=True)
    return noise, np.concatenate(scores).astype(np.float32)


def _progress_line(done: int, total: int, seconds: float) -> str:
    """``rating draws: 26,214 of 262,144 (10%), about 4 minutes left``."""
    left = seconds * (total - done) / done
    when = f"about {left / 60:.0f} minutes left" if left >= 90 else f"{left:.0f} s left"
    if done == total:
        when = f"{seconds:.0f} s in all"
    return f"rating draws: {done:,} of {total:,} ({done / total:.0%}), {when}"


def selector_mlp(dim: int) -> nn.Sequential:
    """The selector's network: a noise vector of ``dim`` numbers -> its bird's predicted score
    (Linear, SiLU, Linear, SiLU, Linear)."""
    return nn.Sequential(
        nn.Linear(dim, SELECTOR_WIDTH), nn.SiLU(),
        nn.Linear(SELECTOR_WIDTH, SELECTOR_WIDTH), nn.SiLU(),
        nn.Linear(SELECTOR_WIDTH, 1),
    )  # fmt: skip


def train_selector(noise: torch.Tensor, scores: np.ndarray, k: int, seed: int = 0) -> Selection:
    """An MLP from a noise vector to its bird's standardised score, trained on all but the last
    HELD_OUT of the draws; its facts hold the held-out correlation and how much of the true
    best of K's score gain its choice keeps."""
    target = torch.from_numpy((scores - scores.mean()) / scores.std())
    split = int(len(noise) * (1 - HELD_OUT))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        selector = selector_mlp(noise.shape[1])
    optimizer = torch.optim.AdamW(
        selector.parameters(), lr=SELECTOR_LR, weight_decay=SELECTOR_WEIGHT_DECAY
    )
    for _ in range(SELECTOR_EPOCHS):
        order = torch.randperm(split, generator=generator)
        for start in range(0, split, CHUNK):
            rows = order[start : start + CHUNK]
            loss = (selector(noise[rows]).squeeze(1) - target[rows]).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    selector.eval().requires_grad_(False)
    with torch.no_grad():
        predicted = selector(noise[split:]).squeeze(1).numpy()
    truth = target[split:].numpy()
    groups = len(truth) // k
    true_k = truth[: groups * k].reshape(groups, k)
    chosen = true_k[np.arange(groups), predicted[: groups * k].reshape(groups, k).argmax(1)]
    gain = true_k.max(1).mean() - true_k[:, 0].mean()
    facts = {
        "k": k,
        "score": "rater (models/rater32/rater.onnx)",
        "selector": f"MLP {noise.shape[1]}-{SELECTOR_WIDTH}-{SELECTOR_WIDTH}-1",
        "draws": len(noise),
        "held_out_correlation": round(float(np.corrcoef(predicted, truth)[0, 1]), 3),
        "share_of_best_of_k_gain": round(float((chosen.mean() - true_k[:, 0].mean()) / gain), 3),
    }
    return Selection(selector, k, facts)
