"""Check bird-gen's arithmetic on this machine against the x86 reference, and time it.

    python benchmarks/edge_check.py                 # on a Raspberry Pi or any board
    python benchmarks/edge_check.py --save out.npz  # also keep this machine's outputs
    python benchmarks/edge_check.py --compare a.npz b.npz
    python benchmarks/edge_check.py --write-reference   # x86 only, after a model changes

Run it from a clone's root with the runtime installed (``pip install .``): numpy and
onnxruntime only, no torch. It decodes the fixed codes stored in ``tests/fixtures/
edge_reference.npz`` through the runtime's own ``BirdVAE.decode`` and compares the images with
what an x86_64 machine computed for the same codes:

- the fp32 test model (``tests/fixtures/tiny_model``) must match within 1e-5: float arithmetic
  done in a different order rounds differently, but never by more;
- the shipped int8 models (``birds32``, ``birds64``) are reported: their activations are
  requantized to 8 bits between layers, and another CPU's integer kernels may round a value to
  the next step, which the following layers carry on. A difference beyond 4/255 fails: that
  is no rounding, the board computes something else.
- the shipped samplers (``prior.onnx``, int8 too) draw 64 codes for a fixed seed through the
  runtime's own ``latent_batches``, as ``bird-gen`` does. Rounding moves a code a little, and
  it may tip a choice among the sampler's candidates, which gives another bird altogether
  (independent draws differ by 2.5 or more in some number). So the check counts the birds
  that moved by more than 0.5 as other birds, allows one in eight, and bounds the drift of
  the rest by 0.5.

Exit status 0 when every check passes, 1 when one fails. Then it times decoding 16 birds of each
shipped model, one thread and all threads, so a board owner sees what their CPU does.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "fixtures" / "edge_reference.npz"
TINY_MODEL = ROOT / "tests" / "fixtures" / "tiny_model"
FP32_TOLERANCE = 1e-5
INT8_LIMIT = 4 / 255
# Few codes keep the reference file small (about 350 kB) and the check quick under emulation.
CODES = {"tiny_model": 16, "birds32": 8, "birds64": 4}
CODE_SEED = 20261202
SAMPLED = ("birds32", "birds64")  # one block of the sampler each (LearnedPrior.BLOCK_ROWS)
SAMPLED_BIRDS = 64
CODE_DRIFT = 0.5
OTHER_BIRDS_SHARE = 1 / 8


def _load(name: str):
    from birdvae.runtime.model import BirdVAE

    return BirdVAE(TINY_MODEL) if name == "tiny_model" else BirdVAE.load(name)


def decode_all(codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each model's images for its codes, float32 [N, 3, S, S]."""
    return {name: _load(name).decode(z) for name, z in codes.items()}


def fixed_codes() -> dict[str, np.ndarray]:
    """Codes drawn once on x86 and stored, so no board depends on its own random numbers."""
    rng = np.random.default_rng(CODE_SEED)
    return {
        name: rng.standard_normal((n, _load(name).latent_dim)).astype(np.float32)
        for name, n in CODES.items()
    }


def sample_all() -> dict[str, np.ndarray]:
    """Each shipped model's first codes for CODE_SEED from its default prior, as bird-gen
    draws them (the seed's noise comes from numpy's generator, the same on every CPU)."""
    return {
        f"{name}.sampled": next(_load(name).latent_batches(SAMPLED_BIRDS, seed=CODE_SEED))
        for name in SAMPLED
    }


def write_reference() -> None:
    codes = fixed_codes()
    images = decode_all(codes)
    arrays = {f"{name}.z": z for name, z in codes.items()}
    arrays |= {f"{name}.image": image for name, image in images.items()}
    arrays |= sample_all()
    np.savez_compressed(REFERENCE, **arrays)
    print(f"wrote {REFERENCE.relative_to(ROOT)} on {platform.machine()}")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def compare(reference: dict[str, np.ndarray], images: dict[str, np.ndarray]) -> bool:
    """Print each model's largest pixel difference; True when all are within their bounds."""
    ok = True
    print(f"{'model':<12}{'precision':<11}{'max |diff|':>12}{'in 1/255':>10}  verdict")
    for name in CODES:
        expected, got = reference[f"{name}.image"], images[f"{name}.image"]
        diff = float(np.abs(expected.astype(np.float64) - got).max())
        fp32 = name == "tiny_model"
        bound = FP32_TOLERANCE if fp32 else INT8_LIMIT
        passed = diff <= bound
        ok &= passed
        verdict = "ok" if passed else "FAIL"
        print(
            f"{name:<12}{'fp32' if fp32 else 'int8':<11}{diff:>12.3g}{diff * 255:>10.3f}  "
            f"{verdict} (bound {bound:.3g})"
        )
    return ok


def compare_sampled(reference: dict[str, np.ndarray], sampled: dict[str, np.ndarray]) -> bool:
    """Print how far each sampler's codes moved; True when few birds changed and the rest
    stayed near."""
    ok = True
    print(f"\n{'sampler':<12}{'birds':>6}{'other birds':>13}{'drift of the rest':>19}  verdict")
    for name in SAMPLED:
        expected, got = reference[f"{name}.sampled"], sampled[f"{name}.sampled"]
        moved = np.abs(expected.astype(np.float64) - got).max(axis=1)
        other = int((moved > CODE_DRIFT).sum())
        drift = float(moved[moved <= CODE_DRIFT].max(initial=0.0))
        passed = other <= OTHER_BIRDS_SHARE * len(moved)
        ok &= passed
        print(
            f"{name:<12}{len(moved):>6}{other:>13}{drift:>19.3g}  "
            f"{'ok' if passed else 'FAIL'} (at most {OTHER_BIRDS_SHARE * len(moved):.0f} "
            f"other birds, drift within {CODE_DRIFT})"
        )
    return ok


def time_decoding(birds: int = 16, repeats: int = 3) -> None:
    """Best-of-``repeats`` time to decode ``birds`` birds, one thread and onnxruntime's default."""
    from birdvae.runtime.model import BirdVAE

    rng = np.random.default_rng(0)
    print(f"\ndecoding {birds} birds (best of {repeats}), int8 shipped models")
    for name in ("birds32", "birds64"):
        for threads in (1, 0):
            vae = BirdVAE.load(name, threads=threads)
            z = rng.standard_normal((birds, vae.latent_dim)).astype(np.float32)
            vae.decode(z)  # the session is built on first use; time only the decoding
            best = min(_seconds(vae.decode, z) for _ in range(repeats))
            label = "1 thread" if threads == 1 else "all threads"
            print(f"{name:<12}{label:<13}{best * 1000:8.1f} ms  {birds / best:8.1f} birds/s")


def _seconds(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="also write this machine's images to an .npz")
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A", "B"),
        help="compare two machines' --save files instead of checking this one",
    )
    parser.add_argument(
        "--write-reference",
        action="store_true",
        help="x86_64 only: store this machine's outputs as the reference",
    )
    parser.add_argument(
        "--no-timing",
        action="store_true",
        help="check only, skip the timings (under an emulator they mean nothing)",
    )
    args = parser.parse_args(argv)
    if args.write_reference:
        write_reference()
        return 0
    if args.compare:
        first, second = (read_npz(path) for path in args.compare)
        print(f"{args.compare[1]} against {args.compare[0]}:")
        return 0 if compare(first, second) & compare_sampled(first, second) else 1

    import onnxruntime

    print(f"{platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")  # fmt: skip
    reference = read_npz(REFERENCE)
    codes = {name: reference[f"{name}.z"] for name in CODES}
    images = {f"{name}.image": image for name, image in decode_all(codes).items()}
    sampled = sample_all()
    if args.save:
        np.savez_compressed(args.save, **images, **sampled)
    print(f"against {REFERENCE.relative_to(ROOT)} (computed on x86_64):")
    ok = compare(reference, images) & compare_sampled(reference, sampled)
    if not args.no_timing:
        time_decoding()
    print("\nedge check passed" if ok else "\nedge check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
