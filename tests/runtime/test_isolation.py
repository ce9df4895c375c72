"""The runtime stands alone: bird-gen runs in a fresh process without importing torch, onnx or
the training and export packages; ``info`` and ``import birdvae.runtime`` skip onnxruntime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs bird-gen's entry point with the given arguments, then reports what got imported.
WRAPPER = """
import json, sys
from birdvae.runtime.cli import main
sys.argv = ["bird-gen", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    status = exc.code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""
FORBIDDEN = ("torch", "onnx", "birdvae.training", "birdvae.export")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _imported(*args: object, cwd: Path) -> tuple[int, set[str]]:
    argv = json.dumps([str(arg) for arg in args])
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, argv], cwd=cwd, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    return report["status"], set(report["modules"])


def _loaded(modules: set[str], package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in modules)


def test_sampling_and_recon_import_nothing_of_training(tiny_model: Path, birds, tmp_path) -> None:
    common = ("--model", tiny_model, "--threads", 1)
    status, modules = _imported("--n", 4, "-o", tmp_path / "b.png", *common, cwd=tmp_path)
    assert status == 0 and (tmp_path / "b.png").is_file()
    assert _loaded(modules, "onnxruntime")  # the check sees real imports
    assert [p for p in FORBIDDEN if _loaded(modules, p)] == []
    # Sampling reads no photo, so it does without PIL's import (start-up time), and the prior
    # avoids np.unique, which imports numpy.ma on first use (14 ms); numpy 1.x imports numpy.ma
    # itself, so only what the libraries' own imports do not bring counts.
    ours = modules - _modules_after("import numpy, onnxruntime, click", cwd=tmp_path)
    assert [p for p in ("PIL", "numpy.ma") if _loaded(ours, p)] == []
    status, modules = _imported("recon", *birds, "-o", tmp_path / "r.png", *common, cwd=tmp_path)
    assert status == 0 and (tmp_path / "r.png").is_file()
    assert _loaded(modules, "PIL")
    assert [p for p in FORBIDDEN if _loaded(modules, p)] == []


def test_info_imports_neither_onnxruntime_nor_pil(tiny_model: Path, tmp_path: Path) -> None:
    status, modules = _imported("info", "--model", tiny_model, cwd=tmp_path)
    assert status == 0
    assert [p for p in ("onnxruntime", "PIL", *FORBIDDEN) if _loaded(modules, p)] == []


def _modules_after(statement: str, cwd: Path) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_importing_the_runtime_is_cheap(tmp_path: Path) -> None:
    modules = _modules_after("import birdvae.runtime", cwd=tmp_path)
    assert [p for p in ("onnxruntime", "PIL", "click", *FORBIDDEN) if _loaded(modules, p)] == []


def test_console_script_end_to_end(tiny_model: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("bird-gen")
    if not script.is_file():
        pytest.skip(f"the bird-gen console script is not installed next to {sys.executable}")
    common = ["--n", "5", "--seed", "3", "--model", str(tiny_model), "--threads", "1"]
    for name in ("a.png", "b.png"):
        done = subprocess.run(
            [script, *common, "-o", name], cwd=tmp_path, env=ENV, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert name in done.stdout
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    done = subprocess.run(
        [script, "--n", "0"], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert len(done.stderr.splitlines()) == 1 and "bird-gen --help" in done.stderr


def test_default_model_from_the_command_line(tmp_path: Path) -> None:
    status, modules = _imported("--n", 4, "--threads", 1, cwd=tmp_path)
    assert status == 0 and (tmp_path / "birds.png").is_file()
    assert [p for p in FORBIDDEN if _loaded(modules, p)] == []
    status, _ = _imported("info", cwd=tmp_path)
    assert status == 0


def test_bird_gen_leaves_nothing_in_the_users_home(tmp_path: Path) -> None:
    """onnxruntime's official builds keep a telemetry device id under ~/.cache unless told not
    to; bird-gen tells them, so a run writes its PNG and nothing else."""
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    out.mkdir()
    env = {k: v for k, v in ENV.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(["--n", "2", "-o", str(out / "b.png")])],
        cwd=out, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [p.relative_to(home) for p in home.rglob("*")] == []
    assert [p.name for p in out.iterdir()] == ["b.png"]


def test_a_name_the_output_stream_cannot_encode_is_escaped(tiny_model: Path, tmp_path) -> None:
    """A cp1252 pipe (Windows) or a Latin-1 locale: the PNG was written, then the line saying so
    was a UnicodeEncodeError traceback."""
    env = {**ENV, "PYTHONIOENCODING": "cp1252"}
    done = subprocess.run(
        [sys.executable, "-c", "from birdvae.runtime.cli import main; main()", "--n", "2",
         "--model", str(tiny_model), "--threads", "1", "-o", "\u9ce5.png"],
        cwd=tmp_path, env=env, capture_output=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode("cp1252")
    assert b"wrote \\u9ce5.png" in done.stdout and (tmp_path / "\u9ce5.png").is_file()


def test_ctrl_c_while_the_command_is_imported_is_one_line(tiny_model: Path, tmp_path) -> None:
    """The first half second of every run is Python importing numpy and the command; a Ctrl-C
    there printed a traceback (or numpy's "initialization failed")."""
    interrupt_while_numpy_loads = """
import builtins, os, signal, sys
real_import = builtins.__import__
def importing(name, *args, **kwargs):
    if name == "numpy" and "numpy" not in sys.modules:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            return real_import(name, *args, **kwargs)
        except KeyboardInterrupt:  # as numpy's C code reports a Ctrl-C in its initialisation
            raise ImportError("initialization failed") from None
    return real_import(name, *args, **kwargs)
builtins.__import__ = importing
from birdvae.runtime.entry import main
main()
"""
    done = subprocess.run(
        [sys.executable, "-c", interrupt_while_numpy_loads, "--n", "2", "--model", str(tiny_model)],
        cwd=tmp_path, env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (130, "error: interrupted\n")
    assert list(tmp_path.iterdir()) == []
