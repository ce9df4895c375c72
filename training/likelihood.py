"""Decoder likelihoods over 8-bit pixels, so the training loss is the negative ELBO in nats.

Each likelihood turns the decoder's raw output (``params``) into a per-image negative
log-likelihood of the uint8 image and into the image a person sees (the distribution's mean).
They share one interface, so callers never ask which one they hold: ``nll(params, x,
coupling_weight)`` (the weight scales colour couplings where there are any), ``mean``, and the
flags ``has_coupling`` and ``draws_pixels`` (whether ``noise_params`` gives the runtime a pixel
distribution to draw from).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import ConfigError

BIN = 1.0 / 255.0  # width of one 8-bit level on the [0, 1] scale
MIN_LOG_SCALE = -7.0


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, S, S] -> float in [0, 1]: the model's input and the pixel grid's centres."""
    return x_uint8.float() / 255.0


class DiscretizedLogistic:
    """One logistic per sub-pixel with a learned, per-pixel scale, integrated over each 8-bit bin.

    ``params`` holds 6 channels: 3 locations (in [0, 1] units) and 3 log-scales. The learned scale
    lets the decoder be sharp where it is sure and honest where it is not.
    """

    name = "discretized_logistic"
    params_per_channel = 2
    is_discrete = True
    has_coupling = False
    draws_pixels = True
    # Start at mid-grey with a scale of ~0.05: a scale of 1 (log-scale 0) makes the likelihood
    # so flat that the location gets almost no gradient and the latent code is ignored.
    initial_bias = (0.5, 0.5, 0.5, -3.0, -3.0, -3.0)

    @staticmethod
    def split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Locations and (clamped) log-scales, 3 channels each."""
        loc, log_scale = params[:, :3].float(), params[:, 3:6].float()
        return loc, log_scale.clamp(min=MIN_LOG_SCALE)

    def log_prob(self, params: torch.Tensor, x_uint8: torch.Tensor) -> torch.Tensor:
        """Log-probability of each sub-pixel's 8-bit value, shape [N, 3, S, S]."""
        loc, log_scale = self.split(params)
        return logistic_bin_log_prob(loc, log_scale, x_uint8)

    def nll(
        self, params: torch.Tensor, x_uint8: torch.Tensor, coupling_weight: float = 1.0
    ) -> torch.Tensor:
        """Negative log-likelihood in nats, one value per image (no couplings to weigh)."""
        return -self.log_prob(params, x_uint8).flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The displayable image: the logistic's centre, clipped to the pixel range."""
        return params[:, :3].float().clamp(0.0, 1.0)

    def noise_params(self, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the runtime needs to draw pixels, not just show the mean: the logistics'
        centres (unclipped), scales and channel couplings (zero here: channels independent),
        [N, 3, S, S] each."""
        loc, log_scale = self.split(params)
        # Zero as ``0 * log_scale`` rather than zeros_like: exported graphs keep its static shape.
        return loc, log_scale.exp(), 0.0 * log_scale


class CoupledLogistic(DiscretizedLogistic):
    """The discretized logistic with colour channels coupled linearly, as in PixelCNN++.

    A blurred edge errs the same way in red, green and blue, so the channels' residuals are
    strongly correlated; independent channels pay for that correlation three times and, when
    sampled, add colour speckle. Here green's location moves by ``a * (red - red location)`` and
    blue's by ``b * (red - ...) + c * (green - ...)``, with a, b, c in (-1, 1) per pixel. The mean
    image is unchanged (the shifts average to zero); only the likelihood and the noise differ.
    ``params`` holds 9 channels: 3 locations, 3 log-scales, 3 raw couplings (a, b, c).
    """

    name = "coupled_logistic"
    params_per_channel = 3
    has_coupling = True
    initial_bias = (0.5, 0.5, 0.5, -3.0, -3.0, -3.0, 0.0, 0.0, 0.0)

    def log_prob(
        self, params: torch.Tensor, x_uint8: torch.Tensor, coupling_weight: float = 1.0
    ) -> torch.Tensor:
        """As the plain logistic's, with each channel conditioned on the ones before it.
        ``coupling_weight`` scales the couplings (training ramps it in; 1 is the model)."""
        loc, log_scale = self.split(params)
        a, b, c = (coupling_weight * self.coupling(params)).unbind(1)
        residual = to_unit(x_uint8) - loc
        red, green, blue = loc.unbind(1)
        loc = torch.stack(
            [red, green + a * residual[:, 0], blue + b * residual[:, 0] + c * residual[:, 1]], 1
        )
        return logistic_bin_log_prob(loc, log_scale, x_uint8)

    def nll(
        self, params: torch.Tensor, x_uint8: torch.Tensor, coupling_weight: float = 1.0
    ) -> torch.Tensor:
        return -self.log_prob(params, x_uint8, coupling_weight).flatten(1).sum(1)

    @staticmethod
    def coupling(params: torch.Tensor) -> torch.Tensor:
        return torch.tanh(params[:, 6:9].float())

    def noise_params(self, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loc, log_scale = self.split(params)
        return loc, log_scale.exp(), self.coupling(params)


def logistic_bin_log_prob(
    loc: torch.Tensor, log_scale: torch.Tensor, x_uint8: torch.Tensor
) -> torch.Tensor:
    """Log-mass of each 8-bit value's bin under a logistic; the end bins take the tails."""
    x = to_unit(x_uint8)
    inv_scale = torch.exp(-log_scale)
    centred = x - loc
    plus = inv_scale * (centred + BIN / 2)
    minus = inv_scale * (centred - BIN / 2)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus): the 0 bin takes (-inf, ..]
    log_sf_minus = -F.softplus(minus)  # log(1 - sigmoid(minus)): the 255 bin takes [.., inf)
    # sigmoid(plus) - sigmoid(minus) is also sigmoid(-minus) - sigmoid(-plus): taken on the side
    # nearer 0, float32 never subtracts two numbers close to 1 for a pixel far above the loc.
    side = torch.where(centred > 0, -1.0, 1.0)
    cdf_delta = side * (torch.sigmoid(side * plus) - torch.sigmoid(side * minus))
    mid = inv_scale * centred
    # Where the bin's mass underflows, use the density at its centre times its width.
    log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) + math.log(BIN)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(x_uint8 == 0, log_cdf_plus, torch.where(x_uint8 == 255, log_sf_minus, inner))


class Bernoulli:
    """The blog post's summed binary cross-entropy: a loss, but no likelihood over 8-bit pixels.

    Its bits/dim are reported by reading the mean as a discretized Gaussian (``evaluate``).
    """

    name = "bernoulli"
    params_per_channel = 1
    is_discrete = False
    has_coupling = False
    draws_pixels = False  # its "pixels" are probabilities, not a distribution over 8-bit values
    initial_bias = (0.0, 0.0, 0.0)

    def nll(
        self, params: torch.Tensor, x_uint8: torch.Tensor, coupling_weight: float = 1.0
    ) -> torch.Tensor:
        target = to_unit(x_uint8)
        bce = F.binary_cross_entropy_with_logits(params.float(), target, reduction="none")
        return bce.flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params.float())


def discretized_gaussian_nll(
    mean: torch.Tensor, x_uint8: torch.Tensor, sigma: float
) -> torch.Tensor:
    """NLL in nats per image of 8-bit pixels under N(mean, sigma^2) integrated over each bin."""
    x = to_unit(x_uint8)
    dist = torch.distributions.Normal(mean.float(), sigma)
    upper = torch.where(x_uint8 == 255, torch.ones_like(x), dist.cdf(x + BIN / 2))
    lower = torch.where(x_uint8 == 0, torch.zeros_like(x), dist.cdf(x - BIN / 2))
    density = dist.log_prob(x) + math.log(BIN)
    mass = upper - lower
    log_p = torch.where(mass > 1e-6, torch.log(mass.clamp(min=1e-12)), density)
    return -log_p.flatten(1).sum(1)


LIKELIHOODS = {
    "logistic": DiscretizedLogistic,
    "coupled_logistic": CoupledLogistic,
    "bernoulli": Bernoulli,
}


def make_likelihood(name: str) -> DiscretizedLogistic | Bernoulli:
    try:
        return LIKELIHOODS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown likelihood {name!r} (choose from {sorted(LIKELIHOODS)})"
        ) from None


def bits_per_dim(nats_per_image: torch.Tensor | float, image_size: int) -> float:
    """Convert nats per image to bits per sub-pixel (3 x S x S dimensions)."""
    return float(nats_per_image) / (3 * image_size * image_size * math.log(2))
