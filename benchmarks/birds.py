"""What a person would see, in numbers: bird-gen's birds and reconstructions against held-out
photos, in a species classifier's feature space and in pixels.

    python benchmarks/birds.py --data path/to/CUB_200_2011 --data path/to/more-birds \\
        --model models/birds32 --model runs/old-model [--checkpoint runs/x/best.pt ...] \\
        [--count 1024] [--save runs/rating-images]

For each model: Frechet distance and KID against the validation photos of ``--count`` birds
(bird-gen's defaults, seed 0), of the validation photos' reconstructions, and of the aggregated
posterior (training codes with posterior noise, decoded: the target any prior aims at); their
precision/recall/density/coverage; the share that copy a training photo (memorisation ratio
below 1/3, in pixels and in features); SWD, reconstruction PSNR and, given its checkpoint,
bits/dim. ``real vs real`` (as many training photos, ones the classifier was not trained on,
against the validation photos) is the floor.
``--save`` writes the images a blind rating sheet draws from (benchmarks/rating.py).

The first run for a data set and image size trains the classifier (15 epochs over some 2,500
photos: a few minutes on a fast CPU, about 20 on a busy 2-core one) and caches it and the decoded
photos in ``runs/features/`` under the current folder; later runs start at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import features as feature_space
import metrics
from quality import as_uint8_nchw, checkpoint_bits, recon_psnr, sliced_wasserstein

from birdvae.runtime import BirdVAE
from birdvae.training.data import load_splits


def score(
    name: str, images: np.ndarray, real_features: np.ndarray, model, splits, train_features
) -> dict[str, float]:
    """Every figure of one set of uint8 images [N, 3, S, S] against the validation photos."""
    feats = feature_space.features(model, images)
    kid, kid_sd = metrics.kernel_distance(real_features, feats)
    pixel_copies, _ = metrics.copy_share(images, splits.train)
    feature_copies, _ = metrics.copy_share(feats, train_features)
    return {
        "set": name,
        "fd": metrics.frechet_distance(real_features, feats),
        "kid": kid * 1e3,
        "kid_sd": kid_sd * 1e3,
        **metrics.prdc(real_features, feats),
        "copies_px": pixel_copies,
        "copies_feat": feature_copies,
    }


def aggregated_posterior(model: BirdVAE, photos: np.ndarray, seed: int) -> np.ndarray:
    """Training photos' codes with their posterior noise, decoded: what a prior that matched the
    encoder's codes exactly would give (each a variation on a training photo, so its copy share
    is high by construction)."""
    mean, logvar = model.encode(photos.astype(np.float32) / 255.0)
    noise = np.random.default_rng(seed).standard_normal(mean.shape, dtype=np.float32)
    return model.decode(mean + noise * np.exp(0.5 * logvar))


def save_pngs(images: np.ndarray, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", action="append", required=True, help="a data set; give it again for several"
    )
    parser.add_argument("--model", action="append", required=True, help="folder or shipped name")
    parser.add_argument("--checkpoint", action="append", default=[], help="per --model, in order")
    parser.add_argument(
        "--count", type=int, default=1024, help="birds sampled and photos reconstructed per model"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the birds and the photos drawn")
    parser.add_argument("--save", type=Path, help="write the images for rating sheets here")
    args = parser.parse_args()

    models = [BirdVAE.load(name) for name in args.model]
    sizes = {model.image_size for model in models}
    if len(sizes) != 1:
        parser.error("compare models of one image size at a time")
    splits = load_splits(args.data, sizes.pop(), cache_dir=feature_space.CACHE)
    # The floor's photos are training photos the classifier never saw: features of photos it
    # was fitted on sit apart from held-out ones, and a floor built from them read higher
    # than a good model's samples.
    rng = np.random.default_rng(args.seed)
    unseen = rng.choice(len(splits.train), args.count, replace=False)
    seen = np.setdiff1d(np.arange(len(splits.train)), unseen)
    classifier = feature_space.classifier_for(
        splits.train[seen], splits.train_labels[seen], len(splits.classes)
    )
    accuracy = feature_space.accuracy(classifier, splits.val, splits.val_labels)
    print(f"{len(splits.train)} training / {len(splits.val)} validation photos, "
          f"{len(splits.classes)} species; classifier ({len(seen)} training photos) accuracy on "
          f"validation {accuracy:.1%}")  # fmt: skip
    real = feature_space.features(classifier, splits.val)
    train_features = feature_space.features(classifier, splits.train)
    floor_photos = splits.train[unseen]
    rows = [score("real vs real", floor_photos, real, classifier, splits, train_features)]
    rows[0]["copies_px"] = rows[0]["copies_feat"] = float("nan")  # they are training photos

    swd_rows = {}
    for i, (name, model) in enumerate(zip(args.model, models)):
        birds = as_uint8_nchw(model.sample(args.count, seed=args.seed))
        recon = as_uint8_nchw(model.reconstruct(splits.val.astype(np.float32) / 255.0))
        rows.append(score(f"{name} samples", birds, real, classifier, splits, train_features))
        rows.append(score(f"{name} recon", recon, real, classifier, splits, train_features))
        posterior = as_uint8_nchw(aggregated_posterior(model, floor_photos, args.seed))
        rows.append(score(f"{name} aggregated posterior", posterior, real, classifier, splits,
                          train_features))  # fmt: skip
        swd = sliced_wasserstein(splits.val, birds, seed=args.seed).mean
        ckpt = Path(args.checkpoint[i]) if i < len(args.checkpoint) else None
        bpd = checkpoint_bits(ckpt, splits.val, splits.train, 0)[0] if ckpt else float("nan")
        swd_rows[name] = (swd, recon_psnr(model, splits.val), bpd)
        if args.save:
            label = name.strip("/").replace("/", "_")
            save_pngs(birds, args.save / f"{label}-samples")
            save_pngs(recon, args.save / f"{label}-recon")
    if args.save:
        save_pngs(splits.val, args.save / "photos")

    header = (f"| {'set':<34} | FD | KID x1e3 | precision | recall | density | coverage "
              "| copies (px) | copies (features) |")  # fmt: skip
    print("\n" + header + "\n|" + "---|" * 9)
    for row in rows:
        print(
            f"| {row['set']:<34} | {row['fd']:.1f} | {row['kid']:.1f} +- {row['kid_sd']:.1f} "
            f"| {row['precision']:.3f} | {row['recall']:.3f} | {row['density']:.3f} "
            f"| {row['coverage']:.3f} | {row['copies_px']:.1%} | {row['copies_feat']:.1%} |"
        )
    order = np.random.default_rng(args.seed).permutation(len(real))
    half_a, half_b = real[order[: len(real) // 2]], real[order[len(real) // 2 :]]
    print(f"\nvalidation against validation, two halves of {len(half_a)}: FD "
          f"{metrics.frechet_distance(half_a, half_b):.1f}, KID x1e3 "
          f"{metrics.kernel_distance(half_a, half_b)[0] * 1e3:.1f} (one distribution on both "
          "sides; 'real vs real' above also holds the training split's other mix of data sets "
          "and species, and half the count adds small-sample bias to FD)")  # fmt: skip
    print("\n| model | SWD x1e3 | reconstruction PSNR (dB) | bits/dim |\n|---|---|---|---|")
    for name, (swd, psnr, bpd) in swd_rows.items():
        print(f"| {name} | {swd:.1f} | {psnr:.2f} | {bpd:.3f} |")


if __name__ == "__main__":
    main()
