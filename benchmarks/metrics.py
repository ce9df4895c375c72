"""Distances between sets of images in a feature space, and a copy check: numpy only.

- Frechet distance (FD; Heusel et al. 2017): between Gaussians fitted to the two sets' features.
- Kernel inception distance (KID; Binkowski et al. 2018): the unbiased squared MMD with a cubic
  polynomial kernel, over random subsets; unlike FD it has no bias that depends on the count.
- Precision, recall, density and coverage (Naeem et al. 2020): how much of the generated set
  lies on the real one's manifold, and how much of the real one it covers. The authors' ``prdc``
  package computes the same (a test checks it) but pulls in scikit-learn and SciPy for one
  pairwise distance, and prints; these few lines of numpy do not.
- The memorisation ratio (Gu et al. 2023, "On memorization in diffusion models"): a sample whose
  nearest training image is less than a third the distance of its second nearest is a copy.
"""

from __future__ import annotations

import numpy as np

COPY_RATIO = 1 / 3


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between the features [N, F] of two sets."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mean = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr(sqrt(A B)): the eigenvalues of a product of two PSD matrices are real and >= 0.
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b).real.clip(min=0)
    trace = np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(eigenvalues).sum()
    return float(mean @ mean + trace)


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 20, size: int = 500, seed: int = 0
) -> tuple[float, float]:
    """KID (mean and standard deviation over ``subsets`` random subsets of ``size``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    size = min(size, len(a), len(b))
    dim = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), size, replace=False)]
        y = b[rng.choice(len(b), size, replace=False)]
        kxx, kyy, kxy = ((p @ q.T / dim + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        off = size * (size - 1)
        mmd = (kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
        values.append(mmd - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] between the rows of two arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    squared = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]
    return np.sqrt(squared.clip(min=0))


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` features, with each
    point's manifold a ball out to its k-th nearest neighbour (itself excluded)."""
    real_radius = _kth_neighbour(pairwise_distances(real, real), k)
    fake_radius = _kth_neighbour(pairwise_distances(fake, fake), k)
    between = pairwise_distances(real, fake)  # [real, fake]
    inside_real = between < real_radius[:, None]
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((between < fake_radius[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((between.min(axis=1) < real_radius).mean()),
    }


def _kth_neighbour(distances: np.ndarray, k: int) -> np.ndarray:
    """Each row's distance to its k-th nearest other point (column 0 of a sort is itself)."""
    return np.partition(distances, k, axis=1)[:, k]


def nearest_two(samples: np.ndarray, references: np.ndarray, block: int = 512) -> np.ndarray:
    """Euclidean distances [N, 2] from each sample to its nearest and second-nearest reference
    (rows are flattened), in blocks so memory stays bounded."""
    x = samples.reshape(len(samples), -1).astype(np.float32)
    y = references.reshape(len(references), -1).astype(np.float32)
    y_squared = (y * y).sum(1)
    out = np.empty((len(x), 2))
    for start in range(0, len(x), block):
        part = x[start : start + block]
        squared = (part * part).sum(1)[:, None] - 2 * part @ y.T + y_squared[None]
        two = np.partition(squared, 1, axis=1)[:, :2]
        out[start : start + block] = np.sqrt(np.sort(two, axis=1).clip(min=0))
    return out


def copy_share(samples: np.ndarray, references: np.ndarray) -> tuple[float, np.ndarray]:
    """The share of samples that copy a reference (nearest / second nearest < 1/3), and each
    sample's ratio."""
    distances = nearest_two(samples, references)
    ratio = distances[:, 0] / np.maximum(distances[:, 1], 1e-12)
    return float(np.mean(ratio < COPY_RATIO)), ratio
