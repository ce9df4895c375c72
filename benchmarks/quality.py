"""Quality of exported models on held-out photos: samples (SWD), reconstructions (PSNR), bits/dim.

    python benchmarks/quality.py --data DATA/cub-birds --data DATA/CUB_200_2011 \\
        --model models/birds32 --checkpoint runs/birds32/best.pt \\
        --baseline runs/baseline32/model --baseline-checkpoint runs/baseline32/best.pt [--sweep]

Samples and reconstructions go through ``birdvae.runtime.BirdVAE``: what ``bird-gen`` writes is
what is scored. SWD compares 7x7 Laplacian-pyramid patches of samples with the validation photos
(Karras et al. 2018); ``real vs real`` (training photos against validation photos, same count) is
the floor a perfect model would reach. ``--sweep`` scores each prior and temperature, then each
pixel noise, to choose the defaults. Bits/dim (negative ELBO and importance-weighted bound) come
from the checkpoints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from swd import sliced_wasserstein  # beside this script

from birdvae.runtime import BirdVAE
from birdvae.runtime.images import psnr, to_uint8_hwc
from birdvae.training.data import load_splits

TEMPERATURES = (0.6, 0.7, 0.8, 0.9, 1.0)
NOISES = (0.0, 0.25, 0.5, 0.75, 1.0)


def as_uint8_nchw(images: np.ndarray) -> np.ndarray:
    return to_uint8_hwc(images).transpose(0, 3, 1, 2)


def sample_swd(
    model: BirdVAE,
    real: np.ndarray,
    count: int,
    prior: str | None,
    temperature: float | None,
    noise: float | None = None,
    seed: int = 1,
) -> float:
    """SWD of ``count`` birds drawn with ``seed``; the patches are placed by ``seed - 1``."""
    birds = model.sample(count, seed=seed, prior=prior, temperature=temperature, noise=noise)
    return sliced_wasserstein(real, as_uint8_nchw(birds), seed=seed - 1).mean


def recon_psnr(model: BirdVAE, images: np.ndarray) -> float:
    """Mean PSNR (dB) of 8-bit reconstructions of uint8 [N, 3, S, S] images."""
    recon = as_uint8_nchw(model.reconstruct(images.astype(np.float32) / 255.0))
    return float(np.mean([psnr(original, image) for original, image in zip(images, recon)]))


def nearest_photo_rms(images: np.ndarray, photos: np.ndarray) -> np.ndarray:
    """Per image, the RMS pixel distance (0-1 scale) to its nearest photo; uint8 NCHW inputs.

    Guards the fitted prior against copying: a mixture with many components could place its
    samples on training photos, which SWD would reward.
    """
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    y = photos.reshape(len(photos), -1).astype(np.float32) / 255.0
    squared = (x * x).sum(1)[:, None] - 2.0 * x @ y.T + (y * y).sum(1)[None]
    return np.sqrt(np.maximum(squared.min(1), 0.0) / x.shape[1])


def copy_check(model: BirdVAE, real: np.ndarray, train: np.ndarray, count: int = 500) -> str:
    """Distances to the nearest training photo: samples against held-out photos' reconstructions.

    Reconstructions are the yardstick (smooth images like samples, of photos the model never
    saw). Samples that sit nearer the training photos, in the median or in their nearest 5%,
    are copies, whatever SWD says.
    """
    samples = as_uint8_nchw(model.sample(count, seed=3, noise=0))
    recon = as_uint8_nchw(model.reconstruct(real.astype(np.float32) / 255.0))
    sample_d, recon_d = nearest_photo_rms(samples, train), nearest_photo_rms(recon, train)
    rows = {"held-out photos": nearest_photo_rms(real, train), "their reconstructions": recon_d,
            f"{count} samples (noise 0)": sample_d}  # fmt: skip
    lines = [f"  {name:<24} median {np.median(d):.3f}, 5th percentile {np.percentile(d, 5):.3f}"
             for name, d in rows.items()]  # fmt: skip
    nearer = float(np.mean(sample_d < np.percentile(recon_d, 5)))
    copies = np.median(sample_d) < np.median(recon_d) * 0.95 or nearer > 0.10
    lines.append(
        f"  {nearer:.1%} of samples are nearer than the closest 5% of reconstructions: "
        + ("samples sit near training photos (copies?)" if copies else "no sign of copies")
    )
    return "\n".join(lines)


def checkpoint_bits(path: Path, val: np.ndarray, train: np.ndarray, iw: int) -> tuple[float, float]:
    """(negative ELBO, importance-weighted bound) in bits/dim on ``val``."""
    import torch

    from birdvae.training.checkpoint import load_model
    from birdvae.training.evaluate import evaluate, fit_gaussian_sigma

    model, _, _ = load_model(path)
    device = torch.device("cpu")
    sigma = None if model.likelihood.is_discrete else fit_gaussian_sigma(model, train, device)
    scores = evaluate(model, val, device, iw_samples=iw, sigma=sigma)
    return scores.bpd, scores.iw_bpd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", action="append", required=True, help="a data set; give it again for several"
    )
    parser.add_argument("--model", default="birds32", help="model folder or shipped name")
    parser.add_argument("--checkpoint", type=Path, help="the default model's checkpoint")
    parser.add_argument("--baseline", help="the baseline preset's exported model folder")
    parser.add_argument("--baseline-checkpoint", type=Path, help="--baseline's checkpoint")
    parser.add_argument("--samples", type=int, default=2000, help="birds sampled per SWD")
    parser.add_argument(
        "--iw-samples",
        type=int,
        default=64,
        help="importance samples per photo of the bits/dim bound",
    )
    parser.add_argument("--sweep", action="store_true", help="score each prior and temperature")
    parser.add_argument(
        "--seeds", type=int, default=1, help="also score the defaults' SWD over this many seeds"
    )
    args = parser.parse_args()

    ours = BirdVAE.load(args.model)
    splits = load_splits(args.data, ours.image_size)
    real, train = splits.val, splits.train
    floor = sliced_wasserstein(real, train[: args.samples]).mean
    print(f"{len(real)} validation photos; SWD real vs real (training photos): {floor:.1f}")

    if args.sweep:
        print(f"{'prior':<10}{'T':>5}{'SWD':>8}")
        for prior in ours.prior_names:
            for t in TEMPERATURES:
                swd = sample_swd(ours, real, args.samples, prior, t, noise=0)
                print(f"{prior:<10}{t:>5.2f}{swd:>8.1f}")
        if ours.has_pixel_noise:
            prior = ours.manifest.default_prior
            print(f"\npixel noise, {prior} prior at T={ours.default_temperature(prior)}")
            print(f"{'noise':>5}{'SWD':>8}")
            for noise in NOISES:
                swd = sample_swd(ours, real, args.samples, None, None, noise)
                print(f"{noise:>5.2f}{swd:>8.1f}")

    print("\nnearest training photo, RMS pixel distance (0-1)")
    print(copy_check(ours, real, train))

    rows = [("default", ours, args.checkpoint)]
    if args.baseline:
        rows.append(("baseline", BirdVAE.load(args.baseline), args.baseline_checkpoint))
    header = f"{'model':<10}{'SWD':>8}{'PSNR dB':>9}{'bits/dim':>10}{'IW bits/dim':>13}"
    print(f"\n{header}  sampling")
    figures = {}
    for name, model, ckpt in rows:
        swd = sample_swd(model, real, args.samples, None, None)
        psnr = recon_psnr(model, real)
        bpd, iw = checkpoint_bits(ckpt, real, train, args.iw_samples) if ckpt else (np.nan,) * 2
        prior = model.manifest.default_prior
        temperature = model.default_temperature(prior)
        figures[name] = (swd, psnr, bpd)
        sampling = f"{prior}, T={temperature}, noise {model.default_noise():g}"
        print(f"{name:<10}{swd:>8.1f}{psnr:>9.2f}{bpd:>10.3f}{iw:>13.3f}  {sampling}")
    if "baseline" in figures:
        (s0, p0, b0), (s1, p1, b1) = figures["default"], figures["baseline"]
        print(
            f"\ndefault vs baseline: SWD {s0 / s1:.3f}x the baseline's (goal <= 0.5), "
            f"PSNR {p0 - p1:+.2f} dB (goal >= +4), bits/dim {b0 - b1:+.3f} (goal <= -1)"
        )
    if args.seeds > 1:
        print(f"\nSWD over sampling seeds 1..{args.seeds} (patch placement changes with each)")
        means = {}
        for name, model, _ in rows:
            scores = [sample_swd(model, real, args.samples, None, None, seed=seed)
                      for seed in range(1, args.seeds + 1)]  # fmt: skip
            means[name] = float(np.mean(scores))
            spread = float(np.std(scores, ddof=1))
            listed = ", ".join(f"{score:.1f}" for score in scores)
            print(f"{name:<10}{means[name]:>6.1f} +- {spread:.1f}   ({listed})")
        if "baseline" in means:
            print(f"default vs baseline: {means['default'] / means['baseline']:.3f}x")


if __name__ == "__main__":
    main()
