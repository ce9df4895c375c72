"""A run folder's records, kept consistent with ``last.pt`` whatever moment a crash strikes.

``last.pt`` is the commit record of an epoch: it is written first, atomically, and carries the
epoch's metrics line and which epoch's weights are the best (``best_epoch``). ``best.pt``,
``metrics.jsonl`` and the grids are then derived from it by ``bring_up_to_date``, which is
idempotent: the end of every epoch runs it, and so does every resume, where it replays whatever
a kill cut off. A crash before ``last.pt`` is renamed into place loses the epoch as a whole; the
resume trains it again.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from birdvae.runtime import durable
from birdvae.runtime.errors import UserError
from birdvae.runtime.format import ModelFormatError, verify_model_dir

from . import checkpoint
from .config import RESUMABLE_FIELDS, TrainConfig, read_config_text
from .data import CACHE_FILE_PATTERN

LAST, BEST, METRICS, CONFIG = "last.pt", "best.pt", "metrics.jsonl", "config.json"
GRIDS, CACHE = "grids", "cache"
_RUN_NAMES = frozenset({LAST, BEST, METRICS, CONFIG, GRIDS, CACHE})  # what a run writes into
# Fields every version of config.json a run writes has (version 1 had no config_version).
# A run writes about 1 KB a line, one line an epoch: larger is no run's, and is not read.
MAX_METRICS_BYTES = 64 << 20
RUN_CONFIG_KEYS = frozenset({"model", "data", "epochs", "batch_size", "lr", "seed"})
# What a run writes inside grids/ after each last.pt (grid_file names them); cache/'s names are
# training/data.py's.
_GRID_NAME = re.compile(r"(recon|samples)_\d{4,}\.png")


def grid_file(run_dir: Path, kind: str, epoch: int) -> Path:
    """Where the training grid of ``kind`` (samples, recon) after ``epoch`` is written."""
    return run_dir / GRIDS / f"{kind}_{epoch:04d}.png"


def check_new_run_folder(run_dir: Path) -> None:
    """Refuse to start a new run in ``run_dir`` unless it is absent, empty, or what a run of
    ours left when it was stopped before its first ``last.pt`` (``config.json``, ``cache/``, an
    empty ``grids/``): a run rewrites ``config.json``, ``best.pt`` and ``metrics.jsonl`` whole,
    and its grids, so a user's files of those names would be lost."""
    check_not_a_link(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"-o/--output {run_dir} exists and is not a folder")
    if not run_dir.exists():
        above = next(folder for folder in run_dir.absolute().parents if folder.exists())
        if not above.is_dir():  # found before the photos are decoded, not when the cache is
            raise UserError(f"-o/--output {run_dir}: {above} is not a folder")
        return
    if (run_dir / LAST).exists():
        raise UserError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} "
            "or choose another -o/--output"
        )
    foreign = [entry for entry in sorted(run_dir.iterdir())
               if not _left_by_a_run(entry, grids_written=False)]  # fmt: skip
    grids = run_dir / GRIDS
    if grids in foreign and grids.is_dir() and not grids.is_symlink():
        inside = [p for p in sorted(grids.iterdir()) if not durable.TMP_PATTERN.fullmatch(p.name)]
        pictures = ", ".join(f"{GRIDS}/{p.name}" for p in inside[:3])
        raise UserError(f"refusing to train into {run_dir}: it holds {pictures}, which no run "
                        "writes before its first last.pt; choose another -o/--output")  # fmt: skip
    _refuse_foreign(foreign, f"refusing to train into {run_dir}", "choose another -o/--output")


def _refuse_foreign(foreign: list[Path], refusing: str, advice: str) -> None:
    """One line naming the first few of ``foreign``, files vae-train did not write, if any;
    ``{it}`` in ``advice`` says "it" or "them" by their number."""
    if foreign:
        shown = ", ".join(entry.name for entry in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise UserError(f"{refusing}: it holds {shown}{more}, which vae-train did not write; "
                        f"{advice.format(it='it' if len(foreign) == 1 else 'them')}")  # fmt: skip


# The temporaries of the run's records before they carried durable's tag (.last.pt.1a2b3c4d.tmp):
# a run killed under that version left them, and only that version would sweep them.
_OLD_TEMPORARY = re.compile(r"\.(last\.pt|best\.pt|metrics\.jsonl|config\.json)\.[a-z0-9_]{8}\.tmp")


def check_resume_folder(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume in ``run_dir`` unless everything there is this run's own: the resume
    rewrites ``config.json``, ``best.pt`` and ``metrics.jsonl`` whole, so a user's file of one
    of those names, or another run's (a ``last.pt`` copied in from elsewhere), would be lost.
    ``config`` is the one in ``last.pt``."""
    records = (LAST, BEST, METRICS)  # checked below, by what they hold
    entries = sorted(run_dir.iterdir())

    def ours(entry: Path) -> bool:
        return (entry.name in records or _left_by_a_run(entry, grids_written=True)
                or _OLD_TEMPORARY.fullmatch(entry.name) is not None
                or _is_model_folder(entry) or _left_by_an_export(entry))  # fmt: skip

    # (a live run's temporary renamed meanwhile is gone, not foreign; that run's lock refuses
    # this resume later with its own message)
    foreign = [e for e in entries if not ours(e) and (e.exists() or e.is_symlink())]
    for name in (BEST, METRICS):
        entry = run_dir / name
        if entry.is_symlink() or (entry.exists() and not entry.is_file()):
            foreign.append(entry)
    _refuse_foreign(foreign, f"refusing to resume in {run_dir}", "move {it} out of the folder")
    mine = _comparable(config)
    if (run_dir / CONFIG).exists() and _comparable(TrainConfig.load(run_dir / CONFIG)) != mine:
        raise UserError(
            f"refusing to resume in {run_dir}: its {LAST} is another run's than its {CONFIG} "
            "(copied in from another folder?); resume the folder the run wrote"
        )
    if (run_dir / BEST).exists():
        try:
            best = checkpoint.config_of(checkpoint.load(run_dir / BEST))
        except checkpoint.CheckpointError as exc:
            raise UserError(
                f"refusing to resume in {run_dir}: its {BEST} is not this run's checkpoint "
                f"({exc}); move it out of the folder"
            ) from exc
        if _comparable(best) != mine:
            raise UserError(
                f"refusing to resume in {run_dir}: its {BEST} is another run's than its {LAST}; "
                "move it out of the folder"
            )
    if not _holds_only_records(run_dir / METRICS):
        raise UserError(
            f"refusing to resume in {run_dir}: its {METRICS} holds lines vae-train did not "
            "write; move it out of the folder"
        )


def _comparable(config: TrainConfig) -> dict[str, Any]:
    """A config's fields but those --resume may change."""
    values = config.to_dict()
    return {key: value for key, value in values.items() if key not in RESUMABLE_FIELDS}


def _holds_only_records(path: Path) -> bool:
    """Whether ``path`` is absent, or holds only metrics lines (JSON objects with an epoch) but
    for a last one cut short by a crash (runs of an earlier version appended their lines). A
    line cut short has no newline, and follows records: a whole line of a user's after them,
    or a file of one line alone, is the user's."""
    if not path.exists():
        return True
    try:
        if path.stat().st_size > MAX_METRICS_BYTES:
            return False
        text = path.read_text(errors="replace")
    except OSError:
        return False
    lines = text.splitlines()
    if len(lines) > 1 and not text.endswith("\n") and _record(lines[-1]) is None:
        lines = lines[:-1]
    return all(_record(line) is not None for line in lines)


def _record(line: str) -> dict[str, Any] | None:
    """The metrics record ``line`` holds (a JSON object with an integer epoch), or None if it
    holds none (a line cut short by a crash, or a hand-edited one past what JSON's reader
    takes: nested too deep, a number of more digits than Python converts)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    return record if isinstance(record, dict) and isinstance(record.get("epoch"), int) else None


def is_cache_file(entry: Path) -> bool:
    """Whether ``entry`` is an image cache a run wrote (not a temporary, a link or a folder)."""
    named = CACHE_FILE_PATTERN.fullmatch(entry.name)
    return bool(named) and entry.is_file() and not entry.is_symlink()


def check_not_a_link(run_dir: Path) -> None:
    """Refuse a run folder given as a symbolic link: a run holds an flock on the folder itself,
    taken without following links, so that the lock and the files are in one place."""
    if run_dir.is_symlink():
        raise UserError(f"{run_dir} is a symbolic link; give the run folder itself")


def _is_model_folder(entry: Path) -> bool:
    """Whether ``entry`` is a whole model folder (vae-export writes one into the run folder
    unless told otherwise, ``model/``): a resume writes nothing inside it, so it may stay."""
    if entry.name in _RUN_NAMES or entry.is_symlink() or not entry.is_dir():
        return False
    try:
        verify_model_dir(entry, check_hashes=False)  # its files as listed, none read whole
    except (ModelFormatError, OSError):
        return False
    return True


def _left_by_an_export(entry: Path) -> bool:
    """Whether ``entry`` is what a killed vae-export into a folder of the run (``model/`` by
    default) left: its staging folder, or the old model renamed aside. A resume writes nothing
    inside it, and the next export into that folder clears it away or puts the old model back."""
    return (durable.STAGING_PATTERN.fullmatch(entry.name) is not None
            and entry.is_dir() and not entry.is_symlink())  # fmt: skip


def _left_by_a_run(entry: Path, grids_written: bool) -> bool:
    """Whether ``entry`` is a run's own: its config, its cache, its grids (finished ones only
    where ``grids_written``) or a temporary of its writes."""
    if entry.is_symlink():
        return False
    if entry.name == CONFIG and entry.is_file():
        try:
            values = json.loads(read_config_text(entry))
            if not isinstance(values, dict):
                return False
            TrainConfig.from_dict(values)
        except (OSError, ValueError, TypeError, OverflowError, RecursionError):
            return False  # a hostile file (1e400 where an int goes, nesting 10,000 deep) too
        # A run writes every field; ``{}`` or a few known keys would load as the defaults.
        return values.keys() >= RUN_CONFIG_KEYS
    if entry.name in (GRIDS, CACHE) and entry.is_dir():
        if entry.name == CACHE:
            finished: re.Pattern[str] | None = CACHE_FILE_PATTERN
        else:  # no grid is written before the first last.pt
            finished = _GRID_NAME if grids_written else None
        return all(
            not inner.is_symlink()
            and ((finished is not None and finished.fullmatch(inner.name))
                 or durable.TMP_PATTERN.fullmatch(inner.name))
            for inner in entry.iterdir()
        )  # fmt: skip
    return durable.TMP_PATTERN.fullmatch(entry.name) is not None and entry.is_file()


def sweep(run_dir: Path) -> list[Path]:
    """Remove the temporaries a killed run left (``.last.pt.*.tmp`` and the like)."""
    removed = durable.sweep_temporaries(run_dir, {LAST, BEST, METRICS, CONFIG})
    removed += durable.sweep_temporaries(run_dir / GRIDS, _Suffix(".png"))
    removed += durable.sweep_temporaries(run_dir / CACHE, _Suffix(".npz"))
    return removed


class _Suffix:
    """Any file name with this suffix, as a container for ``sweep_temporaries``."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.endswith(self.suffix) and "/" not in name


def commit_epoch(run_dir: Path, state: dict[str, Any]) -> list[str]:
    """Write ``last.pt`` (the commit point), then the records derived from it."""
    checkpoint.save_atomic(state, run_dir / LAST)
    return bring_up_to_date(run_dir, state)


def bring_up_to_date(run_dir: Path, state: dict[str, Any]) -> list[str]:
    """Make ``best.pt`` and ``metrics.jsonl`` agree with ``state`` (the one in ``last.pt``);
    returns the names of the files it had to write."""
    written = []
    at_boundary = int(state["batch_in_epoch"]) == 0
    if at_boundary and state["best_epoch"] == state["epoch"] and not _holds(run_dir, state):
        durable.copy_atomic(run_dir / LAST, run_dir / BEST)
        written.append(BEST)
    if _add_metrics_line(run_dir / METRICS, state["metrics"], int(state["epoch"])):
        written.append(METRICS)
    return written


def _holds(run_dir: Path, state: dict[str, Any]) -> bool:
    """Whether ``best.pt`` is a sound checkpoint of the same epoch and step as ``state``."""
    if not (run_dir / BEST).is_file():
        return False
    try:
        best = checkpoint.load(run_dir / BEST)
    except checkpoint.CheckpointError:
        return False
    return (best["epoch"], best.get("step")) == (state["epoch"], state.get("step"))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a line cut short by a crash is left out."""
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    return [record for record in map(_record, lines) if record is not None]


def _add_metrics_line(path: Path, record: dict[str, Any], completed: int) -> bool:
    """Rewrite ``metrics.jsonl`` (atomically) with one line per completed epoch up to
    ``completed``, ``record`` included; False when it already was so."""
    old = read_metrics(path)
    kept = [line for line in old if line["epoch"] <= completed]
    epochs = {line["epoch"] for line in kept}
    if isinstance(record.get("epoch"), int) and record["epoch"] not in epochs:
        kept.append(record)
    text = "".join(json.dumps(line) + "\n" for line in kept)
    if path.is_file() and path.read_text(errors="replace") == text:
        return False
    if not kept and not path.exists():
        return False
    durable.write_bytes_atomic(path, text.encode())
    return True


@contextlib.contextmanager
def one_cache_for_this_run(run_dir: Path, writer: bool) -> Iterator[None]:
    """The run folder's image cache as the run is set up: a run refused once its photos are
    decoded (a flag its --init cannot serve, a batch larger than the data, a resume whose photos
    changed), or whose cache cannot be written, removes the cache and folders it made, and
    what was there before stays; a run that goes on with a cache it wrote anew (its photos
    touched since) removes the ones it replaces, each a full copy of the decoded photos. A run
    stopped while it decodes or writes the cache removes the folders it made that are still
    empty. Only the process that writes the cache (``writer``: rank 0 under torchrun) touches
    it."""
    run_dir = Path(run_dir).absolute()
    made = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    cache = run_dir / CACHE
    if not cache.is_dir():
        made.insert(0, cache)

    def caches() -> set[Path]:
        if not cache.is_dir():
            return set()
        return {entry for entry in cache.iterdir() if is_cache_file(entry)}

    def remove(entries: set[Path]) -> None:
        for entry in entries:
            with contextlib.suppress(OSError):
                entry.unlink()

    def remove_empty_folders() -> None:
        for folder in made:  # deepest first; a folder that holds anything stays
            with contextlib.suppress(OSError):
                folder.rmdir()

    before = caches()
    try:
        yield
    except (UserError, OSError):  # OSError: a full disk or a folder that cannot be written
        if writer:
            remove(caches() - before)
            remove_empty_folders()
        raise
    except BaseException:  # stopped (Ctrl-C, SIGTERM): a cache written whole saves the rerun
        if writer:  # decoding the photos again, so only the folders left empty go
            remove_empty_folders()
        raise
    if writer and caches() - before:
        remove(before)
