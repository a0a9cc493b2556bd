"""Editing with a trained model: deterministic DDIM inversion of data to noise, and spherical
interpolation between noises.

(SDEdit and inpainting, which start the reverse loop from data or keep known values, are options
of the samplers themselves.)
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from jax import Array

from jaxdiff.compilation import jit
from jaxdiff.diffusion import check_objective, model_predictions
from jaxdiff.samplers import TIMESTEP_SPACINGS, ddim_timesteps
from jaxdiff.sampling import call_model, check_num_steps, check_shape, finish, prepare_model
from jaxdiff.schedules import Schedule


@functools.partial(jit, static_argnames=("num_steps", "objective", "timestep_spacing",
                                         "return_trajectory"))
def _invert_loop(model_fn, s, x0, cond, *, num_steps, objective, timestep_spacing,
                 return_trajectory):
    # the DDIM pairs walked backwards: from t_prev (-1: abar = 1, the data) up to t
    pairs = jnp.asarray(ddim_timesteps(s.timesteps, num_steps, timestep_spacing)[::-1])
    alphas_cumprod = jnp.asarray(s.alphas_cumprod)

    def step(x, pair):
        t, t_prev = pair[0], pair[1]
        abar = alphas_cumprod[t]
        abar_prev = jnp.where(t_prev >= 0, alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
        # the model sees x at the lower noise level with the higher t (the usual approximation:
        # the exact eps at t would need the unknown x_t)
        t_batch = jnp.full((x.shape[0],), t, jnp.int32)
        output = call_model(model_fn, x, t_batch, cond)
        eps = model_predictions(s, output, x, t_batch, objective).eps
        x0_hat = (x - jnp.sqrt(1.0 - abar_prev) * eps) / jnp.sqrt(abar_prev)
        x_next = jnp.sqrt(abar) * x0_hat + jnp.sqrt(1.0 - abar) * eps
        return x_next, (x_next if return_trajectory else None)

    x, trajectory = jax.lax.scan(step, x0, pairs)
    return finish(x, trajectory, x0, return_trajectory)


def ddim_invert(
    model_fn: Callable[..., Array],
    s: Schedule,
    x0: Array,
    *,
    num_steps: int = 50,
    objective: str = "pred_noise",
    timestep_spacing: str = "trailing",
    cond: Mapping[str, Array] | None = None,
    return_trajectory: bool = False,
    learned_variance: bool = False,
) -> Array:
    """Deterministic DDIM inversion (Song et al. 2021, sec. 4.3; eta = 0): the x_T from which
    `ddim_sample(..., eta=0, num_steps, timestep_spacing, x_T=x_T)` returns approximately x0.

    It walks the DDIM times of `ddim_timesteps` upwards: x_t = sqrt(abar_t) x0_hat +
    sqrt(1 - abar_t) eps_hat, with eps_hat = model_fn(x_{t_prev}, t) and x0_hat the x0 it implies
    at the lower level t_prev (the standard approximation of the ODE step; exact as the steps
    shrink). x0: float32 [B, ...] in model space. Returns x_T, or (x_T, trajectory
    [num_steps + 1, *shape] from x0 up to x_T) with `return_trajectory`. No x0 clipping.
    `learned_variance`: the model returns [prediction, v]; the prediction is used.
    """
    check_objective(objective)
    check_num_steps(num_steps, s.timesteps)
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"unknown timestep_spacing={timestep_spacing!r}; "
                         f"choose one of {', '.join(TIMESTEP_SPACINGS)}")
    x0 = jnp.asarray(x0, jnp.float32)
    shape = check_shape(x0.shape)
    cond = dict(cond or {})
    model_fn = prepare_model(model_fn, shape, cond, False, None, 0.0, None,
                             bool(learned_variance))
    return _invert_loop(model_fn, s, x0, cond, num_steps=int(num_steps), objective=objective,
                        timestep_spacing=timestep_spacing,
                        return_trajectory=bool(return_trajectory))


def slerp(x0: Array, x1: Array, alpha) -> Array:
    """Spherical interpolation between two noises per example (Shoemake 1985), the usual way to
    interpolate Gaussian x_T (a straight line would pass through low-norm, atypical noise):

        slerp = sin((1 - a) theta) / sin(theta) x0 + sin(a theta) / sin(theta) x1,

    theta the angle between the flattened x0[i] and x1[i]; nearly parallel pairs fall back to the
    straight line. x0, x1: [B, ...]; alpha: a number or [B] in [0, 1]."""
    x0, x1 = jnp.asarray(x0, jnp.float32), jnp.asarray(x1, jnp.float32)
    if x0.shape != x1.shape:
        raise ValueError(f"slerp needs equal shapes, got {x0.shape} and {x1.shape}")
    flat0, flat1 = x0.reshape(x0.shape[0], -1), x1.reshape(x1.shape[0], -1)
    cosine = jnp.sum(flat0 * flat1, axis=1) / (
        jnp.linalg.norm(flat0, axis=1) * jnp.linalg.norm(flat1, axis=1))
    theta = jnp.arccos(jnp.clip(cosine, -1.0, 1.0))
    alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), theta.shape)
    sin_theta = jnp.sin(theta)
    parallel = sin_theta < 1e-6
    safe = jnp.where(parallel, 1.0, sin_theta)
    w0 = jnp.where(parallel, 1.0 - alpha, jnp.sin((1.0 - alpha) * theta) / safe)
    w1 = jnp.where(parallel, alpha, jnp.sin(alpha * theta) / safe)
    expand = (-1,) + (1,) * (x0.ndim - 1)
    return w0.reshape(expand) * x0 + w1.reshape(expand) * x1
