"""Reverse-process samplers: ancestral DDPM and (stochastic) DDIM.

Each sampler is one step function and one `lax.scan` over the whole reverse loop, compiled once by
`jax.jit` per (shape, step count, static options). The model enters as a pytree: a
`functools.partial(model.apply, params)` is turned into a `jax.tree_util.Partial`, whose function is
static (hashed: equal Flax modules hit the same cache entry) and whose bound arguments (the
parameters) are traced. Calling a sampler again with new parameters, a new key, a new eta or a new
x_T therefore reuses the compiled loop.

A model is `model_fn(x_t, t, **cond) -> output` with t an int32 [B] array; with
`self_condition=True` it also takes `x_self_cond`, the previous step's x0 estimate (zeros at the
first step), as in denoising-diffusion-pytorch.

Classifier-free guidance (Ho & Salimans 2022) is a model wrapper, `classifier_free_guidance`,
that every sampler applies when given `guidance_scale`: the guided prediction is computed by one
batched model call inside the same compiled loop, with the scale traced.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdiff.compilation import jit
from jaxdiff.diffusion import check_objective, extract, model_predictions, q_posterior
from jaxdiff.schedules import Schedule

VARIANCES = ("fixed_small", "fixed_large")
TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")


class _Method:
    """A bound method compared by the *value* of its object.

    Python compares bound methods by the identity of `__self__`, so `Unet(...).apply` made twice
    would be two jit cache keys; Flax modules compare by their fields, and so does this wrapper.
    """

    def __init__(self, method):
        self.func, self.obj = method.__func__, method.__self__

    def __call__(self, *args, **kwargs):
        return self.func(self.obj, *args, **kwargs)

    def __eq__(self, other):
        return isinstance(other, _Method) and self.func is other.func and self.obj == other.obj

    def __hash__(self):
        return hash((self.func, self.obj))


def _static_callable(func):
    if inspect.ismethod(func):
        try:
            hash(func.__self__)
        except TypeError:
            return func
        return _Method(func)
    return func


def as_pytree_fn(model_fn: Callable[..., Array]) -> jax.tree_util.Partial:
    """`model_fn` as a `jax.tree_util.Partial`, so jit traces its bound arrays instead of baking
    them in as constants (and does not recompile when only those arrays change).

    `functools.partial(model.apply, params)` becomes `Partial(model.apply, params)` with the
    parameters as traced leaves and the (hashable, compared by value) module as static data.
    """
    if isinstance(model_fn, jax.tree_util.Partial):
        return model_fn
    if isinstance(model_fn, functools.partial):
        return jax.tree_util.Partial(
            _static_callable(model_fn.func), *model_fn.args, **model_fn.keywords
        )
    if not callable(model_fn):
        raise ValueError(f"model_fn must be callable, got {type(model_fn).__name__}")
    return jax.tree_util.Partial(_static_callable(model_fn))


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


def check_num_steps(num_steps: int, timesteps: int) -> None:
    """Raise a ValueError naming `num_steps` unless 1 <= num_steps <= T."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ValueError(f"num_steps must be an integer, got num_steps={num_steps!r}")
    if not 1 <= num_steps <= timesteps:
        raise ValueError(f"num_steps={num_steps} must be in [1, T={timesteps}]")


def _check_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of ints, got shape={shape!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be [N, ...] with every size >= 1, got shape={shape}")
    return shape


def _check_x_T(x_T, shape):
    if x_T is None:
        return None
    x_T = jnp.asarray(x_T, jnp.float32)
    if x_T.shape != shape:
        raise ValueError(f"x_T has shape {x_T.shape}, expected shape={shape}")
    return x_T


def _call_model(model_fn, x, t, cond, x_self_cond):
    kwargs = dict(cond)
    if x_self_cond is not None:
        kwargs["x_self_cond"] = x_self_cond
    return model_fn(x, jnp.full((x.shape[0],), t, jnp.int32), **kwargs)


def _start(key, x_T, shape):
    key_start, key_loop = jax.random.split(key)
    if x_T is None:
        x_T = jax.random.normal(key_start, shape, jnp.float32)
    return x_T, key_loop


def _finish(x, trajectory, x_T, return_trajectory):
    if not return_trajectory:
        return x
    return x, jnp.concatenate([x_T[None], trajectory], axis=0)


# --- classifier-free guidance ------------------------------------------------------------------

def _per_example(value: Array, ndim: int) -> Array:
    """A scalar, or a [B] array reshaped to [B, 1, ..., 1] to broadcast against rank `ndim`."""
    return value if value.ndim == 0 else value.reshape(value.shape + (1,) * (ndim - 1))


def guide(output_cond: Array, output_uncond: Array, guidance_scale, guidance_rescale=0.0) -> Array:
    """Combine a conditional and an unconditional prediction (Ho & Salimans 2022, eq. 6).

    guided = uncond + s (cond - uncond), written (1 - s) uncond + s cond so that s = 1 returns
    `output_cond` and s = 0 returns `output_uncond` bit for bit (the diffusers convention: s = 1
    is plain conditional sampling, s = 0 unconditional; Ho & Salimans' w is s - 1).

    With guidance_rescale = phi > 0 (Lin et al. 2024, "Common Diffusion Noise Schedules and
    Sample Steps are Flawed", sec. 3.4, eqs. 15-16, as diffusers' `rescale_noise_cfg`):
        rescaled = guided * std(cond) / std(guided),   out = phi rescaled + (1 - phi) guided,
    with the standard deviations per example over all non-batch axes. It is applied to the
    arrays given here (the sampler gives it the raw model outputs: eps, x0 or v, whichever the
    model predicts, as diffusers does), undoing the over-exposure of large scales.

    `guidance_scale` and `guidance_rescale` are scalars or [B] arrays (one value per example).
    """
    ndim = output_cond.ndim
    scale = _per_example(jnp.asarray(guidance_scale, jnp.float32), ndim)
    phi = _per_example(jnp.asarray(guidance_rescale, jnp.float32), ndim)
    guided = (1.0 - scale) * output_uncond + scale * output_cond
    axes = tuple(range(1, ndim))
    std_cond = jnp.std(output_cond, axis=axes, keepdims=True)
    std_guided = jnp.std(guided, axis=axes, keepdims=True)
    positive = std_guided > 0
    ratio = jnp.where(positive, std_cond / jnp.where(positive, std_guided, 1.0), 1.0)
    # phi = 0 gives a factor of exactly 1, so plain guidance is not perturbed by rounding
    return guided * (phi * ratio + (1.0 - phi))


def _guided_model(model_fn, guidance_scale, null_cond, guidance_rescale, x, t, **cond):
    """The model on [x; x] with [cond; null_cond] in one call, split and combined by `guide`."""
    unknown = sorted(set(null_cond) - set(cond))
    if unknown:
        raise ValueError(f"null_cond names {unknown} that the model is not given; the "
                         f"condition holds {sorted(cond)}")
    batch = x.shape[0]
    doubled = {}
    for name, value in cond.items():
        value = jnp.asarray(value)
        if name in null_cond:
            other = jnp.broadcast_to(jnp.asarray(null_cond[name], value.dtype), value.shape)
        else:  # shared by both halves (x_self_cond, or inputs that guidance should not drop)
            other = value
        doubled[name] = jnp.concatenate([value, other], axis=0)
    output = model_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0), **doubled)
    return guide(output[:batch], output[batch:], guidance_scale, guidance_rescale)


def classifier_free_guidance(
    model_fn: Callable[..., Array],
    guidance_scale,
    null_cond: Mapping[str, Array],
    guidance_rescale=0.0,
) -> jax.tree_util.Partial:
    """A model_fn that returns the classifier-free guided prediction (Ho & Salimans 2022).

    Called as `guided(x_t, t, **cond)`, it runs `model_fn` once on the doubled batch [x_t; x_t]
    with the condition [cond; null_cond] (each entry of `null_cond` replaces the entry of the
    same name, broadcast to its shape: for class labels `{"labels": num_classes}`, the null
    class; entries of `cond` not named in `null_cond`, and `x_self_cond`, are shared by both
    halves) and combines the halves with `guide`:
        out = (1 - s) out(x_t, t, null_cond) + s out(x_t, t, cond),  rescaled if phi > 0.

    Guidance works for every objective on the raw outputs. Each of eps, x0 and v is an affine
    function of the output given (x_t, t): eps = a x_t + b out. The guide weights (1 - s, s)
    sum to one, so eps(guided out) = (1 - s) eps(uncond) + s eps(cond): guiding x0 or v
    predictions is exactly guiding eps. (Rescaling with phi > 0 is not affine and acts on the
    outputs themselves.)

    The result is a `jax.tree_util.Partial` whose parameters, scale, rescale and null condition
    are traced: a sampler compiled once serves every guidance scale. Scales may be scalars or
    [B] arrays (one per example, e.g. a sweep of scales in one batch).

    The DLI seed's sampler e_t = w e_keep + (1 - w) e_drop is this with s = w.
    """
    return jax.tree_util.Partial(
        _guided_model, as_pytree_fn(model_fn), jnp.asarray(guidance_scale, jnp.float32),
        {name: jnp.asarray(value) for name, value in dict(null_cond).items()},
        jnp.asarray(guidance_rescale, jnp.float32),
    )


def check_per_example(name: str, value, batch: int, low: float | None = None,
                      high: float | None = None) -> None:
    """Raise a ValueError naming `name` unless `value` is a finite number or a [batch] array of
    them within [low, high] (traced values are not checked)."""
    if isinstance(value, jax.core.Tracer):
        return
    array = np.asarray(value)
    if array.shape not in ((), (batch,)) or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a number or an array of shape ({batch},), got "
                         f"{name}={value!r}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {name}={value!r}")
    if (low is not None and np.any(array < low)) or (high is not None and np.any(array > high)):
        raise ValueError(f"{name} must be in [{low}, {high}], got {name}={value!r}")


def _guided_model_fn(model_fn, cond, shape, guidance_scale, guidance_rescale, null_cond):
    """`model_fn` itself, or wrapped by `classifier_free_guidance` when a scale is given."""
    if guidance_scale is None:
        if null_cond is not None:
            raise ValueError("null_cond is only used with guidance_scale; got guidance_scale=None")
        return as_pytree_fn(model_fn)
    if not cond:
        raise ValueError(f"guidance_scale={guidance_scale!r} needs a conditional model and its "
                         f"condition: pass cond (e.g. {{'labels': labels}}) and null_cond")
    if null_cond is None:
        raise ValueError(f"guidance_scale={guidance_scale!r} needs null_cond, the condition of the "
                         f"unconditional prediction (for class labels {{'labels': num_classes}})")
    unknown = sorted(set(null_cond) - set(cond))
    if unknown:
        raise ValueError(f"null_cond names {unknown}, which are not in cond {sorted(cond)}")
    check_per_example("guidance_scale", guidance_scale, shape[0])
    check_per_example("guidance_rescale", guidance_rescale, shape[0], 0.0, 1.0)
    return classifier_free_guidance(model_fn, guidance_scale, null_cond, guidance_rescale)


@functools.partial(
    jit,
    static_argnames=("shape", "objective", "clip_x0", "variance", "self_condition",
                     "return_trajectory"),
)
def _ddpm_loop(model_fn, s, key, x_T, cond, *, shape, objective, clip_x0, variance,
               self_condition, return_trajectory):
    x_T, key = _start(key, x_T, shape)

    def step(carry, t):
        x, x0_prev = carry
        t_batch = jnp.full((shape[0],), t, jnp.int32)
        output = _call_model(model_fn, x, t, cond, x0_prev if self_condition else None)
        pred = model_predictions(s, output, x, t_batch, objective, clip_x0)
        mean, posterior_variance, _ = q_posterior(s, pred.x0, x, t_batch)
        if variance == "fixed_small":
            std = jnp.sqrt(posterior_variance)
        else:
            std = jnp.sqrt(extract(s.betas, t_batch, x.ndim))
        noise = jax.random.normal(jax.random.fold_in(key, t), shape, x.dtype)
        x_prev = mean + jnp.where(t > 0, std, 0.0) * noise
        return (x_prev, pred.x0), (x_prev if return_trajectory else None)

    times = jnp.arange(s.timesteps - 1, -1, -1, dtype=jnp.int32)
    (x, _), trajectory = jax.lax.scan(step, (x_T, jnp.zeros_like(x_T)), times)
    return _finish(x, trajectory, x_T, return_trajectory)


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
):
    """Ancestral sampling of Ho et al. 2020 (algorithm 2) over all T steps.

    x_{t-1} = mu(x_t, x0_hat) + sigma_t z, z ~ N(0, I), with mu the posterior mean of
    `q_posterior` evaluated at the model's x0 estimate, sigma_t^2 the posterior variance
    ("fixed_small") or beta_t ("fixed_large"), and no noise at t = 0.

    Returns samples of `shape`, or (samples, trajectory) with trajectory [T + 1, *shape] holding
    x_T, x_{T-1}, ..., x_0 when `return_trajectory`. `cond` holds extra model inputs (e.g.
    class labels) passed as keywords to `model_fn`.

    Classifier-free guidance: with `guidance_scale` s (a number or one per example; traced, so
    new scales do not recompile) every step uses `classifier_free_guidance(model_fn, s,
    null_cond, guidance_rescale)`: one model call on the doubled batch, (1 - s) uncond + s cond.
    `null_cond` is the unconditional input, e.g. `{"labels": num_classes}` for the null class.
    """
    check_objective(objective)
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance={variance!r}; choose one of {', '.join(VARIANCES)}")
    shape = _check_shape(shape)
    cond = dict(cond or {})
    model_fn = _guided_model_fn(model_fn, cond, shape, guidance_scale, guidance_rescale, null_cond)
    return _ddpm_loop(
        model_fn, s, key, _check_x_T(x_T, shape), cond, shape=shape,
        objective=objective,
        clip_x0=bool(clip_x0), variance=variance, self_condition=bool(self_condition),
        return_trajectory=bool(return_trajectory),
    )


def ddim_coefficients(alpha_cumprod: Array, alpha_cumprod_next: Array, eta) -> tuple[Array, Array]:
    """sigma and the eps coefficient of one DDIM step from abar to abar_next (Song et al. 2021).

    sigma = eta sqrt((1 - abar_next) / (1 - abar)) sqrt(1 - abar / abar_next)   (eq. 16)
    c     = sqrt(1 - abar_next - sigma^2)                                        (eq. 12)
    so x_next = sqrt(abar_next) x0_hat + c eps_hat + sigma z.
    """
    sigma = eta * jnp.sqrt(
        (1.0 - alpha_cumprod_next) / (1.0 - alpha_cumprod) * (1.0 - alpha_cumprod / alpha_cumprod_next)
    )
    coefficient = jnp.sqrt(jnp.maximum(1.0 - alpha_cumprod_next - sigma**2, 0.0))
    return sigma, coefficient


@functools.partial(
    jit,
    static_argnames=("shape", "num_steps", "objective", "clip_x0", "timestep_spacing",
                     "self_condition", "return_trajectory"),
)
def _ddim_loop(model_fn, s, key, x_T, cond, eta, *, shape, num_steps, objective, clip_x0,
               timestep_spacing, self_condition, return_trajectory):
    x_T, key = _start(key, x_T, shape)
    pairs = jnp.asarray(ddim_timesteps(s.timesteps, num_steps, timestep_spacing))
    alphas_cumprod = jnp.asarray(s.alphas_cumprod)

    def step(carry, pair):
        x, x0_prev = carry
        t, t_next = pair[0], pair[1]
        t_batch = jnp.full((shape[0],), t, jnp.int32)
        output = _call_model(model_fn, x, t, cond, x0_prev if self_condition else None)
        pred = model_predictions(s, output, x, t_batch, objective, clip_x0)
        alpha_cumprod = alphas_cumprod[t]
        alpha_cumprod_next = jnp.where(t_next >= 0, alphas_cumprod[jnp.maximum(t_next, 0)], 1.0)
        sigma, coefficient = ddim_coefficients(alpha_cumprod, alpha_cumprod_next, eta)
        noise = jax.random.normal(jax.random.fold_in(key, t), shape, x.dtype)
        x_next = jnp.sqrt(alpha_cumprod_next) * pred.x0 + coefficient * pred.eps + sigma * noise
        return (x_next, pred.x0), (x_next if return_trajectory else None)

    (x, _), trajectory = jax.lax.scan(step, (x_T, jnp.zeros_like(x_T)), pairs)
    return _finish(x, trajectory, x_T, return_trajectory)


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
):
    """DDIM sampling (Song et al. 2021, eq. 12) on `num_steps` of the T training times.

    x_next = sqrt(abar_next) x0_hat + sqrt(1 - abar_next - sigma^2) eps_hat + sigma z, with
    sigma from eq. 16 scaled by `eta`: eta = 0 is the deterministic DDIM, eta = 1 with
    num_steps = T is ancestral DDPM with the posterior variance. The last step goes to
    abar = 1 and returns x0_hat. `eta` is traced: changing it does not recompile.

    Returns samples of `shape`, or (samples, trajectory [num_steps + 1, *shape]) with
    `return_trajectory`. See `ddim_timesteps` for `timestep_spacing`; `cond`, `guidance_scale`,
    `guidance_rescale` and `null_cond` are as in `ddpm_sample` (classifier-free guidance).
    """
    check_objective(objective)
    check_num_steps(num_steps, s.timesteps)
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(
            f"unknown timestep_spacing={timestep_spacing!r}; "
            f"choose one of {', '.join(TIMESTEP_SPACINGS)}"
        )
    if not isinstance(eta, jax.core.Tracer) and np.any(np.asarray(eta) < 0):
        raise ValueError(f"eta must be >= 0, got eta={eta}")
    shape = _check_shape(shape)
    cond = dict(cond or {})
    model_fn = _guided_model_fn(model_fn, cond, shape, guidance_scale, guidance_rescale, null_cond)
    return _ddim_loop(
        model_fn, s, key, _check_x_T(x_T, shape), cond,
        jnp.asarray(eta, jnp.float32), shape=shape,
        num_steps=int(num_steps), objective=objective, clip_x0=bool(clip_x0),
        timestep_spacing=timestep_spacing, self_condition=bool(self_condition),
        return_trajectory=bool(return_trajectory),
    )
