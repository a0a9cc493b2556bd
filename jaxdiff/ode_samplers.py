"""Fast probability-flow ODE samplers: DPM-Solver++ (Lu et al. 2022) and the EDM samplers of
Karras et al. 2022 (Euler, Heun, and their stochastic "churn" variant).

Both integrate the probability-flow ODE of the discrete-time VP model in its variance-exploding
form: with sigma(t) = sqrt((1 - abar_t) / abar_t), x_VE = x_VP / sqrt(abar)
= x_VP sqrt(1 + sigma^2),
and the ODE is dx_VE / dsigma = (x_VE - D(x_VE, sigma)) / sigma, D the x0 prediction
(Karras et al. eq. 3 with s(t) = 1). Every sampler starts from x_T, unit Gaussian noise at
t = T - 1 in VP space (as `ddpm_sample` and `ddim_sample`), so one x_T gives comparable samples
across samplers, and its last step goes to sigma = 0, returning the x0 prediction.

As for the other samplers (jaxdiff.samplers): one `lax.scan` compiled once per (shape, step
count, static options), parameters, key, x_T and guidance scales traced; `model_fn` is any model
function (closures and NNX modules included); the model contract is the same, except that
`karras_sample` calls the model at real-valued t (float32 [B] in [0, T - 1]), found by
interpolating log sigma in the schedule's table, as diffusers and k-diffusion do. jaxdiff's
models embed t sinusoidally and accept real t.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdiff.compilation import jit
from jaxdiff.diffusion import check_objective
from jaxdiff.sampling import (call_model, check_editing, check_num_steps, check_shape,
                              check_steps_after_start, check_x_T, finish, noised_start,
                              prepare_model, report_step, run_with_progress, start_noise)
from jaxdiff.schedules import Schedule

DPM_SPACINGS = ("linspace", "leading", "trailing")
KARRAS_SOLVERS = ("euler", "heun")


def sigmas_of(s: Schedule) -> Array:
    """sigma(t) = sqrt((1 - abar_t) / abar_t) for t = 0..T-1, float32 [T] (usable under jit)."""
    return jnp.sqrt((1.0 - s.alphas_cumprod) / s.alphas_cumprod)


def dpm_solver_timesteps(timesteps: int, num_steps: int, spacing: str = "linspace") -> np.ndarray:
    """The integer times DPMSolverMultistepScheduler visits, descending, int32 [num_steps]
    (diffusers' definitions, with steps_offset = 0):

      "linspace"  round(linspace(0, T - 1, num_steps + 1)) reversed, the last (0) dropped
      "leading"   k * (T // (num_steps + 1)), k = num_steps, ..., 1
      "trailing"  round(arange(T, 0, -T / num_steps)) - 1
    """
    if spacing not in DPM_SPACINGS:
        raise ValueError(f"unknown timestep_spacing={spacing!r}; choose one of "
                         f"{', '.join(DPM_SPACINGS)}")
    check_num_steps(num_steps, timesteps)
    if spacing == "linspace":
        times = np.linspace(0, timesteps - 1, num_steps + 1).round()[::-1][:-1]
    elif spacing == "leading":
        ratio = timesteps // (num_steps + 1)
        times = (np.arange(0, num_steps + 1) * ratio).round()[::-1][:-1]
    else:
        times = np.arange(timesteps, 0, -timesteps / num_steps).round() - 1
    return times.astype(np.int32)


def dpm_solver_orders(num_steps: int, order: int, lower_order_final: bool) -> np.ndarray:
    """The order of each step: warm-up min(order, k + 1) at step k; the last step is first order
    (it goes to sigma = 0); with `lower_order_final` and fewer than 15 steps the one before it is
    at most second order (diffusers' rule)."""
    orders = np.minimum(order, np.arange(num_steps) + 1)
    orders[-1] = 1
    if lower_order_final and num_steps < 15 and num_steps >= 2:
        orders[-2] = min(orders[-2], 2)
    return orders.astype(np.int32)


def _x0_from_output(output, x, alpha, sigma, objective: str, clip_x0: bool):
    """The x0 prediction from a model output at VP noise level (alpha, sigma), x in VP space."""
    if objective == "pred_noise":
        x0 = (x - sigma * output) / alpha
    elif objective == "pred_x0":
        x0 = output
    else:
        x0 = alpha * x - sigma * output
    return jnp.clip(x0, -1.0, 1.0) if clip_x0 else x0


@functools.partial(
    jit, static_argnames=("shape", "num_steps", "order", "objective", "clip_x0",
                          "timestep_spacing", "lower_order_final", "return_trajectory", "report",
                          "t_start", "self_condition"))
def _dpm_loop(model_fn, s, key, x_T, cond, token, x_start, *, shape, num_steps, order, objective,
              clip_x0, timestep_spacing, lower_order_final, return_trajectory, report, t_start,
              self_condition):
    x_T, _ = start_noise(key, x_T, shape)
    # SDEdit spreads the steps over the times [0, t_start], as if T were t_start + 1
    span = s.timesteps if t_start is None else t_start + 1
    times = dpm_solver_timesteps(span, num_steps, timestep_spacing)
    # diffusers' float32 sigma table (interpolated at integer times: the table itself), then 0
    sigma_table = sigmas_of(s)
    sigmas = jnp.concatenate([sigma_table[jnp.asarray(times)], jnp.zeros((1,), jnp.float32)])
    alphas = 1.0 / jnp.sqrt(sigmas**2 + 1.0)
    vp_sigmas = sigmas * alphas
    # lambda = log(alpha / sigma); the final sigma = 0 has lambda = inf, where the first-order
    # step is x0 exactly (handled below), so a finite stand-in keeps the arithmetic finite
    lambdas = jnp.log(alphas) - jnp.log(jnp.where(vp_sigmas > 0, vp_sigmas, 1.0))
    orders = jnp.asarray(dpm_solver_orders(num_steps, order, lower_order_final))

    def step(carry, index):
        x, m1, m2 = carry  # the x0 predictions of the previous two steps
        t = jnp.asarray(times)[index]
        alpha_s, sigma_s = alphas[index], vp_sigmas[index]
        output = call_model(model_fn, x, jnp.full((shape[0],), t, jnp.int32), cond,
                            m1 if self_condition else None)
        m0 = _x0_from_output(output, x, alpha_s, sigma_s, objective, clip_x0)
        alpha_t, sigma_t = alphas[index + 1], vp_sigmas[index + 1]
        lambda_t, lambda_s0 = lambdas[index + 1], lambdas[index]
        lambda_s1 = lambdas[jnp.maximum(index - 1, 0)]
        lambda_s2 = lambdas[jnp.maximum(index - 2, 0)]
        h = lambda_t - lambda_s0
        phi = jnp.expm1(-h)  # exp(-h) - 1
        first = (sigma_t / sigma_s) * x - alpha_t * phi * m0
        # second order (Lu et al. 2022b, multistep "midpoint" form, as diffusers)
        r0 = (lambda_s0 - lambda_s1) / h
        d1 = (m0 - m1) / r0
        second = first - 0.5 * alpha_t * phi * d1
        # third order
        r1 = (lambda_s1 - lambda_s2) / h
        d1_0, d1_1 = d1, (m1 - m2) / r1
        d1_3 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        third = (first + alpha_t * (phi / h + 1.0) * d1_3
                 - alpha_t * ((phi + h) / h**2 - 0.5) * d2)
        step_order = orders[index]
        x_next = jnp.where(step_order == 1, first, jnp.where(step_order == 2, second, third))
        x_next = jnp.where(sigma_t > 0, x_next, m0)  # the last step returns the x0 prediction
        report_step(report, token, index, num_steps)
        return (x_next, m0, m1), (x_next if return_trajectory else None)

    x_first = noised_start(s, x_T, x_start, int(times[0]))
    zeros = jnp.zeros_like(x_T)
    (x, _, _), trajectory = jax.lax.scan(step, (x_first, zeros, zeros),
                                         jnp.arange(num_steps, dtype=jnp.int32))
    return finish(x, trajectory, x_first, return_trajectory)


def dpm_solver_sample(
    model_fn: Callable[..., Array],
    s: Schedule,
    *,
    key: Array,
    shape,
    num_steps: int = 20,
    order: int = 2,
    objective: str = "pred_noise",
    clip_x0: bool = False,
    timestep_spacing: str = "linspace",
    lower_order_final: bool = True,
    x_T: Array | None = None,
    return_trajectory: bool = False,
    cond: Mapping[str, Array] | None = None,
    guidance_scale=None,
    guidance_rescale=0.0,
    null_cond: Mapping[str, Array] | None = None,
    progress=False,
    x_start: Array | None = None,
    t_start: int | None = None,
    self_condition: bool = False,
    learned_variance: bool = False,
):
    """Multistep DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models", algorithms 1-2; data prediction), orders 1, 2 and 3.

    With lambda = log(alpha / sigma) (VP alpha = sqrt(abar), sigma = sqrt(1 - abar)), h the step
    in lambda and D0, D1, D2 the divided differences of the x0 predictions of the current and
    previous steps, the first-order step is
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) x0_hat,
    which is DDIM with eta = 0; the second and third orders add the corrections of
    diffusers' DPMSolverMultistepScheduler (algorithm_type "dpmsolver++", solver_type "midpoint",
    final_sigmas_type "zero"), whose conventions this follows: the times of
    `dpm_solver_timesteps`, float32 sigmas, warm-up from first order, the last step to
    sigma = 0 returning x0_hat, and `lower_order_final` (see `dpm_solver_orders`).

    model_fn, objective, cond, guidance_scale, guidance_rescale, null_cond, self_condition (the
    previous step's x0 prediction), progress and learned_variance (a [prediction, v] model: the
    prediction is used) are as in `ddim_sample`; clip_x0 (default off, as diffusers) clips x0_hat
    to [-1, 1]. Returns samples of `shape`, or (samples, trajectory [num_steps + 1, *shape], x_T
    first).

    SDEdit (`x_start`, `t_start`; t_start static) as in `ddim_sample`: the steps are the times
    `dpm_solver_timesteps(t_start + 1, num_steps, timestep_spacing)`, x_start noised to the
    first of them (t_start except for "leading") with x_T as the noise. (Inpainting is not
    offered: replacing part of x between steps would invalidate the multistep history.)
    """
    check_objective(objective)
    check_num_steps(num_steps, s.timesteps)
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got order={order!r}")
    if timestep_spacing not in DPM_SPACINGS:
        raise ValueError(f"unknown timestep_spacing={timestep_spacing!r}; choose one of "
                         f"{', '.join(DPM_SPACINGS)}")
    shape = check_shape(shape)
    x_start, t_start, _, _ = check_editing(s.timesteps, shape, x_start, t_start, None, None)
    check_steps_after_start(num_steps, t_start)
    cond = dict(cond or {})
    model_fn = prepare_model(model_fn, shape, cond, self_condition, guidance_scale,
                             guidance_rescale, null_cond, bool(learned_variance))
    x_T = check_x_T(x_T, shape)
    loop = lambda report, token: _dpm_loop(  # noqa: E731
        model_fn, s, key, x_T, cond, token, x_start, shape=shape, num_steps=int(num_steps),
        order=int(order), objective=objective, clip_x0=bool(clip_x0),
        timestep_spacing=timestep_spacing, lower_order_final=bool(lower_order_final),
        return_trajectory=bool(return_trajectory), report=report, t_start=t_start,
        self_condition=bool(self_condition))
    return run_with_progress(progress, int(num_steps), "DPM-Solver++", loop)


def karras_sigmas(sigma_min, sigma_max, num_steps: int, rho=7.0) -> Array:
    """Karras et al. 2022, eq. 5: sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho)
    - sigma_max^(1/rho)))^rho for i = 0..n-1, then sigma_n = 0. float32 [n + 1]; the sigmas and
    rho may be traced."""
    ramp = jnp.linspace(0.0, 1.0, num_steps) if num_steps > 1 else jnp.zeros(1)
    inverse_min, inverse_max = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (inverse_max + ramp * (inverse_min - inverse_max)) ** rho
    return jnp.concatenate([sigmas.astype(jnp.float32), jnp.zeros((1,), jnp.float32)])


def sigma_to_t(sigma: Array, log_sigmas: Array) -> Array:
    """Real-valued t whose log sigma interpolates the schedule's table linearly (diffusers'
    `_sigma_to_t`, k-diffusion's `sigma_to_t`), clamped to [0, T - 1]."""
    return jnp.interp(jnp.log(jnp.maximum(sigma, 1e-10)), log_sigmas,
                      jnp.arange(log_sigmas.shape[0], dtype=jnp.float32))


@functools.partial(
    jit, static_argnames=("shape", "num_steps", "solver", "objective", "clip_x0",
                          "return_trajectory", "report", "t_start", "self_condition"))
def _karras_loop(model_fn, s, key, x_T, cond, rho, churn, token, x_start, *, shape, num_steps,
                 solver, objective, clip_x0, return_trajectory, report, t_start, self_condition):
    x_T, key = start_noise(key, x_T, shape)
    sigma_table = sigmas_of(s)
    log_sigmas = jnp.log(sigma_table)
    start = s.timesteps - 1 if t_start is None else t_start
    sigma_max = sigma_table[start]
    sigmas = karras_sigmas(sigma_table[0], sigma_max, num_steps, rho)
    gamma = jnp.minimum(churn / num_steps, jnp.sqrt(2.0) - 1.0)

    def denoise(x, sigma, x0_prev):
        """D(x_VE, sigma): the model at VP input x / sqrt(1 + sigma^2) and real t(sigma)."""
        alpha = 1.0 / jnp.sqrt(1.0 + sigma**2)
        t = jnp.full((shape[0],), sigma_to_t(sigma, log_sigmas), jnp.float32)
        output = call_model(model_fn, x * alpha, t, cond, x0_prev if self_condition else None)
        return _x0_from_output(output, x * alpha, alpha, sigma * alpha, objective, clip_x0)

    def step(carry, index):
        x, x0_prev = carry
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        # Algorithm 2: raise the noise level to sigma_hat = (1 + gamma) sigma with fresh noise
        sigma_hat = sigma * (1.0 + gamma)
        noise = jax.random.normal(jax.random.fold_in(key, index), shape, x.dtype)
        # sqrt(sigma_hat^2 - sigma^2) written as sigma sqrt(gamma (2 + gamma)): the difference of
        # squares leaves a rounding residual (XLA may fuse it into an FMA), which at gamma = 0
        # added noise of std ~ sqrt(ulp(sigma^2)) to the deterministic sampler
        x_hat = x + sigma * jnp.sqrt(gamma * (2.0 + gamma)) * noise
        x0 = denoise(x_hat, sigma_hat, x0_prev)
        d = (x_hat - x0) / sigma_hat
        # the Euler step x_hat + (sigma_next - sigma_hat) d, written without the cancellation of
        # two terms of size sigma_hat (float32 loses ulp(sigma_max) there: 16 at sigma 2.6e8)
        ratio = sigma_next / sigma_hat
        x_next = ratio * x_hat + (1.0 - ratio) * x0
        if solver == "heun":  # Algorithm 1, lines 9-11: trapezoidal correction if sigma_next > 0
            safe_next = jnp.where(sigma_next > 0, sigma_next, 1.0)
            d_next = (x_next - denoise(x_next, safe_next, x0)) / safe_next
            corrected = x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)
            x_next = jnp.where(sigma_next > 0, corrected, x_next)
        report_step(report, token, index, num_steps)
        # the trajectory in VP space, comparable with the other samplers'
        vp = x_next / jnp.sqrt(1.0 + sigma_next**2)
        return (x_next, x0), (vp if return_trajectory else None)

    x_first = noised_start(s, x_T, x_start, start)  # VP space
    (x, _), trajectory = jax.lax.scan(
        step, (x_first * jnp.sqrt(1.0 + sigma_max**2), jnp.zeros_like(x_first)),
        jnp.arange(num_steps, dtype=jnp.int32))
    return finish(x, trajectory, x_first, return_trajectory)


def karras_sample(
    model_fn: Callable[..., Array],
    s: Schedule,
    *,
    key: Array,
    shape,
    num_steps: int = 18,
    solver: str = "heun",
    rho: float = 7.0,
    churn: float = 0.0,
    objective: str = "pred_noise",
    clip_x0: bool = False,
    x_T: Array | None = None,
    return_trajectory: bool = False,
    cond: Mapping[str, Array] | None = None,
    guidance_scale=None,
    guidance_rescale=0.0,
    null_cond: Mapping[str, Array] | None = None,
    progress=False,
    x_start: Array | None = None,
    t_start: int | None = None,
    self_condition: bool = False,
    learned_variance: bool = False,
):
    """The EDM sampler of Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based
    Generative Models", algorithms 1 and 2) on a discrete-time VP model.

    Noise levels: `karras_sigmas` from sigma_min = sigma(0) to sigma_max = sigma(T - 1) with
    `rho`, then 0. The VP noise x_T starts the VE ODE at x_T sqrt(1 + sigma_max^2). Each step is
    an Euler step in sigma, dx/dsigma = (x - D(x, sigma)) / sigma, with Heun's trapezoidal
    correction (solver "heun", 2 model calls per step except the last) ; `churn` > 0 adds fresh
    noise first, raising sigma by gamma = min(churn / num_steps, sqrt(2) - 1) (algorithm 2 with
    S_tmin = 0, S_tmax = inf, S_noise = 1). The last step goes to sigma = 0 and returns D.
    The model is called at real t = `sigma_to_t(sigma)`. Model calls: num_steps for "euler",
    2 num_steps - 1 for "heun".

    rho and churn are traced (new values do not recompile). Other arguments as `ddim_sample`
    (with `self_condition`, the model gets the latest x0 prediction; with `learned_variance`,
    the model's [prediction, v] output gives its prediction).
    Returns samples of `shape`, or (samples, trajectory [num_steps + 1, *shape] in VP space).

    SDEdit (`x_start`, `t_start`; t_start static): the sigma grid starts at sigma(t_start)
    instead of sigma(T - 1), from x_start + sigma(t_start) x_T (in VE space; q(x_t_start |
    x_start) with x_T as the noise).
    """
    check_objective(objective)
    check_num_steps(num_steps, s.timesteps)
    if solver not in KARRAS_SOLVERS:
        raise ValueError(f"unknown solver={solver!r}; choose one of {', '.join(KARRAS_SOLVERS)}")
    for name, value, low in (("rho", rho, 0.0), ("churn", churn, 0.0)):
        if not isinstance(value, jax.core.Tracer) and not (np.isfinite(value) and (
                value > low if name == "rho" else value >= low)):
            bound = "> 0" if name == "rho" else ">= 0"
            raise ValueError(f"{name} must be a finite number {bound}, got {name}={value!r}")
    shape = check_shape(shape)
    x_start, t_start, _, _ = check_editing(s.timesteps, shape, x_start, t_start, None, None)
    cond = dict(cond or {})
    model_fn = prepare_model(model_fn, shape, cond, self_condition, guidance_scale,
                             guidance_rescale, null_cond, bool(learned_variance))
    x_T = check_x_T(x_T, shape)
    rho, churn = jnp.asarray(rho, jnp.float32), jnp.asarray(churn, jnp.float32)
    loop = lambda report, token: _karras_loop(  # noqa: E731
        model_fn, s, key, x_T, cond, rho, churn, token, x_start, shape=shape,
        num_steps=int(num_steps), solver=solver, objective=objective, clip_x0=bool(clip_x0),
        return_trajectory=bool(return_trajectory), report=report, t_start=t_start,
        self_condition=bool(self_condition))
    return run_with_progress(progress, int(num_steps), f"Karras {solver}", loop)
