"""Likelihood of data under a trained model: the variational bound of Ho et al. 2020 term by term,
and the exact log-likelihood of the probability-flow ODE (Song et al. 2021), with bits per
dimension for 8-bit images.

`vlb` computes, per example, in nats,
    prior     KL(q(x_{T-1} | x0) || N(0, I)),
    terms[t]  KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t >= 1, x_t ~ q(x_t | x0), and
    terms[0]  the decoder's -log p(x0 | x_0) ("gaussian": a density, for continuous data such
              as points; "discretized": the probability of the 8-bit level, Ho et al. eq. 13),
    total     prior + sum of terms,
looping over t with `lax.map`, so memory does not grow with T. One x_t per (example, t): the
total is an unbiased one-sample estimate of the bound (Ho et al. and improved-diffusion report
its mean over a test set).

`ode_log_likelihood` integrates the probability-flow ODE from the data at the first table time
t = 0 to t = T - 1 with diffrax's adaptive Tsit5 inside jit, and adds the change of log-density,
the integral of the divergence of the ODE's vector field: computed exactly (D forward-mode
products, small D) or by Hutchinson's estimator with Rademacher probes (images). The ODE is the
variance-exploding form of the samplers in jaxdiff.ode_samplers, y = x / sqrt(abar), integrated
in s = log sigma: dy/ds = y - D(y, sigma), D the model's x0 prediction at real t(sigma)
(log-sigma interpolation of the schedule). At the ends the densities are converted between y and
x (log |det| = -D log sqrt(abar)), and the prior at T - 1 is N(0, I) in x.

`bits_per_dim` turns nats per example into bits per dimension; for 8-bit images the ODE's
density is first dequantised: x = u / 127.5 - 1 + (U - 1/2) 2 / 255 with U ~ U[0, 1)^D (the bin
of each level, the discretised decoder's bins), so -log P(u) <= -log p(x) - D log(2 / 255)
(Jensen), the standard variational dequantisation bound.
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
                               log_posterior_variance, model_predictions, q_posterior,
                               split_learned_variance)
from jaxdiff.gaussians import BIN_WIDTH, normal_kl
from jaxdiff.losses import vlb_term
from jaxdiff.ode_samplers import _x0_from_output, sigma_to_t, sigmas_of
from jaxdiff.sampling import call_model, check_shape, prepare_model
from jaxdiff.schedules import Schedule

VLB_VARIANCES = ("fixed_small", "fixed_large", "learned_range")
DECODERS = ("gaussian", "discretized")
TRACES = ("exact", "hutchinson")


def _sum_per_example(x: Array) -> Array:
    return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


def prior_kl(s: Schedule, x0: Array) -> Array:
    """KL(q(x_{T-1} | x0) || N(0, I)) per example, in nats."""
    t = jnp.full((x0.shape[0],), s.timesteps - 1, jnp.int32)
    mean = extract(s.sqrt_alphas_cumprod, t, x0.ndim) * x0
    log_variance = extract(s.log_one_minus_alphas_cumprod, t, x0.ndim)
    return _sum_per_example(normal_kl(mean, log_variance, 0.0, 0.0))


def _model_log_variance(s: Schedule, variance: str, t: Array, ndim: int, v=None) -> Array:
    """log of the reverse process variance at t (improved-diffusion's choices: fixed_small is
    the clipped posterior variance, so log beta~_1 at t = 0; fixed_large is beta_t with
    beta~_1 at t = 0)."""
    if variance == "learned_range":
        return learned_range_log_variance(s, v, t)
    if variance == "fixed_small":
        return extract(log_posterior_variance(s), t, ndim)
    large = jnp.concatenate([jnp.asarray(s.posterior_variance)[1:2], jnp.asarray(s.betas)[1:]])
    return extract(jnp.log(large), t, ndim)


@functools.partial(jit, static_argnames=("objective", "variance", "decoder", "clip_x0"))
def _vlb_terms(model_fn, s, x0, key, cond, *, objective, variance, decoder, clip_x0):
    batch = x0.shape[0]
    learned = variance == "learned_range"

    def term(t):
        t_batch = jnp.full((batch,), t, jnp.int32)
        noise = jax.random.normal(jax.random.fold_in(key, t), x0.shape, x0.dtype)
        x_t = (extract(s.sqrt_alphas_cumprod, t_batch, x0.ndim) * x0
               + extract(s.sqrt_one_minus_alphas_cumprod, t_batch, x0.ndim) * noise)
        output = model_fn(x_t, t_batch, **cond)
        v = None
        if learned:
            output, v = split_learned_variance(output)
        if output.shape != x0.shape:
            raise ValueError(f"model_fn returned an output of shape {output.shape} for x_t of "
                             f"shape {x0.shape}")
        pred = model_predictions(s, output, x_t, t_batch, objective, clip_x0)
        model_mean, _, _ = q_posterior(s, pred.x0, x_t, t_batch)
        model_log_variance = _model_log_variance(s, variance, t_batch, x0.ndim, v)
        return vlb_term(s, x0, x_t, t_batch, model_mean, model_log_variance, decoder)

    terms = jax.lax.map(term, jnp.arange(s.timesteps, dtype=jnp.int32))  # [T, B]
    return terms.T


def vlb(
    model_fn: Callable[..., Array],
    s: Schedule,
    x0: Array,
    *,
    key: Array,
    objective: str = "pred_noise",
    variance: str = "fixed_small",
    decoder: str = "gaussian",
    clip_x0: bool | None = None,
    cond: Mapping[str, Array] | None = None,
) -> dict[str, Array]:
    """The variational bound on -log p(x0) of Ho et al. 2020 (eq. 5), per example, in nats.

    model_fn: `model_fn(x_t, t, **cond)` as for the samplers; with variance "learned_range" it
      returns 2C channels (the prediction, then v: `jaxdiff.diffusion.split_learned_variance`).
    x0: [B, ...] in model space; for decoder "discretized" 8-bit levels in [-1, 1].
    variance: "fixed_small" (posterior variance beta~_t), "fixed_large" (beta_t) or
      "learned_range" (Nichol & Dhariwal eq. 15).
    decoder: "gaussian" (a density: continuous data such as points) or "discretized" (the
      probability of each 8-bit level: images).
    clip_x0: clip the x0 prediction to [-1, 1] (default: True for "discretized", False for
      "gaussian").
    Returns {"total": [B], "prior": [B], "terms": [B, T]} with terms[:, 0] the decoder term;
    one draw of x_t per (example, t) from `key`.
    """
    check_objective(objective)
    if variance not in VLB_VARIANCES:
        raise ValueError(f"unknown variance={variance!r}; choose one of "
                         f"{', '.join(VLB_VARIANCES)}")
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder={decoder!r}; choose one of {', '.join(DECODERS)}")
    x0 = jnp.asarray(x0, jnp.float32)
    shape = check_shape(x0.shape)
    if decoder == "discretized" and not isinstance(x0, jax.core.Tracer):
        values = np.asarray(x0)
        if values.min() < -1.0 - 1e-6 or values.max() > 1.0 + 1e-6:
            raise ValueError(f"decoder='discretized' needs x0 in [-1, 1] (8-bit images in model "
                             f"space), got values in [{values.min()}, {values.max()}]")
    clip_x0 = decoder == "discretized" if clip_x0 is None else bool(clip_x0)
    cond = dict(cond or {})
    model_fn = prepare_model(model_fn, shape, cond, False, None, 0.0, None)
    _check_learned_output(model_fn, shape, cond, variance)
    terms = _vlb_terms(model_fn, s, x0, key, cond, objective=objective, variance=variance,
                       decoder=decoder, clip_x0=clip_x0)
    prior = prior_kl(s, x0)
    return {"total": prior + jnp.sum(terms, axis=1), "prior": prior, "terms": terms}


def _check_learned_output(model_fn, shape, cond, variance: str) -> None:
    """A one-line error when the model's channels do not match `variance`."""
    out = jax.eval_shape(lambda f: f(jnp.zeros(shape, jnp.float32),
                                     jnp.zeros(shape[:1], jnp.int32), **cond), model_fn)
    doubled = shape[:-1] + (2 * shape[-1],)
    if variance == "learned_range" and out.shape != doubled:
        raise ValueError(f"variance='learned_range' needs a learned-variance model (output "
                         f"shape {doubled}), but model_fn returns {out.shape}")
    if variance != "learned_range" and out.shape != shape:
        hint = (" (a learned-variance model: use variance='learned_range')"
                if out.shape == doubled else "")
        raise ValueError(f"model_fn returned an output of shape {out.shape} for x_t of shape "
                         f"{shape}{hint}")


# --- the probability-flow ODE -----------------------------------------------------------------

@functools.partial(jit, static_argnames=("objective", "trace", "num_probes", "learned",
                                         "rtol", "atol", "max_steps"))
def _ode_loop(model_fn, s, x0, key, cond, *, objective, trace, num_probes, learned, rtol, atol,
              max_steps):
    import diffrax

    sigma_table = sigmas_of(s)
    log_sigmas = jnp.log(sigma_table)
    batch, dims = x0.shape[0], int(np.prod(x0.shape[1:]))

    def denoise(y, sigma):
        """D(y, sigma), the x0 prediction at VE state y."""
        alpha = 1.0 / jnp.sqrt(1.0 + sigma**2)
        t = jnp.full((batch,), sigma_to_t(sigma, log_sigmas), jnp.float32)
        output = call_model(model_fn, y * alpha, t, cond) if not learned else (
            split_learned_variance(model_fn(y * alpha, t, **cond))[0])
        return _x0_from_output(output, y * alpha, alpha, sigma * alpha, objective, False)

    probes = jax.random.rademacher(key, (num_probes,) + x0.shape, jnp.float32)
    basis = jnp.eye(dims, dtype=jnp.float32).reshape((dims, 1) + x0.shape[1:])

    def field(log_sigma, state, _):
        y, _ = state
        sigma = jnp.exp(log_sigma)
        fn = lambda z: denoise(z, sigma)  # noqa: E731
        d = fn(y)
        if trace == "exact":  # tr dD/dy from D forward-mode products, one per dimension
            def diagonal(e):
                return _sum_per_example(e * jax.jvp(fn, (y,), (jnp.broadcast_to(e, y.shape),))[1])
            trace_d = jnp.sum(jax.lax.map(diagonal, basis), axis=0)
        else:  # Hutchinson: E[e^T (dD/dy) e] over Rademacher probes e
            def estimate(e):
                return _sum_per_example(e * jax.jvp(fn, (y,), (e,))[1])
            trace_d = jnp.mean(jax.lax.map(estimate, probes), axis=0)
        # dy/ds = y - D; its divergence is dims - tr dD/dy
        return y - d, dims - trace_d

    sigma_min, sigma_max = sigma_table[0], sigma_table[-1]
    alpha_min = 1.0 / jnp.sqrt(1.0 + sigma_min**2)
    alpha_max = 1.0 / jnp.sqrt(1.0 + sigma_max**2)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), t0=jnp.log(sigma_min), t1=jnp.log(sigma_max),
        dt0=None, y0=(x0 / alpha_min, jnp.zeros((batch,), jnp.float32)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, throw=False)
    y_T, integral = solution.ys[0][-1], solution.ys[1][-1]
    x_T = y_T * alpha_max
    prior = _sum_per_example(-0.5 * (np.log(2.0 * np.pi) + x_T**2))
    # log p_x(x0) = log p_y(y0) - D log alpha_min; log p_y(y_T) = log p_x(x_T) + D log alpha_max
    log_p = prior + dims * jnp.log(alpha_max) + integral - dims * jnp.log(alpha_min)
    ok = solution.result == diffrax.RESULTS.successful
    return log_p, solution.stats["num_steps"], ok


def ode_log_likelihood(
    model_fn: Callable[..., Array],
    s: Schedule,
    x0: Array,
    *,
    key: Array,
    objective: str = "pred_noise",
    trace: str = "exact",
    num_probes: int = 1,
    cond: Mapping[str, Array] | None = None,
    learned_variance: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    return_steps: bool = False,
):
    """log p(x0) under the probability-flow ODE (Song et al. 2021, eq. 39 and appendix D.2), per
    example, in nats; x0 [B, ...] in model space, taken at the first table time t = 0.

    trace: "exact" (D forward-mode products per step; points, small images) or "hutchinson"
      (`num_probes` Rademacher probes drawn from `key`, fixed along the trajectory: unbiased).
    learned_variance: the model returns 2C channels; the ODE uses the prediction half.
    rtol, atol: the adaptive step controller's tolerances; `max_steps` bounds the solver
      (exceeding it raises). With `return_steps`, also the number of accepted solver steps.
    The model is called at real-valued t (log-sigma interpolation), as `karras_sample`.
    """
    check_objective(objective)
    if trace not in TRACES:
        raise ValueError(f"unknown trace={trace!r}; choose one of {', '.join(TRACES)}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, (int, np.integer)) or (
            num_probes < 1):
        raise ValueError(f"num_probes must be an integer >= 1, got num_probes={num_probes!r}")
    x0 = jnp.asarray(x0, jnp.float32)
    shape = check_shape(x0.shape)
    cond = dict(cond or {})
    model_fn = prepare_model(model_fn, shape, cond, False, None, 0.0, None)
    _check_learned_output(model_fn, shape, cond,
                          "learned_range" if learned_variance else "fixed_small")
    log_p, steps, ok = _ode_loop(model_fn, s, x0, key, cond, objective=objective, trace=trace,
                                 num_probes=int(num_probes), learned=bool(learned_variance),
                                 rtol=float(rtol), atol=float(atol), max_steps=int(max_steps))
    if not bool(ok):
        raise RuntimeError(f"the probability-flow ODE solve did not finish within "
                           f"max_steps={max_steps} (rtol={rtol}, atol={atol})")
    return (log_p, int(steps)) if return_steps else log_p


def dequantize(key: Array, images_uint8) -> Array:
    """8-bit images (uint8, any shape) as model-space x = u / 127.5 - 1 + (U - 1/2) 2 / 255,
    U ~ U[0, 1): a uniform draw within each level's bin."""
    u = jnp.asarray(images_uint8, jnp.float32)
    jitter = jax.random.uniform(key, u.shape, jnp.float32) - 0.5
    return u / 127.5 - 1.0 + jitter * BIN_WIDTH


def bits_per_dim(nats: Array, dims: int, dequantized: bool = False) -> Array:
    """Nats per example -> bits per dimension; `dequantized`: the nats are -log p(x) of a
    density on uniformly dequantised 8-bit data, so -D log(2 / 255) (the bins' volume) is added
    to bound the discrete -log P(u)."""
    nats = jnp.asarray(nats)
    if dequantized:
        nats = nats - dims * np.log(BIN_WIDTH)
    return nats / (dims * np.log(2.0))
