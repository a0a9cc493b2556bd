"""Classifier-free guidance (Ho & Salimans 2022) as a model wrapper, with the rescaling of Lin et
al. 2024.

`guide` combines a conditional and an unconditional prediction; `classifier_free_guidance` wraps
a model so that one call on the doubled batch [x_t; x_t] with [cond; null_cond] returns the guided
prediction. The samplers (jaxdiff.samplers) apply the wrapper when given `guidance_scale`, inside
their compiled loop, with the scale traced.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdiff.compilation import as_pytree_fn


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
    output_cond, output_uncond = output[:batch], output[batch:]
    channels = x.shape[-1]
    if output.shape[-1] == 2 * channels:
        # a learned-variance model's [prediction, v]: guide the predictions and keep the
        # conditional v (GLIDE's guided sampling does the same)
        guided = guide(output_cond[..., :channels], output_uncond[..., :channels],
                       guidance_scale, guidance_rescale)
        return jnp.concatenate([guided, output_cond[..., channels:]], axis=-1)
    return guide(output_cond, output_uncond, guidance_scale, guidance_rescale)


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
    outputs themselves.) A learned-variance model's output [prediction, v] (twice x_t's
    channels on the last axis) has its predictions guided and the conditional v kept, as in
    GLIDE (Nichol et al. 2022).

    The result is a `jax.tree_util.Partial` whose parameters, scale, rescale and null condition
    are traced: a sampler compiled once serves every guidance scale. Scales may be scalars or
    [B] arrays (one per example, e.g. a sweep of scales in one batch).

    A sampler written as e_t = w e_keep + (1 - w) e_drop (e_drop: the prediction with the
    condition dropped) is this with s = w.
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
