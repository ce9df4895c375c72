"""benchmarks/rater.py: cells cut back out of a rated sheet are the pictures the rater saw, and
the rater it fits is a graph of the runtime's contract that agrees with PyTorch at any batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
rater = pytest.importorskip("rater")

pytestmark = pytest.mark.torch

COLS = 8


def write_rated_sheet(folder: Path, pictures: np.ndarray, ratings: list[int]) -> None:
    """A sheet laid out as the shared rating tool lays one out (112 px tiles, nearest), its key
    and a rater's answer."""
    rows = -(-len(pictures) // COLS)
    step = rater.TILE + rater.GAP
    sheet = Image.new("RGB", (rater.MARGIN + COLS * step, rater.MARGIN + rows * step), "white")
    key, answer = {}, {}
    for i, (picture, score) in enumerate(zip(pictures, ratings)):
        r, c = divmod(i, COLS)
        tile = Image.fromarray(picture.transpose(1, 2, 0)).resize((rater.TILE,) * 2, Image.NEAREST)
        sheet.paste(tile, (rater.MARGIN + c * step, rater.MARGIN + r * step))
        cell = f"{chr(65 + r)}{c + 1}"
        key[cell] = "photos" if i % 2 else "model"
        answer[cell] = score
    sheet.save(folder / "sheet-1.png")
    (folder / "sheet-1.png.key.json").write_text(json.dumps(key))
    (folder / "sheet-1.ratings.json").write_text(json.dumps(answer))


@pytest.fixture()
def rated(tmp_path):
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    ratings = rng.integers(0, 3, 20).tolist()
    write_rated_sheet(tmp_path, pictures, ratings)
    return tmp_path, pictures, ratings


def test_cells_are_the_pictures_as_the_sheet_showed_them(rated):
    folder, pictures, ratings = rated
    cut, scores, labels = rater.cells([folder])
    assert cut.shape == pictures.shape and scores.tolist() == ratings
    assert labels[0].startswith(f"{folder.name}:model:") and ":photos:" in labels[1]
    from birdvae.training.rater import sheet_view

    view = sheet_view()
    seen = view @ torch.from_numpy(pictures).float() @ view.T  # the blur the graph applies
    assert np.abs(cut.astype(np.float32) - seen.numpy()).max() <= 1.0  # PNG's whole levels
    assert np.abs(cut.astype(np.float32) - pictures).max() > 10  # the blur is not nothing


def test_average_ranks_share_ties():
    ranks = rater.average_ranks(np.array([2.0, 0.0, 2.0, 1.0, 0.0]))
    np.testing.assert_array_equal(ranks, [3.5, 0.5, 3.5, 2.0, 0.5])


def test_training_moves_the_network_toward_the_ratings(monkeypatch):
    """Bright pictures rated 2, dark ones 0: a few epochs learn to tell them apart."""
    monkeypatch.setattr(rater, "BATCH", 8)
    rng = np.random.default_rng(1)
    bright = rng.integers(150, 256, (16, 3, 32, 32), dtype=np.uint8)
    dark = rng.integers(0, 100, (16, 3, 32, 32), dtype=np.uint8)
    pictures = np.concatenate([bright, dark])
    ratings = np.float32([2] * 16 + [0] * 16)
    before = rater.predict_cut([rater.network(0).eval()], pictures)
    after = rater.predict_cut([rater.train(pictures, ratings, seed=0, epochs=15)], pictures)
    gap = lambda predicted: predicted[:16].mean() - predicted[16:].mean()  # noqa: E731
    assert gap(after) > 1.0 > abs(gap(before))


def test_the_fitted_rater_is_a_graph_the_runtime_opens_and_agrees_at_any_batch(rated, tmp_path):
    from birdvae.export.onnx import export_graph
    from birdvae.runtime.graphs import check_signature, open_session
    from birdvae.runtime.selection import RATER_INPUT, RATER_OUTPUT

    _, pictures, ratings = rated
    model = rater.Rater([rater.train(pictures, np.float32(ratings), seed=0, epochs=1)]).eval()
    path = tmp_path / "rater.onnx"
    shapes = {RATER_INPUT: [3, 32, 32], RATER_OUTPUT: []}
    export_graph(model, torch.rand(2, 3, 32, 32), [RATER_INPUT], [RATER_OUTPUT], shapes, path, 17,
                 {"birdvae.graph": "rater"})  # fmt: skip
    session = open_session(path.read_bytes(), path, threads=1)
    check_signature(session, path, RATER_INPUT, (3, 32, 32), (RATER_OUTPUT,))
    for batch in (1, 5, 20):  # traced at 2: no size may be frozen into the graph
        assert rater.parity(model, path, pictures[:batch]) < 1e-4


def test_cells_are_cut_where_the_shared_rating_tool_draws_them():
    """The rating tool lives outside this repository (benchmarks/rating.py): if its grid moved,
    the rater would quietly learn from misaligned cells."""
    import ast

    from rating import TOOL

    if not TOOL.is_file():
        pytest.skip(f"the shared rating tool is not at {TOOL}")
    grid = {}
    for node in ast.parse(TOOL.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple):
            names = [target.id for target in node.targets[0].elts]
            grid.update(zip(names, ast.literal_eval(node.value)))
    assert {name: grid.get(name) for name in ("TILE", "GAP", "MARGIN", "COLS")} == {
        "TILE": rater.TILE, "GAP": rater.GAP, "MARGIN": rater.MARGIN, "COLS": COLS,
    }  # fmt: skip
