"""Log-densities and KL divergences of diagonal Gaussians, elementwise in nats: the pieces of the
variational bound (jaxdiff.likelihood) and of the hybrid loss of learned variances.

References: the KL between Gaussians in closed form; the discretised Gaussian decoder of Ho et al.
2020 (sec. 3.3), whose bins are the 256 levels of 8-bit data in [-1, 1], as improved-diffusion
computes it (edge bins extend to -inf / +inf).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import ndtr

LOG_2PI = float(np.log(2.0 * np.pi))
BIN_WIDTH = 2.0 / 255.0  # 8-bit levels u / 127.5 - 1


def normal_kl(mean1, logvar1, mean2, logvar2) -> Array:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats:
    0.5 (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1)."""
    return 0.5 * (logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * jnp.exp(-logvar2) - 1.0)


def gaussian_log_likelihood(x, mean, log_variance) -> Array:
    """log N(x; mean, exp(log_variance)), elementwise, in nats (a continuous decoder)."""
    return -0.5 * (LOG_2PI + log_variance + (x - mean) ** 2 * jnp.exp(-log_variance))


def discretized_gaussian_log_likelihood(x, mean, log_scale) -> Array:
    """log P(x) of 8-bit data x in [-1, 1] (levels u / 127.5 - 1) under N(mean, exp(log_scale)^2)
    integrated over x's bin [x - 1/255, x + 1/255], elementwise, in nats; the lowest bin reaches
    down to -inf and the highest up to +inf, so the 256 probabilities sum to 1 (Ho et al. 2020,
    eq. 13). Each probability is floored at 1e-12 before the log, as improved-diffusion; the top
    bin's 1 - Phi(z) is computed as Phi(-z), which float32 keeps far into the tail."""
    centred = x - mean
    inverse_scale = jnp.exp(-log_scale)
    cdf_plus = ndtr(inverse_scale * (centred + BIN_WIDTH / 2))
    cdf_minus = ndtr(inverse_scale * (centred - BIN_WIDTH / 2))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_minus = jnp.log(jnp.maximum(
        ndtr(-inverse_scale * (centred - BIN_WIDTH / 2)), 1e-12))
    log_bin = jnp.log(jnp.maximum(cdf_plus - cdf_minus, 1e-12))
    return jnp.where(x < -0.999, log_cdf_plus,
                     jnp.where(x > 0.999, log_one_minus_cdf_minus, log_bin))
