"""Latent priors: where the runtime draws z from before decoding.

The VAE is trained against N(0, I), but its posteriors never fill that ball evenly: the codes of
real birds sit in a region of it, and their numbers go together in ways N(0, I) knows nothing
of. Drawn from N(0, I), many codes decode to no bird. So a model may carry a
learned prior (``prior.onnx``: a network trained on the training set's codes that turns
standard-normal noise into a code) and a Gaussian mixture fitted to those codes
(``prior.npz``). Every prior reads its random numbers from ``Draws``, which makes a seed mean the
same z whatever the batch size the caller decodes with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Union

import numpy as np

from .errors import check_between
from .format import (
    MAX_PRIOR_VALUES,
    MAX_TEMPERATURE,
    MIXTURE_FILE,
    PRIOR_ARRAYS,
    ModelFormatError,
    max_prior_size,
)
from .npz import ArchiveError, ArrayHeader, read_npz


class Draws:
    """The random numbers of one request, in three streams spawned from one seed.

    Component picks, Gaussian noise and pixel noise come from separate generators, and each
    generator fills its arrays in order, so drawing 100 birds as 64 + 36 gives exactly the codes
    and pixel draws of 100 at once, and asking for pixel noise leaves the codes as they were.
    ``seed=None`` takes fresh entropy from the operating system.
    """

    def __init__(self, seed: int | None = None) -> None:
        picks, noise, pixels = np.random.SeedSequence(seed).spawn(3)
        self.picks = np.random.default_rng(picks)
        self.noise = np.random.default_rng(noise)
        self.pixels = np.random.default_rng(pixels)
        # A learned prior's codes already made but not yet handed out (LearnedPrior.sample),
        # with the prior and temperature they were made by.
        self.codes_ahead: tuple[object, float, np.ndarray] | None = None


def check_temperature(temperature: float) -> float:
    return check_between(temperature, "temperature", MAX_TEMPERATURE)


class StandardNormal:
    """N(0, I), the prior the VAE was trained against; temperature T draws z = T * eps."""

    def __init__(self, latent_dim: int) -> None:
        self.latent_dim = latent_dim

    def sample(self, n: int, draws: Draws, temperature: float = 1.0) -> np.ndarray:
        eps = draws.noise.standard_normal((n, self.latent_dim))
        return (check_temperature(temperature) * eps).astype(np.float32)


class GaussianMixture:
    """sum_k w_k N(mean_k, L_k L_k^T); temperature T scales each draw's deviation from its mean."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, cholesky: np.ndarray) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        cholesky = np.asarray(cholesky, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0:
            raise ValueError(f"mixture weights must have shape [K], got {weights.shape}")
        k = weights.size
        if means.ndim != 2 or means.shape[0] != k:
            raise ValueError(f"mixture means must have shape [{k}, D], got {means.shape}")
        d = means.shape[1]
        if cholesky.shape != (k, d, d):
            raise ValueError(
                f"mixture cholesky must have shape [{k}, {d}, {d}], got {cholesky.shape}"
            )
        if not all(np.isfinite(a).all() for a in (weights, means, cholesky)):
            raise ValueError("mixture arrays hold NaN or infinite values")
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("mixture weights must be >= 0 with a positive sum")
        if np.triu(cholesky, 1).any() or (np.diagonal(cholesky, axis1=1, axis2=2) <= 0).any():
            raise ValueError("mixture cholesky factors must be lower-triangular, positive diagonal")
        self.latent_dim = d
        self.weights = weights / weights.sum()
        self.means = means
        self.cholesky = cholesky
        self._cdf = np.cumsum(self.weights)
        for array in (self.weights, self.means, self.cholesky, self._cdf):
            array.setflags(write=False)  # what BirdVAE.prior hands out cannot change its birds

    @classmethod
    def load(
        cls, data: bytes, latent_dim: int, components: int, path: str | Path = MIXTURE_FILE
    ) -> GaussianMixture:
        """Read ``prior.npz`` from its bytes, already verified against the manifest's hash
        (``path`` names it in messages).

        Each array's shape is checked against ``latent_dim`` and the manifest's ``components``
        before any array is read or inflated; any problem with the file is the model's, so
        ModelFormatError.
        """

        def check(headers: dict[str, ArrayHeader]) -> None:
            k = components
            if k > max_prior_size("fitted", latent_dim):
                raise ModelFormatError(
                    f"{path} has {k} components of {latent_dim}x{latent_dim} factors, more than "
                    f"the {MAX_PRIOR_VALUES} values a mixture may have"
                )
            expected = {"weights": (k,), "means": (k, latent_dim)}
            expected["cholesky"] = (k, latent_dim, latent_dim)
            for name, shape in expected.items():
                if headers[name].shape != shape:
                    raise ModelFormatError(
                        f"{path} {name} has shape {list(headers[name].shape)}, expected "
                        f"{list(shape)}: {k} components of the model's latent size {latent_dim}"
                    )

        try:
            arrays = read_npz(data, PRIOR_ARRAYS, check)
            return cls(*(arrays[name] for name in PRIOR_ARRAYS))
        except ArchiveError as exc:
            raise ModelFormatError(f"{path} is not a valid prior: {exc}") from exc
        except ValueError as exc:  # the mixture's own checks
            if isinstance(exc, ModelFormatError):
                raise
            raise ModelFormatError(f"{path} is not a valid prior: {exc}") from exc

    @property
    def components(self) -> int:
        return self.weights.size

    def sample(self, n: int, draws: Draws, temperature: float = 1.0) -> np.ndarray:
        temperature = check_temperature(temperature)
        picks = np.searchsorted(self._cdf, draws.picks.random(n), side="right")
        picks = np.minimum(picks, self.components - 1)  # a uniform past a rounded-down cdf[-1]
        eps = draws.noise.standard_normal((n, self.latent_dim))
        z = self.means[picks]
        # One matmul per component: no [n, D, D] temporary. (bincount, not np.unique: the
        # latter imports numpy.ma on first use, 14 ms of a 0.3 s bird-gen run.)
        for k in np.flatnonzero(np.bincount(picks, minlength=self.components)):
            rows = picks == k
            z[rows] += temperature * (eps[rows] @ self.cholesky[k].T)
        return z.astype(np.float32)


class LearnedPrior:
    """A learned sampler: z = f(T * eps) for standard-normal eps [n, noise_dim].

    ``run`` is the graph (``prior.onnx`` in an onnxruntime session); it is deterministic, so
    the noise drawn here is all the randomness there is. Temperature T below 1 starts the
    sampler nearer the centre of its noise: typical birds, less variety.

    The graph always runs on BLOCK_ROWS rows of noise, the request's rows 0-63, 64-127, ...:
    an int8 sampler quantizes its activations over the whole batch it is given, so a code
    depends on the rows beside it, and fixed blocks keep a seed's birds the same whatever
    ``n`` and the caller's batch are. Rows of the last block not yet asked for wait in
    ``draws`` for the next call.
    """

    BLOCK_ROWS = 64  # vae-export measures an int8 sampler's quality in these same blocks

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], noise_dim: int) -> None:
        self._run = run
        self.noise_dim = noise_dim

    def sample(self, n: int, draws: Draws, temperature: float = 1.0) -> np.ndarray:
        temperature = check_temperature(temperature)
        if n == 0:
            return self._run(np.zeros((0, self.noise_dim), np.float32))
        blocks = []
        ahead = draws.codes_ahead
        if ahead is not None and ahead[0] is self and ahead[1] == temperature:
            blocks.append(ahead[2])
        while sum(len(block) for block in blocks) < n:
            eps = draws.noise.standard_normal((self.BLOCK_ROWS, self.noise_dim))
            blocks.append(self._run((temperature * eps).astype(np.float32)))
        codes = np.concatenate(blocks)
        draws.codes_ahead = (self, temperature, codes[n:])
        return codes[:n]


Prior = Union[StandardNormal, GaussianMixture, LearnedPrior]
