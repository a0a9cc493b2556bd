"""Training objectives of denoising diffusion models.

`diffusion_loss` is L_simple of Ho et al. 2020 (eq. 14) generalised to the three parametrisations
of denoising-diffusion-pytorch: the model predicts eps ("pred_noise"), x0 ("pred_x0") or
v = sqrt(abar) eps - sqrt(1 - abar) x0 ("pred_v", Salimans & Ho 2022), with an optional per-t
weighting and self-conditioning (Chen et al. 2022, "Analog Bits", sec. 3).

A model is any function `model_fn(x_t, t, **cond) -> output`, output shaped like x_t. With
self-conditioning it must also accept the keyword `x_self_cond` (an x0 estimate shaped like x_t,
zeros when there is none).

Learned variances (Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models",
sec. 3.1): a model whose output has twice x_t's channels, [prediction, v] on the last axis,
trains with `learned_variance=True` on the hybrid loss L_simple + lambda L_vlb, where v sets
the reverse variance by `learned_range_log_variance` and only the L_vlb term (`hybrid_vlb_term`,
its mean input gradient-stopped) teaches it.

Classifier-free guidance needs one model that is both conditional and unconditional: with
`cond_drop_prob` > 0 each example's condition is replaced by `null_cond` (e.g. the null class)
with that probability (Ho & Salimans 2022, algorithm 1); see `drop_condition`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdiff.diffusion import (check_objective, check_output_shape, learned_range_log_variance,
                               model_predictions, q_posterior, q_sample, split_learned_variance,
                               target_for)
from jaxdiff.gaussians import (discretized_gaussian_log_likelihood, gaussian_log_likelihood,
                               normal_kl)
from jaxdiff.schedules import Schedule

WEIGHTINGS = ("none", "min_snr", "eps")
LOSS_TYPES = ("l2", "l1")
COND_DROP_SCHEDULES = ("constant", "linear")
DECODERS = ("gaussian", "discretized")


def loss_weights(
    s: Schedule, t: Array, objective: str, weighting: str = "none", min_snr_gamma: float = 5.0
) -> Array:
    """Per-example loss weights w(t), shape [B].

    weighting:
      "none"     w = 1: plain mean squared (or absolute) error on the objective's target.
      "min_snr"  Min-SNR-gamma (Hang et al. 2023, eq. 9), as denoising-diffusion-pytorch applies it
                 to each target: with c = min(snr, gamma),
                 pred_noise: c / snr,  pred_x0: c,  pred_v: c / (snr + 1).
      "eps"      the same expressions with c = snr (no clipping): every objective's loss equals
                 the eps-prediction MSE (denoising-diffusion-pytorch's default weighting).
    """
    check_objective(objective)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting={weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    if weighting == "none":
        return jnp.ones(t.shape, jnp.float32)
    snr = jnp.asarray(s.snr)[t]
    clipped = jnp.minimum(snr, min_snr_gamma) if weighting == "min_snr" else snr
    if objective == "pred_noise":
        return clipped / snr
    if objective == "pred_x0":
        return clipped
    return clipped / (snr + 1.0)


def drop_condition(
    cond: Mapping[str, Array],
    null_cond: Mapping[str, Array],
    key: Array,
    probability,
) -> dict[str, Array]:
    """Label (condition) dropout for classifier-free guidance (Ho & Salimans 2022, algorithm 1).

    Each example independently, with probability `probability` (a number or a traced scalar),
    has every entry of `cond` named in `null_cond` replaced by that entry (broadcast to the
    example's shape: `{"labels": num_classes}` puts the null class in). The whole condition of an
    example is dropped or kept together. (NVIDIA's DLI course draws its Bernoulli mask per one-hot
    component, but only the component of the true class is non-zero, so that also drops each
    example's label with probability p.)
    """
    unknown = sorted(set(null_cond) - set(cond))
    if unknown:
        raise ValueError(f"null_cond names {unknown}, which are not in cond {sorted(cond)}")
    out = dict(cond)
    if not null_cond:
        return out
    batch = jnp.shape(cond[next(iter(null_cond))])[0]
    drop = jax.random.bernoulli(key, probability, (batch,))
    for name, null in null_cond.items():
        value = jnp.asarray(cond[name])
        null = jnp.broadcast_to(jnp.asarray(null, value.dtype), value.shape)
        mask = drop.reshape((batch,) + (1,) * (value.ndim - 1))
        out[name] = jnp.where(mask, null, value)
    return out


def cond_drop_schedule(
    kind: str, probability: float, *, start: float = 1.0, total_steps: int = 1
) -> Callable[[Array], Array]:
    """The label-dropout probability as a function of the training step.

    kind:
      "constant"  p(step) = probability.
      "linear"    p(step) = max(probability, start (1 - step / total_steps)): linear decay from
                  `start` towards 0, floored at `probability`. With start = 1, probability = 0.1
                  it is NVIDIA DLI's c_drop_prob = max(0.1, 1 - epoch / epochs), in steps
                  instead of whole epochs: early training is mostly unconditional.
    """
    if kind not in COND_DROP_SCHEDULES:
        raise ValueError(f"unknown cond_drop_schedule={kind!r}; choose one of "
                         f"{', '.join(COND_DROP_SCHEDULES)}")
    for name, value in (("cond_drop_prob", probability), ("cond_drop_start", start)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} must be in [0, 1]")
    if kind == "constant":
        return lambda step: jnp.asarray(probability, jnp.float32)
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")

    def linear(step: Array) -> Array:
        fraction = jnp.asarray(step, jnp.float32) / total_steps
        return jnp.maximum(probability, start * (1.0 - fraction)).astype(jnp.float32)

    return linear


def self_condition_input(
    model_fn: Callable[..., Array],
    s: Schedule,
    x_t: Array,
    t: Array,
    key: Array,
    objective: str,
    cond: Mapping[str, Array],
    probability: float = 0.5,
    learned_variance: bool = False,
) -> Array:
    """The x0 estimate fed back to a self-conditioned model during training.

    With probability `probability` (per batch, as in Chen et al. 2022) the model first predicts x0
    from x_t with a zero self-condition; that prediction, with its gradient stopped, becomes the
    extra input. Otherwise the input is zeros. `lax.cond` skips the extra forward pass when it is
    not needed, so self-conditioning costs ~25% more compute on average, not 100%. With
    `learned_variance` the model's output is [prediction, v] and the prediction is used.
    """
    zeros = jnp.zeros_like(x_t)

    def estimate() -> Array:
        output = model_fn(x_t, t, x_self_cond=zeros, **cond)
        if learned_variance:
            output = split_learned_variance(output)[0]
        return jax.lax.stop_gradient(model_predictions(s, output, x_t, t, objective).x0)

    use = jax.random.bernoulli(key, probability)
    return jax.lax.cond(use, estimate, lambda: zeros)


def check_decoder(decoder: str) -> None:
    """Raise a ValueError naming `decoder` unless it is one of DECODERS."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder={decoder!r}; choose one of {', '.join(DECODERS)}")


def hybrid_vlb_term(
    s: Schedule,
    prediction: Array,
    v: Array,
    x0: Array,
    x_t: Array,
    t: Array,
    *,
    objective: str = "pred_noise",
    decoder: str = "gaussian",
) -> Array:
    """The variational-bound term L_t of one step, in bits per dimension, [B] (Ho et al. 2020,
    eq. 5; Nichol & Dhariwal 2021, sec. 3.1, as improved-diffusion's `_vb_terms_bpd`):

      t > 0:  L_t = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) / (D ln 2)
      t = 0:  L_0 = -log p(x0 | x_1) / (D ln 2)   (the decoder)

    summed over the D values of an example. p(x_{t-1} | x_t) = N(mu, Sigma): mu is the posterior
    mean at the x0 that `prediction` (the objective's output, unclipped) implies, and
    log Sigma = `learned_range_log_variance(s, v, t)`. decoder: "gaussian" (continuous data:
    log N(x0; mu, Sigma)) or "discretized" (8-bit images in [-1, 1]: the probability of x0's bin,
    `discretized_gaussian_log_likelihood`).

    prediction, v, x0, x_t: [B, ...]; t: int32 [B]. The gradient reaches `prediction` unless the
    caller stops it (diffusion_loss does, so that L_vlb teaches only the variance).
    """
    check_objective(objective)
    check_decoder(decoder)
    x0_hat = model_predictions(s, prediction, x_t, t, objective).x0
    model_mean, _, _ = q_posterior(s, x0_hat, x_t, t)
    terms = vlb_term(s, x0, x_t, t, model_mean, learned_range_log_variance(s, v, t), decoder)
    return terms / (np.prod(x0.shape[1:]) * np.log(2.0))


def vlb_term(s: Schedule, x0: Array, x_t: Array, t: Array, model_mean: Array,
             model_log_variance: Array, decoder: str) -> Array:
    """One step's variational-bound term per example, in nats, [B]: for t > 0 the KL of
    q(x_{t-1} | x_t, x0) from p(x_{t-1} | x_t) = N(model_mean, exp(model_log_variance)), for
    t = 0 the decoder's -log p(x0 | x_0), summed over the example's values (t: int32 [B]).
    Shared by the hybrid loss and `jaxdiff.likelihood.vlb`."""
    batch = x0.shape[0]
    true_mean, _, true_log_variance = q_posterior(s, x0, x_t, t)
    first = (t == 0).reshape((batch,) + (1,) * (x0.ndim - 1))
    # Each branch gets a harmless log variance (0) where the other is selected, so a branch that
    # is not used cannot put an inf or NaN into the gradient (jnp.where differentiates both).
    kl = normal_kl(true_mean, true_log_variance, model_mean,
                   jnp.where(first, 0.0, model_log_variance))
    decoder_log_variance = jnp.where(first, model_log_variance, 0.0)
    if decoder == "gaussian":
        nll = -gaussian_log_likelihood(x0, model_mean, decoder_log_variance)
    else:
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * decoder_log_variance)
    return jnp.sum(jnp.where(first, nll, kl).reshape(batch, -1), axis=1)


def diffusion_loss(
    model_fn: Callable[..., Array],
    s: Schedule,
    x0: Array,
    key: Array,
    *,
    objective: str = "pred_noise",
    loss_type: str = "l2",
    weighting: str = "none",
    min_snr_gamma: float = 5.0,
    self_condition: bool = False,
    cond: Mapping[str, Array] | None = None,
    t: Array | None = None,
    noise: Array | None = None,
    cond_drop_prob=0.0,
    null_cond: Mapping[str, Array] | None = None,
    learned_variance: bool = False,
    vlb_weight: float = 0.001,
    decoder: str = "gaussian",
) -> tuple[Array, Array]:
    """Monte-Carlo diffusion loss for a batch x0 of shape [B, ...].

    Draws t ~ U{0, ..., T-1} and eps ~ N(0, I) (unless given), forms x_t = q_sample(x0, t, eps)
    and returns (mean loss, per-example losses [B]), where the per-example loss is
    w(t) * mean over non-batch axes of |model_fn(x_t, t) - target|^p, p = 2 ("l2") or 1 ("l1").

    learned_variance: the model returns [prediction, v], twice x_t's channels on the last axis
      (a shape error otherwise), and the loss is the hybrid loss of Nichol & Dhariwal 2021
      (eq. 16): L_simple as above on the prediction, plus
          vlb_weight * T * hybrid_vlb_term(s, stop_gradient(prediction), v, x0, x_t, t),
      the one-step Monte-Carlo estimate of lambda L_vlb with L_vlb = sum_t L_t in bits per
      dimension. With lambda = `vlb_weight` = 0.001 this is improved-diffusion's
      "rescaled MSE" loss (mse + vb * T / 1000). The mean's gradient comes from L_simple alone,
      v's from L_vlb alone. `decoder` ("gaussian" for continuous data, "discretized" for 8-bit
      images in [-1, 1]) is L_0's likelihood, see `hybrid_vlb_term`.

    With `null_cond`, each example's condition is replaced by it with probability
    `cond_drop_prob` (a number or a traced scalar from `cond_drop_schedule`) before anything
    else, so the self-conditioning pass sees the same (possibly dropped) condition.
    """
    check_objective(objective)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type={loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    check_decoder(decoder)
    if not isinstance(vlb_weight, jax.core.Tracer) and not (np.isfinite(vlb_weight)
                                                            and vlb_weight >= 0):
        raise ValueError(f"vlb_weight must be a finite number >= 0, got vlb_weight={vlb_weight!r}")
    cond = dict(cond or {})
    if null_cond is not None:
        key, key_drop = jax.random.split(key)  # only here: runs without dropout keep their keys
        cond = drop_condition(cond, null_cond, key_drop, cond_drop_prob)
    elif not isinstance(cond_drop_prob, jax.core.Tracer) and cond_drop_prob != 0:
        raise ValueError(f"cond_drop_prob={cond_drop_prob} needs null_cond, the condition that "
                         f"replaces dropped ones (for class labels {{'labels': num_classes}})")
    key_t, key_noise, key_self_cond = jax.random.split(key, 3)
    batch = x0.shape[0]
    if t is None:
        t = jax.random.randint(key_t, (batch,), 0, s.timesteps, dtype=jnp.int32)
    if noise is None:
        noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    x_t = q_sample(s, x0, t, noise)
    if self_condition:
        cond["x_self_cond"] = self_condition_input(
            model_fn, s, x_t, t, key_self_cond, objective, cond,
            learned_variance=learned_variance,
        )
    output = model_fn(x_t, t, **cond)
    check_output_shape(output, x_t, learned_variance)
    output = output.astype(jnp.float32)
    if learned_variance:
        output, v = split_learned_variance(output)
    error = output - target_for(objective, s, x0, t, noise)
    error = jnp.square(error) if loss_type == "l2" else jnp.abs(error)
    per_example = error.reshape(batch, -1).mean(axis=1)
    per_example = per_example * loss_weights(s, t, objective, weighting, min_snr_gamma)
    if learned_variance:
        vlb = hybrid_vlb_term(s, jax.lax.stop_gradient(output), v, x0, x_t, t,
                              objective=objective, decoder=decoder)
        per_example = per_example + vlb_weight * s.timesteps * vlb
    return per_example.mean(), per_example


