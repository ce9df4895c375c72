"""The EM fit of the latent prior: it recovers known mixtures and writes what the runtime reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from birdvae.export.prior import (
    REG_COVAR,
    TOL,
    FittedMixture,
    fit_gaussian_mixture,
    held_out_fit,
)
from birdvae.runtime.format import PRIOR_ARRAYS
from birdvae.runtime.prior import GaussianMixture as RuntimeMixture

WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[0.0, 0.0, 0.0, 0.0], [6.0, 0.0, 0.0, 1.0], [0.0, 6.0, 3.0, 0.0]])


def covariances(rng: np.random.Generator) -> np.ndarray:
    factors = rng.normal(size=(3, 4, 4)) * 0.5
    return factors @ factors.transpose(0, 2, 1) + 0.2 * np.eye(4)


def draw(rng: np.random.Generator, n: int, covs: np.ndarray) -> np.ndarray:
    picks = rng.choice(3, size=n, p=WEIGHTS)
    noise = rng.normal(size=(n, 4))
    return MEANS[picks] + np.einsum("nij,nj->ni", np.linalg.cholesky(covs)[picks], noise)


def test_em_recovers_a_known_mixture():
    rng = np.random.default_rng(1)
    covs = covariances(rng)
    fit = fit_gaussian_mixture(draw(rng, 6000, covs), components=3, seed=0)
    assert fit.converged
    order = [int(np.argmin(np.linalg.norm(fit.means - mean, axis=1))) for mean in MEANS]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(fit.weights[order], WEIGHTS, atol=0.02)
    np.testing.assert_allclose(fit.means[order], MEANS, atol=0.1)
    fitted_covs = fit.cholesky @ fit.cholesky.transpose(0, 2, 1)
    np.testing.assert_allclose(fitted_covs[order], covs, atol=0.15)


def test_the_starting_centres_take_one_of_each_cluster():
    """k-means++ draws each next centre by the distance to the nearest centre so far: by the
    latest one alone, it came back to the first cluster, and EM then settled on a fit that
    draws fewer kinds of bird."""
    from birdvae.export.prior import _kmeans_plus_plus

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(centre, 0.01, (50, 2)) for centre in (0.0, 10.0, 20.0)])
    for seed in range(10):
        centres = _kmeans_plus_plus(x, 3, np.random.default_rng(seed))
        assert sorted(np.rint(centres[:, 0] / 10).astype(int)) == [0, 1, 2], (seed, centres)


def test_one_component_is_the_regularised_sample_gaussian():
    x = np.random.default_rng(2).normal(size=(500, 5)) @ np.diag([1.0, 2.0, 0.5, 1.0, 3.0])
    fit = fit_gaussian_mixture(x, components=1)
    np.testing.assert_allclose(fit.weights, [1.0])
    np.testing.assert_allclose(fit.means[0], x.mean(0), atol=1e-12)
    cov = np.cov(x.T, bias=True) + REG_COVAR * np.eye(5)
    np.testing.assert_allclose(fit.cholesky[0] @ fit.cholesky[0].T, cov, atol=1e-12)
    centred = x - x.mean(0)
    direct = -0.5 * (np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred)
                     + np.linalg.slogdet(cov)[1] + 5 * np.log(2 * np.pi))  # fmt: skip
    np.testing.assert_allclose(fit.log_prob(x), direct, rtol=1e-10)


def test_the_density_weighs_each_component():
    """log_prob is log sum_k w_k N(x | mean_k, cov_k): without the weights, the held-out
    figures the export reports and EM's responsibilities would treat a rare component as
    common."""
    mixture = FittedMixture(np.array([0.9, 0.1]), np.array([[0.0], [0.0]]),
                            np.array([[[1.0]], [[3.0]]]))  # fmt: skip
    x = np.array([[0.0], [2.0]])
    normal = [np.exp(-0.5 * (x[:, 0] / s) ** 2) / (s * np.sqrt(2 * np.pi)) for s in (1.0, 3.0)]
    np.testing.assert_allclose(mixture.log_prob(x), np.log(0.9 * normal[0] + 0.1 * normal[1]))


def test_em_stops_once_the_mean_log_likelihood_moves_less_than_tol_per_dimension():
    """TOL is in nats per latent dimension: the fit stops at the first iteration whose mean
    log-likelihood moved less than TOL times D from the one before, and not before it."""
    x = np.random.default_rng(0).normal(size=(400, 2))
    fit = fit_gaussian_mixture(x, components=3)
    assert fit.converged and 3 < fit.iterations < 300  # overlapping components: slow
    ll = {n: fit_gaussian_mixture(x, components=3, max_iter=n).log_prob(x).mean()
          for n in (fit.iterations - 2, fit.iterations - 1)}  # fmt: skip
    ll[fit.iterations] = fit.log_prob(x).mean()
    last, before = fit.iterations, fit.iterations - 1
    assert abs(ll[last] - ll[before]) < TOL * 2 <= abs(ll[before] - ll[before - 1])


def test_a_component_left_without_codes_stays_finite():
    """Codes of two distinct values and three components: k-means++ repeats a centre and EM
    leaves one component empty, which must not turn the prior into NaN."""
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 5, axis=0)
    fit = fit_gaussian_mixture(x, components=3)
    for name in ("weights", "means", "cholesky"):
        assert np.isfinite(getattr(fit, name)).all(), name
    np.testing.assert_allclose(np.sort(fit.weights)[1:], [0.5, 0.5])


def test_collapsed_dimensions_stay_invertible():
    x = np.random.default_rng(3).normal(size=(200, 3))
    x[:, 2] = 0.25  # a latent dimension the encoder never uses
    fit = fit_gaussian_mixture(x, components=2)
    assert np.isfinite(fit.log_prob(x)).all()
    assert (np.diagonal(fit.cholesky, axis1=1, axis2=2) > 0).all()


def test_saved_prior_is_what_the_runtime_loads(tmp_path: Path):
    rng = np.random.default_rng(4)
    fit = fit_gaussian_mixture(draw(rng, 600, covariances(rng)), components=3)
    path = tmp_path / "prior.npz"
    fit.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(PRIOR_ARRAYS)
        assert all(data[name].dtype == np.float32 for name in PRIOR_ARRAYS)
        assert data["cholesky"].shape == (3, 4, 4)
        assert not np.triu(data["cholesky"], 1).any()
    loaded = RuntimeMixture.load(path.read_bytes(), latent_dim=4, components=3)
    for name in PRIOR_ARRAYS:  # float32 on disk: the fit's float64 to float32's precision
        np.testing.assert_allclose(getattr(loaded, name), getattr(fit, name), rtol=1e-5,
                                   atol=1e-6, err_msg=name)  # fmt: skip


def test_held_out_fit_beats_the_standard_prior_on_mixture_data():
    rng = np.random.default_rng(5)
    covs = covariances(rng)
    fit = fit_gaussian_mixture(draw(rng, 2000, covs), components=3)
    figures = held_out_fit(fit, draw(rng, 500, covs))
    assert figures["val_nats_per_dim_fitted"] > figures["val_nats_per_dim_standard"]
    assert held_out_fit(fit, np.zeros((0, 4))) == {}


@pytest.mark.parametrize(
    ("x", "components", "message"),
    [
        (np.zeros((10,)), 1, "2-D"),
        (np.zeros((3, 2)), 4, "too few"),
        (np.zeros((1, 2)), 1, "too few"),  # one code has no spread to fit
        (np.full((10, 2), np.nan), 1, "NaN"),
        (np.zeros((10, 2)), 0, "at least one"),
    ],
)
def test_unusable_codes_are_refused(x, components, message):
    with pytest.raises(ValueError, match=message):
        fit_gaussian_mixture(x, components)
