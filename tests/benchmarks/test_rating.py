"""The intervals of benchmarks/rating.py: paired differences of blind ratings, sheet by sheet."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import rating


def write_sheet(folder: Path, number: int, scores: dict[str, list[int]], skip: int = 0) -> None:
    """A sheet's key and a rater's answer, ``scores[label]`` in the cells of ``label``; the
    last ``skip`` cells go unanswered."""
    key, answer = {}, {}
    cells = [(label, score) for label, values in scores.items() for score in values]
    random.Random(number).shuffle(cells)
    for i, (label, score) in enumerate(cells):
        key[f"C{i}"] = label
        if i < len(cells) - skip:
            answer[f"C{i}"] = score
    (folder / f"sheet-{number}.png.key.json").write_text(json.dumps(key))
    (folder / f"sheet-{number}.ratings.json").write_text(json.dumps(answer))


def sheets_in(folder: Path) -> rating.Sheets:
    return rating.load_scores(rating.rated_sheets(folder))


def test_scores_are_grouped_by_source_and_skipped_cells_left_out(tmp_path):
    write_sheet(tmp_path, 1, {"a": [2, 2, 1], "b": [0, 1, 0]}, skip=2)
    [sheet] = sheets_in(tmp_path)
    assert sum(len(cells) for cells in sheet.values()) == 4
    assert set(sheet) <= {"a", "b"}


def test_a_source_rated_higher_on_every_sheet_is_apart_and_an_equal_one_is_not(tmp_path):
    rng = np.random.default_rng(0)
    for number in range(1, 5):
        same = rng.integers(0, 3, size=20).tolist()
        good, bad = rng.choice([1, 2], size=20).tolist(), rng.choice([0, 1], size=20).tolist()
        write_sheet(tmp_path, number, {"good": good, "bad": bad, "twin1": same, "twin2": same})
    sheets = sheets_in(tmp_path)
    labels = ["good", "bad", "twin1", "twin2"]
    means = rating.bootstrap_means(sheets, labels, draws=500)
    low, high = rating.interval(means[:, 0] - means[:, 1])
    assert 0.5 < low < high < 1.5
    low, high = rating.interval(means[:, 2] - means[:, 3])
    assert low < 0 < high


def test_the_interval_widens_when_the_sheets_disagree(tmp_path):
    calm, noisy = tmp_path / "calm", tmp_path / "noisy"
    for folder, shift in ((calm, [0, 0, 0, 0]), (noisy, [-1, 1, -1, 1])):
        folder.mkdir()
        for number, move in enumerate(shift, 1):
            base = [1] * 20
            write_sheet(folder, number, {"a": [min(2, max(0, v + move)) for v in base], "b": base})
    width = {}
    for folder in (calm, noisy):
        means = rating.bootstrap_means(sheets_in(folder), ["a", "b"], draws=500)
        low, high = rating.interval(means[:, 0])
        width[folder.name] = high - low
    assert width["calm"] == 0.0
    assert width["noisy"] > 0.5


def test_versus_an_unknown_source_is_refused_with_the_sources_named(tmp_path):
    write_sheet(tmp_path, 1, {"photos": [2, 2], "v8": [1, 0]})
    with pytest.raises(SystemExit, match=r"no source 'v9'.*photos, v8"):
        rating.report_intervals(sheets_in(tmp_path), [("v8", "v9")])


@pytest.mark.parametrize("source", ["photos=missing", "photos", "=photos"])
def test_make_refuses_a_source_that_is_not_a_folder_under_images(tmp_path, monkeypatch, capsys,
                                                                  source):  # fmt: skip
    """The sheets are not started (no traceback from the rating tool) when a source is no
    LABEL=FOLDER with a folder under --images."""
    (tmp_path / "images" / "photos").mkdir(parents=True)
    tool = tmp_path / "rating_sheet.py"
    tool.write_text("raise SystemExit('the tool must not run')")
    argv = ["rating.py", "make", str(tmp_path / "sheets"), source,
            "--images", str(tmp_path / "images"), "--tool", str(tool)]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as info:
        rating.main()
    assert info.value.code == 2
    assert f"{source!r} is not LABEL=FOLDER" in capsys.readouterr().err
    assert not (tmp_path / "sheets").exists()
