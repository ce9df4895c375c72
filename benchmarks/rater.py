"""Fit the rater: a small network that predicts the score a blind rater gives a 32x32 picture.

    python benchmarks/rater.py runs/sheetsA runs/sheetsB ... [--out runs/rater32/rater.onnx]
    python benchmarks/rater.py runs/sheets* --check       # held-out agreement only, no file

Choosing the best of several draws needs a score of what a person calls a bird. Rules written by
hand (edges in the middle, a plain border: ``figure_ground`` below, the baseline ``--check``
prints) agree with raters only weakly, so this learns the score from the raters themselves:
every cell of every rated sheet (``benchmarks/rating.py``) is cut back out of the sheet and
paired with its rating, and a small CNN learns to predict the rating. The picture it sees is the
one the rater saw: each sheet shows 32x32 pictures at 112 px (nearest neighbour) and a cell cut
out is averaged back to 32x32, so the graph applies that same fixed blur (a 32x32 matrix each
side) before its convolutions. Three networks of different seeds are averaged, over each picture
and its mirror image, so that a choice among draws does not hang on one network's quirks.

``--check`` holds out a fifth of the distinct pictures at a time (a picture rated on several
sheets stays on one side) and prints how well the held-out predictions rank pictures of one
source on one sheet, against ``figure_ground``'s ranking: the agreement a choice among one
model's draws needs. Only sheets of 32x32 pictures belong here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features import augment
from rating import rated_sheets

from birdvae.export.onnx import METADATA_PREFIX, export_graph
from birdvae.export.parity import ort_session
from birdvae.runtime.format import DEFAULT_OPSET
from birdvae.runtime.selection import RATER_INPUT, RATER_OUTPUT, RATER_SIZE
from birdvae.training.rater import SHEET_TILE as TILE
from birdvae.training.rater import Rater, network

GAP, MARGIN = 6, 22  # rating_sheet.py's grid, around tiles of TILE px
EPOCHS = 40
SEEDS = 3
BATCH = 64
FOLDS = 5


def cells(folders: list[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every rated cell of the sheets in ``folders``: pictures uint8 [N, 3, 32, 32] as cut from
    the sheet, ratings float32 [N], and "folder:source" labels."""
    pictures, ratings, labels = [], [], []
    for folder in folders:
        for key_file, answer in rated_sheets(folder):
            key = json.loads(key_file.read_text())
            scores = json.loads(answer.read_text())
            sheet = Image.open(key_file.with_name(key_file.name.removesuffix(".key.json")))
            sheet = sheet.convert("RGB")
            for cell, source in key.items():
                if cell not in scores:
                    continue
                row, column = ord(cell[0]) - ord("A"), int(cell[1:]) - 1
                left, top = MARGIN + column * (TILE + GAP), MARGIN + row * (TILE + GAP)
                tile = sheet.crop((left, top, left + TILE, top + TILE))
                small = tile.resize((RATER_SIZE, RATER_SIZE), Image.BOX)
                pictures.append(np.asarray(small).transpose(2, 0, 1))
                ratings.append(float(scores[cell]))
                labels.append(f"{folder.name}:{source}:{answer.name}")
    if not pictures:
        sys.exit("error: no rated sheets (sheet-K.ratings.json) in the folders given")
    return np.stack(pictures), np.asarray(ratings, np.float32), labels


def train(pictures: np.ndarray, ratings: np.ndarray, seed: int, epochs: int = EPOCHS) -> nn.Module:
    """One network regressed on the ratings of the cells as cut (flips, shifts, jitter)."""
    net = network(seed)
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(pictures).float() / 255.0
    targets = torch.from_numpy(ratings)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - BATCH + 1, BATCH):
            rows = order[start : start + BATCH]
            loss = (net(augment(images[rows], generator)).squeeze(1) - targets[rows]).square()
            optimizer.zero_grad()
            loss.mean().backward()
            optimizer.step()
    return net.eval()


def rank_agreement(predicted: np.ndarray, ratings: np.ndarray, labels: list[str]) -> float:
    """Spearman's correlation of predicted and given ratings within each (sheet, source) of
    generated pictures, averaged with weights by cell count: how well it orders one model's
    pictures as one rater did."""
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if ":photos:" not in label:
            groups.setdefault(label, []).append(i)
    values, weights = [], []
    for rows in groups.values():
        if len(rows) >= 8 and ratings[rows].std() > 0:
            ranks = [average_ranks(a) for a in (predicted[rows], ratings[rows])]
            values.append(np.corrcoef(*ranks)[0, 1])
            weights.append(len(rows))
    return float(np.average(values, weights=weights))


def figure_ground(images: np.ndarray) -> np.ndarray:
    """The hand-written score the rater replaced, kept as the baseline ``--check`` prints: edges
    in the middle, few at the border, a middle whose colour differs from the border's."""
    gray = images.mean(axis=1)
    edges = np.zeros_like(gray)
    edges[:, :, :-1] += np.abs(np.diff(gray, axis=2))
    edges[:, :-1, :] += np.abs(np.diff(gray, axis=1))
    size = images.shape[-1]
    border = np.ones((size, size), bool)
    inset = max(1, size * 5 // 32)
    border[inset:-inset, inset:-inset] = False
    middle = np.zeros((size, size), bool)
    middle[size // 4 : size - size // 4, size // 4 : size - size // 4] = True
    contrast = np.linalg.norm(
        images[:, :, middle].mean(axis=2) - images[:, :, border].mean(axis=2), axis=1
    )
    return edges[:, middle].mean(axis=1) - edges[:, border].mean(axis=1) + 0.5 * contrast


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties given the mean of the ranks they share (ratings are mostly ties)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(group, weights=ranks)
    return sums[group] / counts[group]


def predict_cut(networks: list[nn.Module], pictures: np.ndarray) -> np.ndarray:
    """The networks' mean rating of cells as cut from sheets (already showing the sheet's
    blur, so not through ``Rater``, which adds it), over each cell and its mirror image."""
    with torch.no_grad():
        return Rater(networks).rate_shown(torch.from_numpy(pictures).float() / 255.0).numpy()


def check(pictures: np.ndarray, ratings: np.ndarray, labels: list[str]) -> None:
    """Held-out agreement of one network per fold, folds by distinct picture."""
    digests = [hashlib.sha256(p.tobytes()).hexdigest() for p in pictures]
    fold = np.array([int(d[:8], 16) % FOLDS for d in digests])
    predicted = np.zeros(len(pictures), np.float32)
    for k in range(FOLDS):
        held = fold == k
        predicted[held] = predict_cut([train(pictures[~held], ratings[~held], seed=k)],
                                      pictures[held])  # fmt: skip
        print(f"fold {k + 1}/{FOLDS} done", flush=True)
    floats = pictures.astype(np.float32) / 255.0
    print(f"{len(set(digests))} distinct pictures in {len(pictures)} rated cells")
    print(f"rank agreement within sheet and source, held out: rater "
          f"{rank_agreement(predicted, ratings, labels):.3f}, figure-ground "
          f"{rank_agreement(figure_ground(floats), ratings, labels):.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of rated 32x32 sheets")
    # Not the shipped file: its sha256 is pinned in the runtime and the page, which refuse any
    # other, so a refit there would stop --best-of until it is pinned (models/rater32's card).
    parser.add_argument("--out", type=Path, default=Path("runs/rater32/rater.onnx"))
    parser.add_argument("--check", action="store_true", help="held-out agreement only")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    pictures, ratings, labels = cells(args.folders)
    if len(pictures) < BATCH:
        sys.exit(f"error: {len(pictures)} rated cells, fewer than one batch of {BATCH}; rate more")
    print(f"{len(pictures)} rated cells from {len(args.folders)} folder(s); "
          f"mean rating {ratings.mean():.2f}")  # fmt: skip
    if args.check:
        check(pictures, ratings, labels)
        return
    started = time.perf_counter()
    rater = Rater([train(pictures, ratings, seed) for seed in range(SEEDS)]).eval()
    example = torch.rand(2, 3, RATER_SIZE, RATER_SIZE)
    # Only these two keys, as the pinned rater.onnx carries (graph_metadata would add versions).
    metadata = {f"{METADATA_PREFIX}graph": "rater",
                f"{METADATA_PREFIX}rated_cells": str(len(pictures))}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shapes = {RATER_INPUT: [3, RATER_SIZE, RATER_SIZE], RATER_OUTPUT: []}
    export_graph(
        rater, example, [RATER_INPUT], [RATER_OUTPUT], shapes, args.out, DEFAULT_OPSET, metadata
    )
    print(
        f"wrote {args.out} ({time.perf_counter() - started:.0f} s); parity against PyTorch "
        f"over 5 of the cells: largest difference {parity(rater, args.out, pictures[:5]):.1e}"
    )
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"its sha256, RATER_SHA256 in runtime/selection.py and web/src/selection.js: {digest}")


def parity(rater: nn.Module, path: Path, pictures: np.ndarray) -> float:
    """The largest difference between the graph's ratings (onnxruntime, opened as bird-gen
    opens it) and the module's."""
    images = pictures.astype(np.float32) / 255.0
    session = ort_session(path)
    (graph,) = session.run([RATER_OUTPUT], {RATER_INPUT: images})
    with torch.no_grad():
        module = rater(torch.from_numpy(images)).numpy()
    return float(np.abs(graph - module).max())


if __name__ == "__main__":
    main()
