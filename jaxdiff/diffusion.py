"""The forward process and the conversions between what a denoiser can predict.

With abar_t = `alphas_cumprod[t]` (Ho et al. 2020, eq. 4):
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps                                (q_sample)
  v   = sqrt(abar_t) eps - sqrt(1 - abar_t) x0   (Salimans & Ho 2022, sec. 4)
and each of (eps, x0, v) determines the other two given x_t.

Every function is shape-agnostic: `t` is an int32 array of shape [B] and the data have shape
[B, ...] (points [B, D] or images [B, H, W, C]); the per-example coefficients are reshaped to
[B, 1, ..., 1] explicitly, so the code also runs under `jax_numpy_rank_promotion="raise"`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdiff.schedules import Schedule

OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")


def extract(table: Array, t: Array, ndim: int) -> Array:
    """table[t] reshaped to [B, 1, ..., 1] so that it broadcasts against an array of rank `ndim`."""
    values = jnp.asarray(table)[t]
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def check_timesteps(t, timesteps: int, name: str = "t") -> None:
    """Raise a ValueError naming `t` when concrete values lie outside [0, T) (JAX indexing would
    silently clamp them); traced values cannot be checked and pass."""
    if isinstance(t, jax.core.Tracer):
        return
    values = np.asarray(t)
    if values.size and (values.min() < 0 or values.max() >= timesteps):
        raise ValueError(f"{name} must lie in [0, T={timesteps}), got values from {values.min()} "
                         f"to {values.max()}")


def check_output_shape(output: Array, x_t: Array, learned_variance: bool = False) -> None:
    """Raise a ValueError when the model's output shape is not x_t's (it would broadcast silently
    into the update or the loss), or, with `learned_variance`, not x_t's with the last (channel)
    axis doubled: [prediction, v] (Nichol & Dhariwal 2021). Checked at trace time."""
    shape = getattr(output, "shape", None)
    doubled = x_t.shape[:-1] + (2 * x_t.shape[-1],)
    if learned_variance and shape != doubled:
        if shape == x_t.shape:
            raise ValueError(f"learned variance asked of a model without it: model_fn returned "
                             f"shape {shape}, like x_t; a learned-variance model returns "
                             f"{doubled} (the prediction and v on the last axis)")
        raise ValueError(f"model_fn returned an output of shape {shape} for x_t of shape "
                         f"{x_t.shape}; a learned-variance model returns {doubled} (the "
                         f"prediction and v on the last axis)")
    if not learned_variance and shape != x_t.shape:
        if shape == doubled:
            raise ValueError(f"model_fn returned shape {shape} for x_t of shape {x_t.shape}: "
                             f"a learned-variance model's [prediction, v]; use it with "
                             f"variance='learned_range' (ddpm_sample) or learned_variance=True "
                             f"(the other samplers, diffusion_loss)")
        raise ValueError(f"model_fn returned an output of shape {shape} "
                         f"for x_t of shape {x_t.shape}; a denoiser returns one value per input "
                         f"value (eps, x0 or v, shaped like x_t)")


def q_sample(s: Schedule, x0: Array, t: Array, noise: Array) -> Array:
    """Sample q(x_t | x0): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Ho et al. eq. 4).

    t: int32 [B] in [0, T); concrete values outside raise ValueError."""
    check_timesteps(t, s.timesteps)
    return (
        extract(s.sqrt_alphas_cumprod, t, x0.ndim) * x0
        + extract(s.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise
    )


def predict_x0_from_eps(s: Schedule, x_t: Array, t: Array, eps: Array) -> Array:
    """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps."""
    return (
        extract(s.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
        - extract(s.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps
    )


def predict_eps_from_x0(s: Schedule, x_t: Array, t: Array, x0: Array) -> Array:
    """eps = (sqrt(1/abar) x_t - x0) / sqrt(1/abar - 1), the inverse of `predict_x0_from_eps`."""
    return (extract(s.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0) / extract(
        s.sqrt_recipm1_alphas_cumprod, t, x_t.ndim
    )


def predict_v(s: Schedule, x0: Array, t: Array, eps: Array) -> Array:
    """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)."""
    return (
        extract(s.sqrt_alphas_cumprod, t, x0.ndim) * eps
        - extract(s.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0
    )


def predict_x0_from_v(s: Schedule, x_t: Array, t: Array, v: Array) -> Array:
    """x0 = sqrt(abar) x_t - sqrt(1 - abar) v."""
    return (
        extract(s.sqrt_alphas_cumprod, t, x_t.ndim) * x_t
        - extract(s.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * v
    )


def predict_eps_from_v(s: Schedule, x_t: Array, t: Array, v: Array) -> Array:
    """eps = sqrt(1 - abar) x_t + sqrt(abar) v."""
    return (
        extract(s.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * x_t
        + extract(s.sqrt_alphas_cumprod, t, x_t.ndim) * v
    )


def q_posterior(s: Schedule, x0: Array, x_t: Array, t: Array) -> tuple[Array, Array, Array]:
    """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x0) (Ho et al. eqs. 6-7).

    The variance terms have shape [B, 1, ..., 1].
    """
    mean = (
        extract(s.posterior_mean_coef1, t, x_t.ndim) * x0
        + extract(s.posterior_mean_coef2, t, x_t.ndim) * x_t
    )
    variance = extract(s.posterior_variance, t, x_t.ndim)
    log_variance = extract(s.posterior_log_variance_clipped, t, x_t.ndim)
    return mean, variance, log_variance


def split_learned_variance(output: Array) -> tuple[Array, Array]:
    """A learned-variance model's output [..., 2C] as (the objective's prediction [..., C], the
    variance interpolation value v [..., C]), split on the last (channel) axis."""
    channels = output.shape[-1]
    if channels % 2:
        raise ValueError(f"a learned-variance model output needs an even channel count (the "
                         f"prediction and v), got shape {output.shape}")
    return output[..., : channels // 2], output[..., channels // 2:]


def learned_range_log_variance(s: Schedule, v: Array, t: Array) -> Array:
    """Nichol & Dhariwal 2021, eq. 15 ("learned_range"): log Sigma = f log beta_t
    + (1 - f) log beta~_t with f = (v + 1) / 2, v the model's output (nominally in [-1, 1];
    not clipped, as improved-diffusion), beta~_t the posterior variance (beta~_1 at t = 0:
    `log_posterior_variance`)."""
    fraction = (v + 1.0) / 2.0
    max_log = extract(jnp.log(jnp.asarray(s.betas)), t, v.ndim)
    min_log = extract(log_posterior_variance(s), t, v.ndim)
    return fraction * max_log + (1.0 - fraction) * min_log


def log_posterior_variance(s: Schedule) -> Array:
    """log beta~_t with beta~_0 (zero) replaced by beta~_1, float32 [T]: improved-diffusion's
    `posterior_log_variance_clipped`, the decoder variance at t = 0. (Schedule's own table
    clips beta~_0 at 1e-20 instead, as denoising-diffusion-pytorch; the posterior mean at t = 0
    does not depend on it, but a decoder with variance 1e-20 would.)"""
    variance = jnp.asarray(s.posterior_variance)
    if variance.shape[0] < 2:
        return jnp.log(jnp.maximum(jnp.asarray(s.betas), 1e-20))
    return jnp.log(jnp.concatenate([variance[1:2], variance[1:]]))


class Prediction(NamedTuple):
    """A denoiser's output expressed as both an eps and an x0 prediction."""

    eps: Array
    x0: Array


def target_for(objective: str, s: Schedule, x0: Array, t: Array, noise: Array) -> Array:
    """What a model trained with `objective` should output for (x0, t, noise)."""
    check_objective(objective)
    if objective == "pred_noise":
        return noise
    if objective == "pred_x0":
        return x0
    return predict_v(s, x0, t, noise)


def model_predictions(
    s: Schedule,
    model_output: Array,
    x_t: Array,
    t: Array,
    objective: str,
    clip_x0: bool = False,
) -> Prediction:
    """Turn a model output of any objective into (eps, x0).

    With `clip_x0`, x0 is clipped to [-1, 1] and eps is re-derived from the clipped x0, so the
    pair stays consistent with x_t (as denoising-diffusion-pytorch's `rederive_pred_noise`).
    """
    check_objective(objective)
    if objective == "pred_noise":
        eps = model_output
        x0 = predict_x0_from_eps(s, x_t, t, eps)
    elif objective == "pred_x0":
        x0 = model_output
        eps = predict_eps_from_x0(s, x_t, t, x0)
    else:
        x0 = predict_x0_from_v(s, x_t, t, model_output)
        eps = predict_eps_from_v(s, x_t, t, model_output)
    if clip_x0:
        x0 = jnp.clip(x0, -1.0, 1.0)
        eps = predict_eps_from_x0(s, x_t, t, x0)
    return Prediction(eps=eps, x0=x0)


def check_objective(objective: str) -> None:
    """Raise a ValueError naming `objective` unless it is one of OBJECTIVES."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective={objective!r}; choose one of {', '.join(OBJECTIVES)}")
