"""Reverse-process samplers: ancestral DDPM and (stochastic) DDIM.

Each sampler is one step function and one `lax.scan` over the whole reverse loop, compiled once by
`jax.jit` per (shape, step count, static options). Parameters, key, eta, x_T and guidance scales
are traced: calling a sampler again with new values reuses the compiled loop.

The model contract: `model_fn(x_t, t, **cond) -> output`, with x_t float32 [B, ...] (points
[B, D], images NHWC), t int32 [B] in [0, T) (every example at the same step), `cond` the extra
inputs given to the sampler (e.g. `labels` [B]), and output shaped like x_t: eps, x0 or v as
`objective` says. A wrong output shape is a ValueError at trace time. With
`self_condition=True` it also takes `x_self_cond`, the previous step's x0 estimate (zeros at the
first step), as in denoising-diffusion-pytorch.

`model_fn` may be `functools.partial(model.apply, params)` (a Flax Linen model: the parameters
are traced leaves), a closure or function that uses weights it does not take as arguments, a
bound method, or a Flax NNX / Equinox module: every array it captures is found by one trace and
passed to the compiled loop as an argument (`jaxdiff.compilation.as_pytree_fn`), so new weights
give new samples, never the old model's, and one compilation serves every weight value.

Classifier-free guidance (Ho & Salimans 2022) is a model wrapper,
`jaxdiff.guidance.classifier_free_guidance`, that every sampler applies when given
`guidance_scale`: the guided prediction is computed by one batched model call inside the same
compiled loop, with the scale traced.

`progress=True` shows a progress bar of the reverse steps, and `progress=callable` calls
`callable(done, total)` on the host, from inside the compiled loop (`jax.debug.callback`, about
100 reports per loop); it compiles a variant of the loop once, and never changes the samples.

Learned variances (Nichol & Dhariwal 2021): a model whose output is [prediction, v] (twice x_t's
channels) samples with `ddpm_sample(..., variance="learned_range")`, or with
`ddim_sample(..., learned_variance=True)`, which uses the prediction alone. Respaced DDPM
(`ddpm_sample(..., num_steps=K)`) runs the ancestral sampler of the K-step process through
K of the T times (improved-diffusion's `SpacedDiffusion`).
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdiff.compilation import jit
from jaxdiff.diffusion import (check_objective, extract, learned_range_log_variance,
                               model_predictions, q_posterior, split_learned_variance)
from jaxdiff.sampling import (START_NOISE, call_model, check_editing, check_num_steps,
                              check_shape, check_steps_after_start, check_x_T, finish, keep_known,
                              noised_start, prepare_model, report_step, run_with_progress,
                              start_noise)
from jaxdiff.schedules import Schedule, respace_schedule, respaced_timesteps

VARIANCES = ("fixed_small", "fixed_large", "learned_range")
TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")


def ddim_timesteps(timesteps: int, num_steps: int, spacing: str = "trailing") -> np.ndarray:
    """The (t, t_next) pairs a DDIM sampler visits, int32 array [num_steps, 2], t descending.

    spacing:
      "trailing"  t = int(linspace(-1, T - 1, num_steps + 1)) (denoising-diffusion-pytorch; equal
                  to diffusers' "trailing"): starts at T - 1, ends at -1.
      "leading"   t = k * (T // num_steps), k = num_steps - 1, ..., 0 (diffusers "leading").
      "linspace"  t = round(linspace(0, T - 1, num_steps)), descending (diffusers "linspace").
    Each visited t steps to the next visited t; the last one steps to t_next = -1, where
    abar = 1 and the sampler returns its x0 prediction. (diffusers' DDIMScheduler instead always
    steps to t - T // num_steps, which for "linspace" is not the next visited time.)
    """
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(
            f"unknown timestep_spacing={spacing!r}; choose one of {', '.join(TIMESTEP_SPACINGS)}"
        )
    check_num_steps(num_steps, timesteps)
    if spacing == "trailing":
        # float32 like torch.linspace, then truncation toward zero like torch's .int()
        times = np.linspace(-1, timesteps - 1, num_steps + 1, dtype=np.float32).astype(np.int64)
        times = times[::-1]
    else:
        if spacing == "leading":
            times = np.arange(num_steps) * (timesteps // num_steps)
        else:
            times = np.round(np.linspace(0, timesteps - 1, num_steps)).astype(np.int64)
        times = np.concatenate([times[::-1], [-1]])
    return np.stack([times[:-1], times[1:]], axis=1).astype(np.int32)


def ddpm_timesteps(timesteps: int, t_start: int | None = None, resamples: int = 1,
                   jump_length: int = 10) -> np.ndarray:
    """The moves of the DDPM loop, int32 [S, 2] of (t, t_next): a reverse step when
    t_next = t - 1 (the last to -1, the data), a forward jump of q(x_t_next | x_t) otherwise.

    Plain DDPM visits t = T - 1, ..., 0 (SDEdit: from `t_start`). With `resamples` r > 1 it
    follows RePaint's schedule (Lugmayr et al. 2022, sec. 4.2): on reaching a time
    t = k * jump_length (k >= 0, t + jump_length <= t_start) for one of its first r - 1 times,
    it jumps forward to t + jump_length and denoises that stretch again, so each stretch is
    traversed r times; RePaint uses r = 10, jump_length = 10 with T = 250.
    """
    t_start = timesteps - 1 if t_start is None else t_start
    jumps_left = {t: resamples - 1 for t in range(0, t_start + 1 - jump_length, jump_length)}
    moves, t = [], t_start
    while t >= 0:
        moves.append((t, t - 1))
        t -= 1
        if jumps_left.get(t, 0) > 0:
            jumps_left[t] -= 1
            moves.append((t, t + jump_length))
            t += jump_length
    return np.asarray(moves, np.int32).reshape(-1, 2)


def _ddpm_noise_ids(moves: np.ndarray, timesteps: int) -> np.ndarray:
    """A distinct random-stream number per move: t for the first visit of a reverse step at t
    (so plain DDPM draws the same noise as always), t + T v for its visit v, and numbers past
    every reverse step's for the forward jumps."""
    visits: dict[int, int] = {}
    ids = []
    jump_base = timesteps * (1 + int(np.sum(moves[:, 1] > moves[:, 0])))
    for index, (t, t_next) in enumerate(moves):
        if t_next > t:
            ids.append(jump_base + index)
        else:
            ids.append(int(t) + timesteps * visits.get(int(t), 0))
            visits[int(t)] = visits.get(int(t), 0) + 1
    return np.asarray(ids, np.int32)


@functools.partial(
    jit,
    static_argnames=("shape", "objective", "clip_x0", "variance", "self_condition",
                     "return_trajectory", "report", "t_start", "resamples", "jump_length"),
)
def _ddpm_loop(model_fn, s, key, x_T, cond, token, x_start, known, mask, model_times, *, shape,
               objective, clip_x0, variance, self_condition, return_trajectory, report, t_start,
               resamples, jump_length):
    # s is the process sampled (respaced or not); model_times[t] the model's time for its step t
    learned = variance == "learned_range"
    x_T, key = start_noise(key, x_T, shape)
    moves = ddpm_timesteps(s.timesteps, t_start, resamples, jump_length)
    ids = _ddpm_noise_ids(moves, s.timesteps)
    num_reverse = int(np.sum(moves[:, 1] < moves[:, 0]))
    # the reverse steps done before each move, for progress reports
    done_before = np.concatenate([[0], np.cumsum(moves[:, 1] < moves[:, 0])[:-1]])
    alphas_cumprod = jnp.asarray(s.alphas_cumprod)

    def reverse(carry, t, t_next, noise_key, done):
        x, x0_prev = carry
        t_batch = jnp.full((shape[0],), t, jnp.int32)
        t_model = t_batch if model_times is None else jnp.full((shape[0],), model_times[t],
                                                                jnp.int32)
        output = call_model(model_fn, x, t_model, cond, x0_prev if self_condition else None,
                            learned_variance=learned)
        if learned:
            output, v = split_learned_variance(output)
        pred = model_predictions(s, output, x, t_batch, objective, clip_x0)
        mean, posterior_variance, _ = q_posterior(s, pred.x0, x, t_batch)
        if variance == "fixed_small":
            std = jnp.sqrt(posterior_variance)
        elif variance == "fixed_large":
            std = jnp.sqrt(extract(s.betas, t_batch, x.ndim))
        else:
            std = jnp.exp(0.5 * learned_range_log_variance(s, v, t_batch))
        noise = jax.random.normal(noise_key, shape, x.dtype)
        x_prev = mean + jnp.where(t > 0, std, 0.0) * noise
        x_prev = keep_known(s, x_prev, known, mask, t_next, jax.random.fold_in(noise_key, 1))
        report_step(report, token, done, num_reverse)
        return x_prev, pred.x0

    def forward(carry, t, t_next, noise_key, done):
        """RePaint's jump: x_t_next ~ q(x_t_next | x_t) = N(sqrt(a) x_t, 1 - a), a the ratio of
        abar; the x0 estimate is kept for self-conditioning."""
        x, x0_prev = carry
        ratio = alphas_cumprod[t_next] / jnp.where(t >= 0, alphas_cumprod[jnp.maximum(t, 0)], 1.0)
        noise = jax.random.normal(noise_key, shape, x.dtype)
        return jnp.sqrt(ratio) * x + jnp.sqrt(1.0 - ratio) * noise, x0_prev

    def step(carry, scanned):
        move, noise_id, done = scanned
        t, t_next = move[0], move[1]
        noise_key = jax.random.fold_in(key, noise_id)
        if resamples == 1:  # no forward jumps: every move is a reverse step
            x_next, x0 = reverse(carry, t, t_next, noise_key, done)
        else:
            x_next, x0 = jax.lax.cond(t_next > t, forward, reverse, carry, t, t_next, noise_key,
                                      done)
        return (x_next, x0), (x_next if return_trajectory else None)

    start = int(moves[0, 0])
    x_first = noised_start(s, x_T, x_start, start)
    x_first = keep_known(s, x_first, known, mask, start, jax.random.fold_in(key, START_NOISE))
    (x, _), trajectory = jax.lax.scan(
        step, (x_first, jnp.zeros_like(x_T)),
        (jnp.asarray(moves), jnp.asarray(ids), jnp.asarray(done_before, jnp.int32)))
    return finish(x, trajectory, x_first, return_trajectory)


def ddpm_sample(
    model_fn: Callable[..., Array],
    s: Schedule,
    *,
    key: Array,
    shape,
    objective: str = "pred_noise",
    clip_x0: bool = True,
    variance: str = "fixed_small",
    x_T: Array | None = None,
    return_trajectory: bool = False,
    self_condition: bool = False,
    cond: Mapping[str, Array] | None = None,
    guidance_scale=None,
    guidance_rescale=0.0,
    null_cond: Mapping[str, Array] | None = None,
    progress=False,
    x_start: Array | None = None,
    t_start: int | None = None,
    known: Array | None = None,
    mask: Array | None = None,
    resamples: int = 1,
    jump_length: int = 10,
    num_steps: int | None = None,
):
    """Ancestral sampling of Ho et al. 2020 (algorithm 2) over all T steps (or K, `num_steps`).

    x_{t-1} = mu(x_t, x0_hat) + sigma_t z, z ~ N(0, I), with mu the posterior mean of
    `q_posterior` evaluated at the model's x0 estimate, sigma_t^2 the posterior variance
    ("fixed_small"), beta_t ("fixed_large") or the model's own ("learned_range": Nichol &
    Dhariwal 2021, eq. 15, exp(`learned_range_log_variance`) of the v the model returns), and no
    noise at t = 0. With "learned_range" the model returns [prediction, v], twice x_t's channels
    on the last axis, and the prediction gives mu; a model without v is a ValueError ("learned
    variance asked of a model without it"), as is a [prediction, v] model with a fixed variance.

    num_steps: None (every step) or K in [1, T]: respaced DDPM (Nichol & Dhariwal 2021,
      sec. 4; improved-diffusion's `SpacedDiffusion`): the ancestral sampler of the K-step
      process through the times t_0 < ... < t_{K-1} of `respaced_timesteps(T, K)`, whose
      betas are beta'_i = 1 - abar[t_i] / abar[t_{i-1}] (`respace_schedule`); the model is
      called at the original times t_i, and "fixed_small", "fixed_large" and "learned_range"
      use the respaced tables (the learned range spans beta'_i and its posterior variance).
      K = T is plain DDPM, bit for bit. Static (each K compiles once); needs a concrete schedule.

    model_fn: `model_fn(x_t, t, **cond)`, x_t float32 `shape`, t int32 [B] in [0, T), returning
      an array shaped like x_t (what `objective` names). Any callable (see the module docstring):
      captured weights are traced, never baked in.
    clip_x0: clip the x0 estimate to [-1, 1] at every step (and re-derive eps from the clipped
      x0), as denoising-diffusion-pytorch does for images in [-1, 1]. Turn it off for data not
      bounded by [-1, 1], such as standardised points: there it clamps every sample into a box.
    Returns samples of `shape`, or (samples, trajectory) with trajectory [T + 1, *shape] (K + 1
    respaced) holding x_T, x_{T-1}, ..., x_0 when `return_trajectory`. `cond` holds extra model
    inputs (e.g. class labels) passed as keywords to `model_fn`. `progress`: see the module
    docstring.

    Classifier-free guidance: with `guidance_scale` s (a number or one per example; traced, so
    new scales do not recompile) every step uses `classifier_free_guidance(model_fn, s,
    null_cond, guidance_rescale)`: one model call on the doubled batch, (1 - s) uncond + s cond.
    `null_cond` is the unconditional input, e.g. `{"labels": num_classes}` for the null class.

    Editing (model-space data, broadcast to `shape`; `t_start`, `resamples` and `jump_length`
    are static: each value compiles once):
      SDEdit (Meng et al. 2022): `x_start` noised to `t_start` by q(x_t | x_start), with x_T as
        the noise, then the reverse steps t_start, ..., 0 (t_start + 1 model calls). With
        `num_steps` K <= t_start + 1, the K steps are respaced over [0, t_start] (the times
        `respaced_timesteps(t_start + 1, K)`, starting at t_start) as DDIM spreads its steps.
      Inpainting: `known` and `mask` (1 where known, broadcastable to `shape`): after every
        reverse step to t the known part is replaced by a fresh draw of q(x_t | known), and by
        `known` itself at the end, so known values come back exactly where mask = 1.
        `resamples` r > 1 adds RePaint's resampling (Lugmayr et al. 2022): every stretch of
        `jump_length` steps is noised forward again and re-denoised, r times in all, which
        harmonises the generated part with the known part (about r times the model calls).
        Respaced, both act on the K-step process: `jump_length` counts its steps.
    """
    check_objective(objective)
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance={variance!r}; choose one of {', '.join(VARIANCES)}")
    shape = check_shape(shape)
    x_start, t_start, known, mask = check_editing(s.timesteps, shape, x_start, t_start, known,
                                                  mask)
    model_times = None
    if num_steps is not None:
        check_num_steps(num_steps, s.timesteps)
        check_steps_after_start(num_steps, t_start)
        span = s.timesteps if t_start is None else t_start + 1
        if num_steps != span:  # K = T (t_start + 1 with SDEdit) is plain DDPM: s as it is
            times = respaced_timesteps(span, int(num_steps))
            s, model_times = respace_schedule(s, times), jnp.asarray(times, jnp.int32)
            t_start = None if t_start is None else int(num_steps) - 1
    for name, value in (("resamples", resamples), ("jump_length", jump_length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    if resamples > 1 and known is None:
        raise ValueError(f"resamples={resamples} is RePaint's resampling for inpainting: give "
                         f"known and mask too (or resamples=1)")
    cond = dict(cond or {})
    model_fn = prepare_model(model_fn, shape, cond, self_condition, guidance_scale,
                              guidance_rescale, null_cond)
    x_T = check_x_T(x_T, shape)
    moves = ddpm_timesteps(s.timesteps, t_start, int(resamples), int(jump_length))
    loop = lambda report, token: _ddpm_loop(  # noqa: E731
        model_fn, s, key, x_T, cond, token, x_start, known, mask, model_times, shape=shape,
        objective=objective, clip_x0=bool(clip_x0), variance=variance,
        self_condition=bool(self_condition), return_trajectory=bool(return_trajectory),
        report=report, t_start=t_start, resamples=int(resamples), jump_length=int(jump_length),
    )
    return run_with_progress(progress, int(np.sum(moves[:, 1] < moves[:, 0])), "DDPM", loop)


def ddim_coefficients(alpha_cumprod: Array, alpha_cumprod_next: Array, eta) -> tuple[Array, Array]:
    """sigma and the eps coefficient of one DDIM step from abar to abar_next (Song et al. 2021).

    sigma = eta sqrt((1 - abar_next) / (1 - abar)) sqrt(1 - abar / abar_next)   (eq. 16)
    c     = sqrt(1 - abar_next - sigma^2)                                        (eq. 12)
    so x_next = sqrt(abar_next) x0_hat + c eps_hat + sigma z.
    """
    sigma = eta * _safe_sqrt(
        (1.0 - alpha_cumprod_next) / (1.0 - alpha_cumprod)
        * (1.0 - alpha_cumprod / alpha_cumprod_next)
    )
    coefficient = _safe_sqrt(1.0 - alpha_cumprod_next - sigma**2)
    return sigma, coefficient


def _safe_sqrt(value: Array) -> Array:
    """sqrt(max(value, 0)) with a zero (not NaN) gradient where value <= 0: the last DDIM step
    (abar_next = 1) has sigma = c = 0, and d sqrt(u)/du at u = 0 would make every gradient with
    respect to eta NaN."""
    positive = value > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, value, 1.0)), 0.0)


@functools.partial(
    jit,
    static_argnames=("shape", "num_steps", "objective", "clip_x0", "timestep_spacing",
                     "self_condition", "return_trajectory", "report", "t_start"),
)
def _ddim_loop(model_fn, s, key, x_T, cond, eta, token, x_start, known, mask, *, shape, num_steps,
               objective, clip_x0, timestep_spacing, self_condition, return_trajectory, report,
               t_start):
    x_T, key = start_noise(key, x_T, shape)
    # SDEdit spreads the steps over the times [0, t_start], as if T were t_start + 1
    span = s.timesteps if t_start is None else t_start + 1
    pairs = jnp.asarray(ddim_timesteps(span, num_steps, timestep_spacing))
    alphas_cumprod = jnp.asarray(s.alphas_cumprod)

    def step(carry, scanned):
        x, x0_prev = carry
        pair, index = scanned
        t, t_next = pair[0], pair[1]
        t_batch = jnp.full((shape[0],), t, jnp.int32)
        output = call_model(model_fn, x, t_batch, cond, x0_prev if self_condition else None)
        pred = model_predictions(s, output, x, t_batch, objective, clip_x0)
        alpha_cumprod = alphas_cumprod[t]
        alpha_cumprod_next = jnp.where(t_next >= 0, alphas_cumprod[jnp.maximum(t_next, 0)], 1.0)
        sigma, coefficient = ddim_coefficients(alpha_cumprod, alpha_cumprod_next, eta)
        noise_key = jax.random.fold_in(key, t)
        noise = jax.random.normal(noise_key, shape, x.dtype)
        x_next = jnp.sqrt(alpha_cumprod_next) * pred.x0 + coefficient * pred.eps + sigma * noise
        x_next = keep_known(s, x_next, known, mask, t_next, jax.random.fold_in(noise_key, 1))
        report_step(report, token, index, num_steps)
        return (x_next, pred.x0), (x_next if return_trajectory else None)

    start = pairs[0, 0]
    x_first = noised_start(s, x_T, x_start, start)
    x_first = keep_known(s, x_first, known, mask, start, jax.random.fold_in(key, START_NOISE))
    (x, _), trajectory = jax.lax.scan(step, (x_first, jnp.zeros_like(x_T)),
                                      (pairs, jnp.arange(num_steps, dtype=jnp.int32)))
    return finish(x, trajectory, x_first, return_trajectory)


def ddim_sample(
    model_fn: Callable[..., Array],
    s: Schedule,
    *,
    key: Array,
    shape,
    num_steps: int = 50,
    eta: float = 0.0,
    objective: str = "pred_noise",
    clip_x0: bool = True,
    timestep_spacing: str = "trailing",
    x_T: Array | None = None,
    return_trajectory: bool = False,
    self_condition: bool = False,
    cond: Mapping[str, Array] | None = None,
    guidance_scale=None,
    guidance_rescale=0.0,
    null_cond: Mapping[str, Array] | None = None,
    progress=False,
    x_start: Array | None = None,
    t_start: int | None = None,
    known: Array | None = None,
    mask: Array | None = None,
    learned_variance: bool = False,
):
    """DDIM sampling (Song et al. 2021, eq. 12) on `num_steps` of the T training times.

    x_next = sqrt(abar_next) x0_hat + sqrt(1 - abar_next - sigma^2) eps_hat + sigma z, with
    sigma from eq. 16 scaled by `eta`: eta = 0 is the deterministic DDIM, eta = 1 with
    num_steps = T is ancestral DDPM with the posterior variance. The last step goes to
    abar = 1 and returns x0_hat. `eta` is traced: changing it does not recompile.

    Returns samples of `shape`, or (samples, trajectory [num_steps + 1, *shape]) with
    `return_trajectory`. See `ddim_timesteps` for `timestep_spacing`; `model_fn`, `clip_x0`
    (clips x0 to [-1, 1]: off for data outside that range), `cond`, `guidance_scale`,
    `guidance_rescale`, `null_cond` and `progress` are as in `ddpm_sample`. Differentiable with
    respect to eta, x_T and the weights (the gradient with respect to eta is finite).

    Editing, as in `ddpm_sample`: SDEdit (`x_start`, `t_start`) spreads the `num_steps` steps
    over [0, t_start] (the times `ddim_timesteps(t_start + 1, num_steps, timestep_spacing)`;
    x_start is noised to the first of them, t_start except for "leading"), so
    num_steps <= t_start + 1; inpainting (`known`, `mask`) puts a fresh draw of
    q(x_t_next | known) back into the known part after every step (with eta = 0 too: that
    noise keeps the known part at the right noise level), and `known` itself at the end.

    learned_variance: the model returns [prediction, v] (Nichol & Dhariwal 2021, twice x_t's
    channels on the last axis); DDIM uses the prediction and ignores v, as improved-diffusion.
    """
    check_objective(objective)
    check_num_steps(num_steps, s.timesteps)
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(
            f"unknown timestep_spacing={timestep_spacing!r}; "
            f"choose one of {', '.join(TIMESTEP_SPACINGS)}"
        )
    if not isinstance(eta, jax.core.Tracer) and not np.all(
            np.isfinite(eta) & (np.asarray(eta) >= 0)):
        raise ValueError(f"eta must be finite and >= 0, got eta={eta}")
    shape = check_shape(shape)
    x_start, t_start, known, mask = check_editing(s.timesteps, shape, x_start, t_start, known,
                                                  mask)
    check_steps_after_start(num_steps, t_start)
    cond = dict(cond or {})
    model_fn = prepare_model(model_fn, shape, cond, self_condition, guidance_scale,
                             guidance_rescale, null_cond, bool(learned_variance))
    x_T, eta = check_x_T(x_T, shape), jnp.asarray(eta, jnp.float32)
    loop = lambda report, token: _ddim_loop(  # noqa: E731
        model_fn, s, key, x_T, cond, eta, token, x_start, known, mask, shape=shape,
        num_steps=int(num_steps), objective=objective, clip_x0=bool(clip_x0),
        timestep_spacing=timestep_spacing, self_condition=bool(self_condition),
        return_trajectory=bool(return_trajectory), report=report, t_start=t_start,
    )
    return run_with_progress(progress, int(num_steps), "DDIM", loop)
