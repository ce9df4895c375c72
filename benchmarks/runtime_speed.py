"""Runtime speed of the exported decoder against the blog baseline and PyTorch eager.

    python benchmarks/runtime_speed.py --baseline runs/baseline32/model \\
        --checkpoint runs/birds32/best.pt --runtime-env /tmp/rtenv [--model DIR] [--repeats 20]

Run it from the repository root in the training venv (it imports onnx, and torch when
``--checkpoint`` is given). ``--model`` defaults to the shipped model; ``--runtime-env`` is a
venv made with ``pip install .`` (runtime only), and ``--torch-env`` defaults to this venv.
Everything is measured in one run on this machine and printed side by side:

0. sampling 64 birds with 2 onnxruntime threads: each prior alone, and prior + decoder (the
   model's default pixel noise), against the 25 ms goal;
1. decoding 64 birds (median ms): default and baseline under onnxruntime through
   ``birdvae.runtime.BirdVAE`` (onnxruntime's default threads: one per physical core), and the
   default model in PyTorch eager (``torch.no_grad``, the same number of threads);
2. birds per second at batch 1, 64 and 1024 for default and baseline;
3. each decoder's FLOPs per bird, counted from its ONNX graph, and the share of this CPU's peak
   fp32 rate (a 4096x4096 float32 matrix product) it reaches at batch 64 and 1024;
4. the whole ``bird-gen --n 64 -o birds.png`` process: wall time, peak memory, import time,
   and, in turns with it, the issue's yardstick: a bare onnxruntime script that decodes 64 birds
   with the baseline's decoder and saves a PNG;
5. the installed size of the runtime venv against the torch venv.

Timed calls take turns (one of each, then again), so background load slows all of them alike;
the header shows how busy other processes kept the CPU just before. Needs Unix (``resource``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import onnx
from flops import PEAK_SIZE, PEAK_TRIES, graph_flops, peak_gflops  # beside this script

from birdvae.runtime import BirdVAE
from birdvae.runtime.cpus import cpu_name
from birdvae.runtime.format import DECODER_FILE, ModelFormatError, sha256_of
from birdvae.runtime.model import shipped_model_dir

DECODE_BIRDS = 64
BATCHES = (1, 64, 1024)
PEAK_BATCHES = (64, 1024)
SPEEDUP_TARGET = 3.0
SAMPLE_THREADS = 2
SAMPLE_TARGET_MS = 25.0
CLI_SECONDS_TARGET = 0.3
CLI_MIB_TARGET = 150.0
CLI_RUNS = 11
SEED = 0
MIB = 1024 * 1024
BUSY_SHARE = 0.2  # share of the CPU other processes use above which the header warns

DEFAULT = "default"
BASELINE = "baseline"
ORT = "onnxruntime"
TORCH = "PyTorch eager"

Call = Callable[[], object]
Key = TypeVar("Key")

# The yardstick for start-up: a bare script that decodes 64 birds with the baseline's
# decoder in onnxruntime and saves them with PIL. argv: decoder.onnx, latent size, PNG path.
BARE_SCRIPT = """\
import sys
import numpy as np, onnxruntime
from PIL import Image
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
z = np.random.default_rng(0).standard_normal((64, int(sys.argv[2]))).astype(np.float32)
birds = session.run(None, {"z": z})[0]
size = birds.shape[-1]
grid = birds.reshape(8, 8, 3, size, size).transpose(0, 3, 1, 4, 2).reshape(8 * size, 8 * size, 3)
Image.fromarray((grid * 255).round().astype(np.uint8)).save(sys.argv[3])
"""
# Runs a command, then prints its wall time and the peak RSS of the child (KiB on Linux).
MEASURE_CHILD = """\
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - start
if done.returncode:
    sys.exit(done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}")
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


# Machine ---------------------------------------------------------------------------------------


def physical_cores() -> int:
    """One per (socket, core) pair in /proc/cpuinfo: what onnxruntime's default threads count."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in block.splitlines())
        )
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or os.cpu_count() or 1


def package_versions(names: Sequence[str]) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def cpu_busy(seconds: float = 1.0) -> float | None:
    """The share of all CPU time that other processes used over ``seconds``, from /proc/stat
    (this process sleeps meanwhile); None where there is no /proc/stat."""

    def idle_and_total() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:9]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    try:
        idle_before, total_before = idle_and_total()
        time.sleep(seconds)
        idle_after, total_after = idle_and_total()
    except (OSError, ValueError, IndexError):
        return None
    total = total_after - total_before
    return 1.0 - (idle_after - idle_before) / total if total > 0 else None


def load_text() -> str:
    """Other processes' CPU use just before the run, with a warning when it is high."""
    try:
        text = "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        text = "load average unknown"
    busy = cpu_busy()
    if busy is None:
        return text
    text += f", CPU {100 * busy:.0f}% busy before the run"
    if busy >= BUSY_SHARE:
        text += " -- other work slows every row, multi-threaded PyTorch most of all"
    return text


# Printing --------------------------------------------------------------------------------------


def print_section(title: str) -> None:
    print(f"\n== {title}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the first column left-aligned, the rest right."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  ".join(padded).rstrip()

    print(line(headers))
    print(line(["-" * width for width in widths]))
    for row in rows:
        print(line(row))


def ratio_text(fast: float, slow: float) -> str:
    """How many times ``fast`` beats ``slow`` (both seconds, or both 1/rates)."""
    return f"{slow / fast:.2f}x"


def target_text(met: bool) -> str:
    return "met" if met else "NOT met"


# Timing ----------------------------------------------------------------------------------------


def time_in_turns(calls: dict[Key, Call], repeats: int) -> dict[Key, list[float]]:
    """Seconds per call of each entry, ``repeats`` times each, one of each call in turn.

    Every call runs once untimed first (session start, memory arenas, thread pools).
    """
    for call in calls.values():
        call()
    seconds: dict[Key, list[float]] = {label: [] for label in calls}
    for _ in range(repeats):
        for label, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[label].append(time.perf_counter() - start)
    return seconds


def latents(n: int, dim: int) -> np.ndarray:
    return np.random.default_rng(SEED).standard_normal((n, dim), dtype=np.float32)


def decode_call(vae: BirdVAE, birds: int, batch: int) -> Call:
    """Decode ``birds`` codes through the runtime, ``batch`` at a time."""
    z = latents(birds, vae.latent_dim)
    return lambda: vae.decode(z, batch=batch)


# PyTorch eager ---------------------------------------------------------------------------------


def torch_decode_call(
    checkpoint: Path | None, vae: BirdVAE, threads: int
) -> tuple[Call | None, str]:
    """A call decoding 64 birds with the checkpoint's PyTorch decoder, or None and why not."""
    if checkpoint is None:
        return None, "skipped: no --checkpoint given"
    if not checkpoint.is_file():
        return None, f"skipped: {checkpoint} does not exist"
    import torch

    from birdvae.training.checkpoint import load_model

    torch.set_num_threads(threads)
    model, config, _ = load_model(checkpoint)
    size, dim = config.model.image_size, config.model.latent_dim
    if (size, dim) != (vae.image_size, vae.latent_dim):
        return None, (
            f"skipped: {checkpoint} is a {size}px, {dim}-d model, --model is "
            f"{vae.image_size}px, {vae.latent_dim}-d"
        )
    z = torch.from_numpy(latents(DECODE_BIRDS, dim))

    def decode() -> None:
        with torch.no_grad():
            model.decode_image(z)

    exported_from = vae.manifest.source.get("checkpoint_sha256")
    if exported_from and exported_from != sha256_of(checkpoint):
        return decode, f"note: {checkpoint} is not the checkpoint --model was exported from"
    return decode, f"{checkpoint}, torch {torch.__version__}"


# 0. Sampling 64 birds --------------------------------------------------------------------------


def bench_sample(model: Path, repeats: int) -> dict[tuple[str, str], float]:
    """Median seconds for 64 birds' codes from each prior, and for the birds themselves."""
    vae = BirdVAE(model, threads=SAMPLE_THREADS)
    calls: dict[tuple[str, str], Call] = {}
    n = DECODE_BIRDS
    for prior in vae.prior_names:
        calls[(prior, "prior")] = lambda p=prior: list(vae.latent_batches(n, seed=SEED, prior=p))
        calls[(prior, "prior + decoder")] = lambda p=prior: vae.sample(n, seed=SEED, prior=p)
    for call in calls.values():  # sessions open and warm up outside the timing
        call()
    seconds = time_in_turns(calls, repeats)
    return {key: statistics.median(times) for key, times in seconds.items()}


def report_sample(medians: dict[tuple[str, str], float], default: str, repeats: int) -> None:
    print_section(
        f"0. Sampling {DECODE_BIRDS} birds (median of {repeats}, {SAMPLE_THREADS} threads)"
    )
    rows = [[prior, what, f"{seconds * 1e3:.2f}"] for (prior, what), seconds in medians.items()]
    print_table(["prior", "graphs", "ms"], rows)
    total = medians[(default, "prior + decoder")] * 1e3
    print(
        f"default ({default}) prior + decoder: {total:.1f} ms "
        f"(target <= {SAMPLE_TARGET_MS:g} ms: {target_text(total <= SAMPLE_TARGET_MS)})"
    )


# 1. Decoding 64 birds --------------------------------------------------------------------------


def bench_decode(
    vaes: dict[str, BirdVAE], torch_call: Call | None, repeats: int
) -> dict[tuple[str, str], float]:
    """Median seconds to decode 64 birds, keyed by (model, engine)."""
    calls: dict[tuple[str, str], Call] = {
        (name, ORT): decode_call(vae, DECODE_BIRDS, DECODE_BIRDS) for name, vae in vaes.items()
    }
    if torch_call is not None:
        calls[(DEFAULT, TORCH)] = torch_call
    seconds = time_in_turns(calls, repeats)
    return {key: statistics.median(times) for key, times in seconds.items()}


def report_decode(
    medians: dict[tuple[str, str], float], threads: int, torch_note: str, repeats: int
) -> None:
    print_section(f"1. Decoding {DECODE_BIRDS} birds (median of {repeats}, {threads} threads)")
    rows = [
        [name, engine, f"{seconds * 1e3:.2f}", f"{DECODE_BIRDS / seconds:,.0f}"]
        for (name, engine), seconds in medians.items()
    ]
    print_table(["model", "engine", "ms", "birds/s"], rows)
    default = medians[(DEFAULT, ORT)]
    baseline = medians.get((BASELINE, ORT))
    eager = medians.get((DEFAULT, TORCH))
    if baseline is not None:
        speedup = baseline / default
        print(
            f"speed-up, default vs baseline (onnxruntime): {ratio_text(default, baseline)} "
            f"(target >= {SPEEDUP_TARGET:g}x: {target_text(speedup >= SPEEDUP_TARGET)})"
        )
    else:
        print("speed-up, default vs baseline (onnxruntime): n/a, no --baseline given")
    if eager is not None:
        print(
            f"speed-up, onnxruntime vs PyTorch eager (default model): {ratio_text(default, eager)}"
            " (onnxruntime runs the shipped graph, int8 where export kept it; PyTorch runs float32,"
            " so the ratio counts quantization as well as the runtime)"
        )
    print(f"PyTorch eager: {torch_note}")


# 2. Throughput ---------------------------------------------------------------------------------


def bench_throughput(vaes: dict[str, BirdVAE], repeats: int) -> dict[tuple[str, int], float]:
    """Birds per second keyed by (model, batch); a timed call decodes max(batch, 64) birds."""
    rates: dict[tuple[str, int], float] = {}
    for batch in BATCHES:
        birds = max(batch, DECODE_BIRDS)
        calls = {name: decode_call(vae, birds, batch) for name, vae in vaes.items()}
        for name, times in time_in_turns(calls, repeats).items():
            rates[(name, batch)] = birds / statistics.median(times)
    return rates


def report_throughput(rates: dict[tuple[str, int], float], names: Sequence[str]) -> None:
    print_section("2. Birds per second (onnxruntime, median)")
    rows = []
    for batch in BATCHES:
        row = [f"batch {batch}", *(f"{rates[(name, batch)]:,.0f}" for name in names)]
        if BASELINE in names:
            row.append(f"{rates[(DEFAULT, batch)] / rates[(BASELINE, batch)]:.2f}x")
        rows.append(row)
    headers = ["", *names] + (["default / baseline"] if BASELINE in names else [])
    print_table(headers, rows)


# 3. FLOPs and peak rate ------------------------------------------------------------------------


def report_flops(
    vaes: dict[str, BirdVAE], rates: dict[tuple[str, int], float], peak: float
) -> None:
    print_section(
        f"3. Decoder FLOPs and share of peak fp32 ({peak:,.1f} GFLOP/s: best of "
        f"{PEAK_TRIES} numpy float32 {PEAK_SIZE}x{PEAK_SIZE} products)"
    )
    rows = []
    for name, vae in vaes.items():
        try:
            flops, precision = graph_flops(vae.path / DECODER_FILE)
        except (ValueError, onnx.shape_inference.InferenceError) as exc:
            print(f"{name}: FLOPs not counted: {exc}")
            continue
        row = [name, precision, f"{flops / 1e6:,.2f}"]
        for batch in PEAK_BATCHES:
            rate = flops * rates[(name, batch)] / 1e9
            row += [f"{rate:,.2f}", f"{100 * rate / peak:.1f}%"]
        rows.append(row)
    headers = ["model", "precision", "MFLOP/bird"]
    for batch in PEAK_BATCHES:
        headers += [f"GFLOP/s @{batch}", f"peak @{batch}"]
    print_table(headers, rows)
    print("(Conv, ConvTranspose, Gemm and MatMul only; elementwise ops are not counted. An int8"
          " graph's multiply-adds are set against the float32 peak: int8 kernels do several per"
          " fp32 slot, so more than 100% is possible)")  # fmt: skip


# 4. The bird-gen process -----------------------------------------------------------------------


def env_executable(venv: Path | None, name: str) -> Path:
    """``name`` in the venv's scripts folder, else next to this interpreter."""
    if venv is None:
        return Path(sys.executable).parent / name
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def measure_child(command: Sequence[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``command``, run by a small wrapper process."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_CHILD, *command], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")
    seconds, maxrss = done.stdout.split()
    kib_per_unit = 1 / 1024 if sys.platform == "darwin" else 1  # darwin reports bytes
    return float(seconds), float(maxrss) * kib_per_unit / 1024


def bench_bird_gen(
    bird_gen: Path, model_dir: Path, python: Path, baseline: BirdVAE | None, runs: int
) -> tuple[float, float, float | None]:
    """Median wall seconds and largest peak RSS (MiB) of ``bird-gen --n 64 -o birds.png``, and
    the median seconds of the bare baseline script (None without a baseline), run in turns."""
    with tempfile.TemporaryDirectory(prefix="bird-gen-bench-") as folder:
        png, bare_png = Path(folder) / "birds.png", Path(folder) / "bare.png"
        command = [str(bird_gen), "--n", str(DECODE_BIRDS), "-o", str(png)]
        command += ["--model", str(model_dir)]
        bare = None
        if baseline is not None:
            decoder = str(baseline.path.resolve() / DECODER_FILE)
            bare = [str(python), "-c", BARE_SCRIPT, decoder, str(baseline.latent_dim)]
            bare.append(str(bare_png))
        results, bare_seconds = [], []
        for run in range(runs + 1):  # the first run warms the file cache and is not counted
            png.unlink(missing_ok=True)
            seconds, mib = measure_child(command)
            if not png.is_file():
                raise RuntimeError(f"{' '.join(command)} wrote no PNG")
            if bare is not None:
                bare_time, _ = measure_child(bare)
                if run:
                    bare_seconds.append(bare_time)
            if run:
                results.append((seconds, mib))
    median_bare = statistics.median(bare_seconds) if bare_seconds else None
    return statistics.median(s for s, _ in results), max(m for _, m in results), median_bare


def bench_import(python: Path, runs: int) -> float:
    """Median seconds of ``import birdvae.runtime.cli`` beyond a bare interpreter start."""
    calls = {
        code: (lambda code=code: subprocess.run([str(python), "-c", code], check=True))
        for code in ("import birdvae.runtime.cli", "pass")
    }
    seconds = time_in_turns(calls, runs)
    return statistics.median(seconds["import birdvae.runtime.cli"]) - statistics.median(
        seconds["pass"]
    )


def report_bird_gen(runtime_env: Path | None, model_dir: Path, baseline: BirdVAE | None) -> None:
    bird_gen = env_executable(runtime_env, "bird-gen")
    python = env_executable(runtime_env, "python")
    print_section(f"4. bird-gen --n {DECODE_BIRDS} -o birds.png (median of {CLI_RUNS} processes)")
    print(f"{bird_gen} --model {model_dir}")
    if not bird_gen.is_file():
        print(f"skipped: {bird_gen} does not exist")
        return
    try:
        seconds, mib, bare = bench_bird_gen(bird_gen, model_dir, python, baseline, CLI_RUNS)
        imports = bench_import(python, CLI_RUNS)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"skipped: bird-gen failed: {exc}")
        return
    rows = [
        [
            "process, start to PNG written",
            f"{seconds:.3f} s",
            f"<= ~{CLI_SECONDS_TARGET:g} s",
            target_text(seconds <= CLI_SECONDS_TARGET),
        ],
        [
            "peak memory (max RSS)",
            f"{mib:.1f} MiB",
            f"< {CLI_MIB_TARGET:g} MiB",
            target_text(mib < CLI_MIB_TARGET),
        ],
        ["import birdvae.runtime.cli", f"{imports:.3f} s", "", ""],
    ]
    if bare is not None:
        rows.append(["bare onnxruntime script, baseline decoder", f"{bare:.3f} s", "", ""])
    print_table(["", "measured", "target", ""], rows)
    if bare is not None:
        print(
            f"bird-gen takes {seconds / bare:.2f}x the time of the bare script (decode 64 birds "
            "with the baseline's decoder, save a PNG with PIL), timed in turns with it"
        )
    else:
        print("the bare-script yardstick needs --baseline (the blog baseline's model folder)")


# 5. Installed size -----------------------------------------------------------------------------


def site_packages(venv: Path) -> Path:
    found = [*sorted(venv.glob("lib/python*/site-packages")), venv / "Lib" / "site-packages"]
    for folder in found:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"{venv} has no site-packages folder")


def disk_usage(folder: Path) -> int:
    """Bytes on disk under ``folder``, each file once, symlinks not followed: like ``du -s``."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            info = os.lstat(os.path.join(root, name))
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += getattr(info, "st_blocks", 0) * 512 or info.st_size
    return total


def report_install_size(runtime_env: Path | None, torch_env: Path) -> None:
    print_section("5. Installed size (site-packages on disk)")
    if runtime_env is None:
        print("skipped: no --runtime-env given (a venv made with `pip install .`)")
        return
    rows = []
    sizes = []
    for name, venv in (("runtime", runtime_env), ("torch", torch_env)):
        try:
            folder = site_packages(venv)
        except FileNotFoundError as exc:
            print(f"skipped: {exc}")
            return
        sizes.append(disk_usage(folder) / MIB)
        rows.append([name, str(folder), f"{sizes[-1]:,.1f} MiB"])
    print_table(["env", "site-packages", "size"], rows)
    print(f"torch env / runtime env: {sizes[1] / sizes[0]:.1f}x")


# Main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, metavar="DIR", help="model folder [default: the shipped model]"
    )
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR", help="model folder of the baseline preset"
    )
    parser.add_argument(
        "--checkpoint", type=Path, metavar="CKPT", help="PyTorch checkpoint of --model"
    )
    parser.add_argument(
        "--runtime-env", type=Path, metavar="VENV", help="venv with only the runtime installed"
    )
    parser.add_argument(
        "--torch-env",
        type=Path,
        default=Path(sys.prefix),
        metavar="VENV",
        help="venv with torch [default: this]",
    )
    parser.add_argument(
        "--repeats", type=int, default=20, metavar="N", help="timed calls of each [20]"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.model is None:
        try:
            args.model = shipped_model_dir()
        except ModelFormatError as exc:
            parser.error(str(exc))
    if args.runtime_env is not None and not args.runtime_env.is_dir():
        parser.error(f"--runtime-env {args.runtime_env} is not a folder")
    return args


def open_models(model: Path, baseline: Path | None) -> dict[str, BirdVAE]:
    folders = {DEFAULT: model, **({BASELINE: baseline} if baseline is not None else {})}
    return {name: BirdVAE(folder) for name, folder in folders.items()}


def architecture(source: dict[str, Any]) -> str:
    """The arch the manifest's free-form ``source`` names, where it names one."""
    config = source.get("architecture") or source.get("config") or {}
    return str(config.get("arch") or source.get("arch") or "arch unknown")


def print_header(vaes: dict[str, BirdVAE], threads: int) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"bird-vae runtime speed, {now}")
    print(f"cpu: {cpu_name()}, {os.cpu_count()} logical / {threads} physical cores")
    print(load_text())
    print(f"python {platform.python_version()}, " + package_versions(["onnxruntime", "numpy"]))
    for name, vae in vaes.items():
        arch = architecture(vae.manifest.source)
        size, dim = vae.image_size, vae.latent_dim
        print(f"{name}: {vae.path} ({arch}, {size}x{size}, latent {dim})")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    threads = physical_cores()
    try:
        vaes = open_models(args.model, args.baseline)
    except (ModelFormatError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    print_header(vaes, threads)
    torch_call, torch_note = torch_decode_call(args.checkpoint, vaes[DEFAULT], threads)

    default_prior = vaes[DEFAULT].manifest.default_prior
    report_sample(bench_sample(vaes[DEFAULT].path, args.repeats), default_prior, args.repeats)
    report_decode(bench_decode(vaes, torch_call, args.repeats), threads, torch_note, args.repeats)
    rates = bench_throughput(vaes, args.repeats)
    report_throughput(rates, list(vaes))
    report_flops(vaes, rates, peak_gflops())
    report_bird_gen(args.runtime_env, vaes[DEFAULT].path.resolve(), vaes.get("baseline"))
    report_install_size(args.runtime_env, args.torch_env)


if __name__ == "__main__":
    main()
