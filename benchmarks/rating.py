"""Blind rating sheets of what a person sees, built with the shared rating tool.

    python benchmarks/rating.py make runs/sheets --images runs/rating-images \\
        photos=photos recon=birds32-recon new=birds32-samples old=shipped-samples [--sheets 3]
    python benchmarks/rating.py score runs/sheets [--versus new old]

``make`` writes ``sheet-K.png`` (and its key) for K = 1..sheets, each a shuffled grid of ``--n``
pictures of every source drawn with its own seed, from the folders ``benchmarks/birds.py
--save`` wrote. Show a rater only the PNG and rater_prompt.md (never a key or a folder name),
save the rater's JSON answer as ``sheet-K.ratings.json``, then ``score`` pools every rated
sheet into one table per source: the share rated 2 (clearly a bird at first glance), 1
(maybe) and the mean.

One sheet to the next moves a source's mean by up to 0.4 (the pictures drawn, the rater's
leniency), so ``score`` also gives each mean a 95% interval, and ``--versus A B`` the difference
of two sources' means with its interval: a bootstrap that resamples whole sheets, then the
cells of each source within a sheet, so both kinds of noise are in it. Two sources rated on
the same sheets share the rater, which the paired difference cancels. An interval that holds
0 says the sheets cannot tell the two apart.

The sheets are made and scored by the team's rating tool, ``rating_sheet.py``, with the prompt
raters are shown, ``rater_prompt.md``; both are kept outside this repository, in ``shared/tools/``
beside the clone (``--tool`` names another place).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "rating_sheet.py"


def make(out: Path, images: Path, sources: list[str], sheets: int, n: int, tool: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    specs = []
    for source in sources:
        label, _, folder = source.partition("=")
        specs.append(f"{label}={images / folder}")
    for sheet in range(1, sheets + 1):
        command = [sys.executable, str(tool), "make", str(out / f"sheet-{sheet}.png"), *specs,
                   "--n", str(n), "--seed", str(sheet)]  # fmt: skip
        subprocess.run(command, check=True)


Sheets = list[dict[str, list[int]]]  # per sheet: source label -> its cells' scores


def rated_sheets(out: Path) -> list[tuple[Path, Path]]:
    """(key, ratings) of every sheet in ``out`` that a rater has answered."""
    pairs = []
    for ratings in sorted(out.glob("sheet-*.ratings.json")):
        pairs.append((ratings.with_name(ratings.name.replace(".ratings.json", ".png.key.json")),
                      ratings))  # fmt: skip
    return pairs


def load_scores(pairs: list[tuple[Path, Path]]) -> Sheets:
    """Each sheet's scores grouped by source; a cell the rater skipped is left out."""
    sheets = []
    for key_file, ratings_file in pairs:
        key = json.loads(key_file.read_text())
        ratings = json.loads(ratings_file.read_text())
        by_source: dict[str, list[int]] = {}
        for cell, label in key.items():
            if cell in ratings:
                by_source.setdefault(label, []).append(int(ratings[cell]))
        sheets.append(by_source)
    return sheets


def bootstrap_means(
    sheets: Sheets, labels: list[str], draws: int = 4000, seed: int = 0
) -> np.ndarray:
    """[draws, len(labels)] means of each source over resampled sheets and, within each drawn
    sheet, resampled cells (the same sheets for every source, so differences stay paired)."""
    rng = np.random.default_rng(seed)
    means = np.zeros((draws, len(labels)))
    for d in range(draws):
        picked = rng.integers(len(sheets), size=len(sheets))
        for j, label in enumerate(labels):
            total = count = 0
            for i in picked:
                cells = sheets[i].get(label, [])
                if cells:
                    total += sum(cells[k] for k in rng.integers(len(cells), size=len(cells)))
                    count += len(cells)
            means[d, j] = total / count if count else np.nan
    return means


def interval(values: np.ndarray) -> tuple[float, float]:
    """The central 95% of ``values``."""
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def mean_score(sheets: Sheets, label: str) -> float:
    cells = [score for sheet in sheets for score in sheet.get(label, [])]
    return sum(cells) / len(cells)


def report_intervals(sheets: Sheets, versus: list[tuple[str, str]]) -> None:
    labels = sorted({label for sheet in sheets for label in sheet})
    missing = [label for pair in versus for label in pair if label not in labels]
    if missing:
        sys.exit(f"error: no source {missing[0]!r} on these sheets (sources: {', '.join(labels)})")
    means = bootstrap_means(sheets, labels)
    print(f"\nmean (0-2) with its 95% interval, {len(sheets)} sheet(s) resampled:")
    for j, label in enumerate(labels):
        low, high = interval(means[:, j])
        print(f"  {label:<24} {mean_score(sheets, label):.2f}  [{low:.2f}, {high:.2f}]")
    for a, b in versus:
        difference = means[:, labels.index(a)] - means[:, labels.index(b)]
        low, high = interval(difference)
        verdict = "cannot tell apart" if low <= 0 <= high else "apart"
        observed = mean_score(sheets, a) - mean_score(sheets, b)
        print(f"  {a} - {b}: {observed:+.2f}  [{low:+.2f}, {high:+.2f}]  {verdict}")


def score(out: Path, tool: Path, versus: list[tuple[str, str]]) -> None:
    pairs = rated_sheets(out)
    if not pairs:
        sys.exit(f"error: no sheet-K.ratings.json in {out}")
    print(f"{len(pairs)} rated sheet(s)")
    subprocess.run([sys.executable, str(tool), "score", *(f"{k}:{r}" for k, r in pairs)],
                   check=True)  # fmt: skip
    report_intervals(load_scores(pairs), versus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["make", "score"])
    parser.add_argument("out", type=Path, help="the folder of sheets, keys and ratings")
    parser.add_argument("sources", nargs="*", help="LABEL=FOLDER under --images (make)")
    parser.add_argument("--images", type=Path, default=Path("runs/rating-images"))
    parser.add_argument("--sheets", type=int, default=3)
    parser.add_argument("--n", type=int, default=20, help="pictures of each source per sheet")
    parser.add_argument("--tool", type=Path, default=TOOL, help="the shared rating_sheet.py")
    parser.add_argument(
        "--versus",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="(score) the difference of two sources' means, with its interval",
    )
    args = parser.parse_intermixed_args()
    if not args.tool.is_file():
        parser.error(
            f"no rating tool at {args.tool}: give --tool PATH, the team's rating_sheet.py (its "
            "rater_prompt.md beside it), kept outside this repository in shared/tools/"
        )
    if args.action == "make":
        for source in args.sources:
            label, _, folder = source.partition("=")
            if not label or not folder or not (args.images / folder).is_dir():
                parser.error(f"{source!r} is not LABEL=FOLDER with FOLDER a folder under "
                             f"--images {args.images}")  # fmt: skip
        make(args.out, args.images, args.sources, args.sheets, args.n, args.tool)
    else:
        score(args.out, args.tool, [tuple(pair) for pair in args.versus])


if __name__ == "__main__":
    main()
