"""The latent priors: seeds reproduce, chunking never changes the codes, bad files are refused."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from birdvae.runtime.format import ModelFormatError
from birdvae.runtime.prior import Draws, GaussianMixture, StandardNormal


def _mixture(d: int = 4) -> GaussianMixture:
    rng = np.random.default_rng(1)
    cholesky = np.stack([np.tril(rng.normal(0, 0.1, (d, d)), -1) + np.eye(d) * s for s in (0.5, 2)])
    return GaussianMixture(np.array([0.25, 0.75]), np.array([[-10.0] * d, [10.0] * d]), cholesky)


def _in_chunks(prior, n: int, batch: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    draws = Draws(seed)
    sizes = [min(batch, n - start) for start in range(0, n, batch)]
    return np.concatenate([prior.sample(size, draws, temperature) for size in sizes])


@pytest.mark.parametrize("prior", [StandardNormal(4), _mixture()], ids=["standard", "mixture"])
def test_chunked_draws_equal_one_draw(prior) -> None:
    whole = prior.sample(100, Draws(7))
    for batch in (1, 3, 64, 99):
        np.testing.assert_array_equal(_in_chunks(prior, 100, batch, seed=7), whole)


@pytest.mark.parametrize("prior", [StandardNormal(4), _mixture()], ids=["standard", "mixture"])
def test_seed_reproduces_and_differs(prior) -> None:
    first = prior.sample(10, Draws(3))
    assert first.dtype == np.float32 and first.shape == (10, 4)
    np.testing.assert_array_equal(prior.sample(10, Draws(3)), first)
    assert not np.array_equal(prior.sample(10, Draws(4)), first)


def test_standard_temperature_scales_the_noise() -> None:
    prior = StandardNormal(8)
    base = prior.sample(50, Draws(0), 1.0)
    np.testing.assert_allclose(prior.sample(50, Draws(0), 0.5), 0.5 * base, rtol=1e-6)
    np.testing.assert_array_equal(prior.sample(5, Draws(0), 0.0), np.zeros((5, 8), np.float32))


def test_mixture_temperature_scales_deviation_from_the_component_mean() -> None:
    mixture = _mixture()
    at_zero = mixture.sample(200, Draws(5), 0.0)
    assert {tuple(row) for row in at_zero.tolist()} == {(-10.0,) * 4, (10.0,) * 4}
    full, half = mixture.sample(200, Draws(5), 1.0), mixture.sample(200, Draws(5), 0.5)
    np.testing.assert_allclose(half - at_zero, 0.5 * (full - at_zero), atol=1e-5)


def test_mixture_matches_its_weights_means_and_covariances() -> None:
    mixture = _mixture()
    z = mixture.sample(20000, Draws(0)).astype(np.float64)
    upper = z[:, 0] > 0
    assert abs(upper.mean() - 0.75) < 0.02
    for rows, k in ((~upper, 0), (upper, 1)):
        np.testing.assert_allclose(z[rows].mean(0), mixture.means[k], atol=0.1)
        covariance = mixture.cholesky[k] @ mixture.cholesky[k].T
        np.testing.assert_allclose(np.cov(z[rows].T), covariance, atol=0.12 * covariance.max())


def test_a_mixture_draws_with_its_factors_covariance_and_its_weights_normalised() -> None:
    """A component's draws have covariance L L^T, not L^T L (a lopsided factor tells them
    apart), and weights a file gives unnormalised ([1, 3]) pick a quarter of the draws and
    three quarters."""
    factor = np.array([[1.0, 0.0], [2.0, 1.0]])  # L L^T = [[1, 2], [2, 5]], L^T L = [[5, 2], ...]
    mixture = GaussianMixture(
        np.array([1.0, 3.0]), np.array([[-50.0, 0.0], [50.0, 0.0]]), np.stack([factor, factor])
    )
    np.testing.assert_allclose(mixture.weights, [0.25, 0.75])
    z = mixture.sample(8000, Draws(1)).astype(np.float64)
    upper = z[:, 0] > 0
    assert abs(upper.mean() - 0.75) < 0.02
    np.testing.assert_allclose(np.cov(z[upper].T), [[1.0, 2.0], [2.0, 5.0]], atol=0.3)


def _learned():
    from birdvae.runtime.prior import LearnedPrior

    return LearnedPrior(lambda noise: noise, noise_dim=2)


@pytest.mark.parametrize("prior", [StandardNormal(2), _mixture(2), _learned()],
                         ids=["standard", "mixture", "learned"])  # fmt: skip
@pytest.mark.parametrize("temperature", [-0.1, float("nan"), float("inf"), 10.5, 1e30])
def test_bad_temperature_is_refused(prior, temperature: float) -> None:
    """Every prior BirdVAE.prior hands out checks its temperature: a negative one would mirror
    the draws and a NaN make NaN codes, blamed on the decoder."""
    with pytest.raises(ValueError, match="temperature"):
        prior.sample(1, Draws(0), temperature)


def test_a_uniform_past_the_rounded_down_last_weight_picks_the_last_component() -> None:
    """Ten weights of 0.1 sum to 1 - 2**-53 in floating point; a uniform draw of that value
    (numpy's largest) is past every cumulative weight and must not pick a component K."""
    mixture = GaussianMixture(np.full(10, 0.1), np.arange(10.0)[:, None], np.ones((10, 1, 1)))
    draws = Draws(0)
    draws.picks = type("Largest", (), {"random": lambda self, n: np.full(n, 1 - 2**-53)})()
    z = mixture.sample(2, draws, temperature=0.0)
    np.testing.assert_array_equal(z, [[9.0], [9.0]])


def test_what_a_mixture_hands_out_cannot_change_its_birds() -> None:
    """BirdVAE.prior gives the mixture itself: writing into its arrays must fail, not change
    every later bird of the model."""
    mixture = _mixture(2)
    for name in ("weights", "means", "cholesky"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(mixture, name)[0] = 0.0


def test_codes_made_ahead_by_one_learned_prior_are_never_another_ones() -> None:
    from birdvae.runtime.prior import LearnedPrior

    first, second = LearnedPrior(lambda noise: noise, 2), LearnedPrior(lambda n: n * 0 + 7, 2)
    draws = Draws(5)
    first.sample(1, draws)
    np.testing.assert_array_equal(second.sample(2, draws), np.full((2, 2), 7, np.float32))


def test_negative_zero_temperature_reads_as_zero() -> None:
    """-0 is a temperature of 0, and a settings line should not print it as "-0"."""
    from birdvae.runtime.prior import check_temperature

    assert math.copysign(1.0, check_temperature(-0.0)) == 1.0


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_load_reads_a_valid_file(tmp_path: Path) -> None:
    m = _mixture(3)
    path = _save(tmp_path / "p.npz", weights=m.weights, means=m.means, cholesky=m.cholesky)
    loaded = GaussianMixture.load(path.read_bytes(), latent_dim=3, components=2)
    assert loaded.components == 2
    for name in ("weights", "means", "cholesky"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(m, name), err_msg=name)


def test_load_reads_arrays_stored_in_fortran_order(tmp_path: Path) -> None:
    """numpy stores a transposed or Fortran-ordered array as it lies in memory, with
    fortran_order in its header: read back in C order, each factor would be its transpose
    (upper-triangular, refused) and the means scrambled."""
    m = _mixture(3)
    path = _save(tmp_path / "p.npz", weights=m.weights, means=np.asfortranarray(m.means),
                 cholesky=np.asfortranarray(m.cholesky))  # fmt: skip
    loaded = GaussianMixture.load(path.read_bytes(), latent_dim=3, components=2)
    np.testing.assert_array_equal(loaded.means, m.means)
    np.testing.assert_array_equal(loaded.cholesky, m.cholesky)


def _arrays(d: int = 3, **changes: np.ndarray) -> dict[str, np.ndarray]:
    """Valid prior arrays for 2 components of dimension d, with some replaced."""
    arrays = {
        "weights": np.ones(2),
        "means": np.zeros((2, d)),
        "cholesky": np.tile(np.eye(d), (2, 1, 1)),
    }
    arrays.update(changes)
    return {name: value for name, value in arrays.items() if value is not None}


BAD_FILES = {
    "missing-array": (_arrays(cholesky=None), "lacks"),
    "wrong-dim": (_arrays(d=5), "latent size"),
    "wrong-k": (_arrays(means=np.zeros((3, 3))), "shape"),
    "not-triangular": (_arrays(cholesky=np.ones((2, 3, 3))), "lower-triangular"),
    "zero-diagonal": (_arrays(cholesky=np.zeros((2, 3, 3))), "positive diagonal"),
    "negative-weight": (_arrays(weights=-np.ones(2)), "weights"),
    "nan": (_arrays(weights=np.array([1.0, np.nan])), "NaN"),
    "nan-mean": (_arrays(means=np.array([[0.0, np.nan, 0.0], [0.0, 0.0, 0.0]])), "NaN"),
    "zero-weights": (_arrays(weights=np.zeros(2)), "positive sum"),
    "pickled": (_arrays(weights=np.array([{"a": 1}, 2], dtype=object)), "not a valid prior"),
}


@pytest.mark.parametrize(("arrays", "message"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_load_refuses_bad_files(tmp_path: Path, arrays: dict, message: str) -> None:
    path = _save(tmp_path / "p.npz", **arrays)
    with pytest.raises(ModelFormatError, match=message):
        GaussianMixture.load(path.read_bytes(), latent_dim=3, components=2)


@pytest.mark.parametrize(("components", "refused"), [(2, False), (3, True)])
def test_load_bounds_a_mixture_by_its_factor_values(tmp_path, monkeypatch, components, refused):
    """components x D x D at most MAX_PRIOR_VALUES (here 18 for D = 3): two components fit,
    three do not, whatever a sampler's bound on noise numbers is."""
    from birdvae.runtime import format as model_format

    monkeypatch.setattr(model_format, "MAX_PRIOR_VALUES", 18)
    monkeypatch.setattr(model_format, "MAX_LATENT_DIM", 2)  # the sampler's, not the mixture's
    arrays = _arrays(weights=np.ones(components), means=np.zeros((components, 3)),
                     cholesky=np.tile(np.eye(3), (components, 1, 1)))  # fmt: skip
    data = _save(tmp_path / "p.npz", **arrays).read_bytes()
    if refused:
        with pytest.raises(ModelFormatError, match="3 components of 3x3 factors, more than"):
            GaussianMixture.load(data, latent_dim=3, components=components)
    else:
        assert GaussianMixture.load(data, latent_dim=3, components=components).components == 2


def test_load_refuses_a_file_that_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFormatError, match="not a valid prior"):
        GaussianMixture.load(path.read_bytes(), latent_dim=3, components=2)


def test_the_learned_prior_draws_its_noise_from_the_seed_and_scales_it_by_temperature():
    from birdvae.runtime.prior import LearnedPrior

    seen = []

    def graph(noise):
        seen.append(noise)
        return noise[:, :3] * 2.0

    prior = LearnedPrior(graph, noise_dim=5)
    z = prior.sample(4, Draws(7), temperature=0.5)
    rows = LearnedPrior.BLOCK_ROWS
    assert z.shape == (4, 3) and seen[0].dtype == np.float32 and seen[0].shape == (rows, 5)
    expected = 0.5 * Draws(7).noise.standard_normal((rows, 5))
    np.testing.assert_allclose(seen[0], expected.astype(np.float32))
    np.testing.assert_allclose(z, 2.0 * expected[:4, :3], rtol=1e-6)
    np.testing.assert_allclose(prior.sample(4, Draws(7), temperature=0.0), 0.0)


def _batch_dependent(noise: np.ndarray) -> np.ndarray:
    """A graph whose every row depends on the rows beside it, as an int8 sampler's does
    (its activations are quantized over the whole batch)."""
    return noise - noise.mean(axis=0, keepdims=True)


@pytest.mark.parametrize("chunk", [1, 7, 64, 100])
def test_a_learned_prior_draws_the_same_codes_whatever_n_and_batch(chunk: int) -> None:
    from birdvae.runtime.prior import LearnedPrior

    prior = LearnedPrior(_batch_dependent, noise_dim=4)
    whole = prior.sample(150, Draws(3), temperature=0.8)
    draws = Draws(3)
    chunks = [prior.sample(min(chunk, 150 - start), draws, 0.8) for start in range(0, 150, chunk)]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    np.testing.assert_array_equal(prior.sample(10, Draws(3), 0.8), whole[:10])


def test_codes_made_ahead_are_not_reused_at_another_temperature() -> None:
    from birdvae.runtime.prior import LearnedPrior

    prior = LearnedPrior(lambda noise: noise, noise_dim=2)
    draws = Draws(5)
    warm = prior.sample(3, draws, temperature=1.0)
    cold = prior.sample(3, draws, temperature=0.0)
    assert np.abs(warm).sum() > 0 and np.array_equal(cold, np.zeros((3, 2), np.float32))
