"""Blind rating sheets of what a person sees, built with the shared rating tool.

    python benchmarks/rating.py make runs/sheets --images runs/rating-images \\
        photos=photos recon=birds32-recon new=birds32-samples old=shipped-samples [--sheets 3]
    python benchmarks/rating.py score runs/sheets

``make`` writes ``sheet-K.png`` (and its key) for K = 1..sheets, each a shuffled grid of ``--n``
pictures of every source drawn with its own seed, from the folders ``benchmarks/birds.py
--save`` wrote. Show a rater only the PNG and rater_prompt.md (never a key or a folder name),
save the rater's JSON answer as ``sheet-K.ratings.json``, then ``score`` pools every rated
sheet into one table per source: the share rated 2 (clearly a bird at first glance), 1
(maybe) and the mean.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

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


def score(out: Path, tool: Path) -> None:
    pairs = []
    for ratings in sorted(out.glob("sheet-*.ratings.json")):
        key = ratings.with_name(ratings.name.replace(".ratings.json", ".png.key.json"))
        pairs.append(f"{key}:{ratings}")
    if not pairs:
        sys.exit(f"error: no sheet-K.ratings.json in {out}")
    print(f"{len(pairs)} rated sheet(s)")
    subprocess.run([sys.executable, str(tool), "score", *pairs], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["make", "score"])
    parser.add_argument("out", type=Path, help="the folder of sheets, keys and ratings")
    parser.add_argument("sources", nargs="*", help="LABEL=FOLDER under --images (make)")
    parser.add_argument("--images", type=Path, default=Path("runs/rating-images"))
    parser.add_argument("--sheets", type=int, default=3)
    parser.add_argument("--n", type=int, default=20, help="pictures of each source per sheet")
    parser.add_argument("--tool", type=Path, default=TOOL, help="the shared rating_sheet.py")
    args = parser.parse_intermixed_args()
    if args.action == "make":
        make(args.out, args.images, args.sources, args.sheets, args.n, args.tool)
    else:
        score(args.out, args.tool)


if __name__ == "__main__":
    main()
