"""What every sampler shares: argument checks, the model as a pytree with its captured arrays
traced (jaxdiff.compilation), the model call with its output-shape check, the start and end of the
reverse loop, and progress reports from inside the compiled loop.

Editing (SDEdit and inpainting) is shared too: `check_editing` validates the inputs, and inside
a loop `noised_start` starts from data noised to a time and `keep_known` puts the known values,
noised to the current time, back after every step.

Learned variances (Nichol & Dhariwal 2021): a model trained with `learned_variance` returns
[prediction, v], twice x_t's channels on the last axis. `call_model(..., learned_variance=True)`
checks that shape and returns the whole output (ancestral DDPM splits it and uses v), and
`prepare_model(..., learned_variance=True)` wraps the model so that it returns the prediction
alone (the samplers that need no variance: DDIM, DPM-Solver++, Karras, as improved-diffusion's
DDIM does), so their loops are unchanged. Either way the shape is checked at trace time and the
one-line error says which of the two was expected.

Progress: the compiled loop passes a traced token to `jax.debug.callback`, and the host looks up
the handler registered for that token, so a new handler never recompiles the loop.
"""

from __future__ import annotations

import functools
import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdiff.compilation import trace_captured_arrays
from jaxdiff.diffusion import check_output_shape, split_learned_variance
from jaxdiff.guidance import _guided_model_fn


def check_num_steps(num_steps: int, timesteps: int) -> None:
    """Raise a ValueError naming `num_steps` unless 1 <= num_steps <= T."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ValueError(f"num_steps must be an integer, got num_steps={num_steps!r}")
    if not 1 <= num_steps <= timesteps:
        raise ValueError(f"num_steps={num_steps} must be in [1, T={timesteps}]")


def check_shape(shape) -> tuple[int, ...]:
    """`shape` as a tuple of ints [N, ...], every size >= 1, or a ValueError naming it."""
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of ints, got shape={shape!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be [N, ...] with every size >= 1, got shape={shape}")
    return shape


def check_x_T(x_T, shape):
    """None, or x_T as float32 of exactly `shape` (a ValueError otherwise)."""
    if x_T is None:
        return None
    x_T = jnp.asarray(x_T, jnp.float32)
    if x_T.shape != shape:
        raise ValueError(f"x_T has shape {x_T.shape}, expected shape={shape}")
    return x_T


START_NOISE = 2**31 - 1  # random stream of the known part's noise at a loop's start


def _check_data(name: str, value, shape) -> Array:
    """`value` as float32 broadcast to `shape` (a ValueError naming it otherwise)."""
    value = jnp.asarray(value, jnp.float32)
    try:
        fits = np.broadcast_shapes(value.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name} has shape {value.shape}, which does not broadcast to "
                         f"shape={shape}")
    return jnp.broadcast_to(value, shape)


def check_editing(timesteps: int, shape, x_start, t_start, known, mask):
    """The editing inputs checked: (x_start, t_start, known, mask), each None when unused.

    SDEdit: `x_start` (data in model space, broadcast to `shape`) and `t_start`, an integer in
    [0, T), go together. Inpainting: `known` (broadcast to `shape`) and `mask` (broadcastable to
    `shape`, values in [0, 1], 1 where known) go together."""
    if (x_start is None) != (t_start is None):
        missing = "t_start" if t_start is None else "x_start"
        raise ValueError(f"SDEdit needs both x_start and t_start: {missing} is missing")
    if t_start is not None:
        if isinstance(t_start, bool) or not isinstance(t_start, (int, np.integer)) or not (
                0 <= t_start < timesteps):
            raise ValueError(f"t_start={t_start!r} must be an integer in [0, T={timesteps})")
        t_start, x_start = int(t_start), _check_data("x_start", x_start, shape)
    if (known is None) != (mask is None):
        missing = "mask" if mask is None else "known"
        raise ValueError(f"inpainting needs both known and mask: {missing} is missing")
    if known is not None:
        known, mask = _check_data("known", known, shape), _check_data("mask", mask, shape)
        if not isinstance(mask, jax.core.Tracer):
            values = np.asarray(mask)
            if not np.all(np.isfinite(values) & (values >= 0) & (values <= 1)):
                raise ValueError(f"mask values must be in [0, 1] (1 where known), got values in "
                                 f"[{np.nanmin(values)}, {np.nanmax(values)}]")
    return x_start, t_start, known, mask


def check_steps_after_start(num_steps: int, t_start: int | None) -> None:
    """With SDEdit the steps are spread over [0, t_start]: at most t_start + 1 of them."""
    if t_start is not None and num_steps > t_start + 1:
        raise ValueError(f"num_steps={num_steps} must be <= t_start + 1 = {t_start + 1} (SDEdit "
                         f"spreads the steps over the times [0, t_start])")


def noised_start(s, x_T, x_start, t):
    """SDEdit's start: q(x_t | x_start) with x_T as the noise, or x_T itself without x_start."""
    if x_start is None:
        return x_T
    alpha_cumprod = jnp.asarray(s.alphas_cumprod)[t]
    return jnp.sqrt(alpha_cumprod) * x_start + jnp.sqrt(1.0 - alpha_cumprod) * x_T


def keep_known(s, x, known, mask, t, key):
    """Inpainting (the replacement of Song et al. 2021 and RePaint): x with its known part
    replaced by a fresh draw of q(x_t | known), or by `known` itself at t = -1 (the data)."""
    if known is None:
        return x
    alphas_cumprod = jnp.asarray(s.alphas_cumprod)
    alpha_cumprod = jnp.where(t >= 0, alphas_cumprod[jnp.maximum(t, 0)], 1.0)
    noise = jax.random.normal(key, x.shape, x.dtype)
    noisy = jnp.sqrt(alpha_cumprod) * known + jnp.sqrt(1.0 - alpha_cumprod) * noise
    return mask * noisy + (1.0 - mask) * x


def call_model(model_fn, x, t_batch, cond, x_self_cond=None, learned_variance=False):
    """`model_fn(x, t_batch, **cond[, x_self_cond])`, its output shape checked against x (with
    the last axis doubled when `learned_variance`: [prediction, v])."""
    kwargs = dict(cond)
    if x_self_cond is not None:
        kwargs["x_self_cond"] = x_self_cond
    output = model_fn(x, t_batch, **kwargs)
    check_output_shape(output, x, learned_variance)
    return output


def _prediction_of(model_fn, x, t, **kwargs):
    """A learned-variance model's prediction half, its [prediction, v] shape checked."""
    output = model_fn(x, t, **kwargs)
    check_output_shape(output, x, learned_variance=True)
    return split_learned_variance(output)[0]


def prepare_model(model_fn, shape, cond, self_condition, guidance_scale, guidance_rescale,
                  null_cond, learned_variance=False):
    """The model as a pytree with every captured array traced (guided when given a scale); with
    `learned_variance` it returns the prediction half of the model's [prediction, v] output."""
    model_fn = _guided_model_fn(model_fn, cond, shape, guidance_scale, guidance_rescale, null_cond)
    example = dict(cond)
    if self_condition:
        example["x_self_cond"] = jax.ShapeDtypeStruct(shape, jnp.float32)
    model_fn = trace_captured_arrays(model_fn, jax.ShapeDtypeStruct(shape, jnp.float32),
                                     jax.ShapeDtypeStruct(shape[:1], jnp.int32), **example)
    if learned_variance:
        return jax.tree_util.Partial(_prediction_of, model_fn)
    return model_fn


_PROGRESS_HANDLERS: dict[int, Callable[[int, int], None]] = {}
_PROGRESS_TOKENS = itertools.count()


def _report(token, done, total: int) -> None:
    handler = _PROGRESS_HANDLERS.get(int(token))
    if handler is not None:
        handler(int(done), total)


def report_step(report: bool, token, index, total: int) -> None:
    """Inside a loop: report step `index + 1` of `total`, about 100 times per loop."""
    if not report:
        return
    every = max(1, total // 100)
    done = index + 1
    jax.lax.cond(
        (done % every == 0) | (done == total),
        lambda: jax.debug.callback(functools.partial(_report, total=total), token, done),
        lambda: None,
    )


def run_with_progress(progress, total: int, description: str, loop):
    """Call `loop(report, token)` with `progress` (False, True for a bar, or a callable
    (done, total)) registered for the duration of the computation."""
    if not progress:
        return loop(False, jnp.int32(0))
    if callable(progress):
        handler, bar = progress, None
    else:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=description, unit="step", dynamic_ncols=True, leave=False)
        handler = lambda done, _: bar.update(max(0, done - bar.n))  # noqa: E731
    token = next(_PROGRESS_TOKENS) % 2**31
    _PROGRESS_HANDLERS[token] = handler
    try:
        return jax.block_until_ready(loop(True, jnp.int32(token)))
    finally:
        del _PROGRESS_HANDLERS[token]
        if bar is not None:
            bar.close()


def start_noise(key, x_T, shape):
    """(x_T, the loop's key): x_T drawn from N(0, I) when not given."""
    key_start, key_loop = jax.random.split(key)
    if x_T is None:
        x_T = jax.random.normal(key_start, shape, jnp.float32)
    return x_T, key_loop


def finish(x, trajectory, x_T, return_trajectory):
    """The samples, or (samples, trajectory with x_T first)."""
    if not return_trajectory:
        return x
    return x, jnp.concatenate([x_T[None], trajectory], axis=0)
