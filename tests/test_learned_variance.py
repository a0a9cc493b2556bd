"""Learned variances (Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic
Models") and respaced DDPM, checked against float64 maths written here or in tests/oracles.py.

  gaussians   normal_kl against the closed form and a quadrature of the integral; the
              discretised Gaussian's 256 bin probabilities against scipy's normal CDF, and
              their sum (1, in float64).
  loss        the hybrid loss L_simple + lambda T L_t of a hand-built batch against NumPy
              (KL / ln 2 per dimension for t > 0, the decoder NLL for t = 0); the gradient of the
              VLB term does not reach the mean; at the exact mean of Gaussian data the v that
              minimises the loss gives the analytic optimal variance
                  Sigma* = beta~_t + coef1_t^2 Var[x0 | x_t]     (inside [beta~_t, beta_t]).
  sampling    learned_range with v = -1 / +1 is fixed_small / fixed_large; the exact denoiser
              with v = 0 has the oracle's moments; every sampler runs a learned-variance model;
              guidance guides the prediction and keeps the conditional v.
  respacing   the kept times are improved-diffusion's `space_timesteps(T, [K])`; K = T is plain
              DDPM bit for bit; the model is called at the kept times; the exact denoiser's
              samples have the moments of the oracle propagated over the respaced schedule.
  pipeline    models double their output channels; a learned-variance toy run trains through
              train_and_evaluate and samples with every sampler; configs validate the field.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import ndtr

import jaxdiff
from jaxdiff.gaussians import (discretized_gaussian_log_likelihood, gaussian_log_likelihood,
                               normal_kl)
from jaxdiff.models import DDPMUnet, MLPDenoiser, Unet
from jaxdiff.schedules import respace_schedule, respaced_timesteps

import oracles
from helpers import one_line, tiny_toy_config

LN2 = math.log(2.0)


# --- gaussians ---------------------------------------------------------------------------------

def test_normal_kl_is_the_closed_form_and_the_integral():
    rng = np.random.default_rng(0)
    mean1, mean2 = rng.normal(size=50), rng.normal(size=50)
    logvar1, logvar2 = rng.uniform(-3, 2, 50), rng.uniform(-3, 2, 50)
    var1, var2 = np.exp(logvar1), np.exp(logvar2)
    closed = np.log(np.sqrt(var2 / var1)) + (var1 + (mean1 - mean2) ** 2) / (2 * var2) - 0.5
    got = np.asarray(normal_kl(mean1, logvar1, mean2, logvar2), np.float64)
    np.testing.assert_allclose(got, closed, rtol=2e-5, atol=1e-6)
    # one pair by quadrature of the integral of p log(p / q)
    x = np.linspace(-15, 15, 300_001)
    log_p = -(x - 0.3) ** 2 / (2 * 0.5) - 0.5 * np.log(2 * np.pi * 0.5)
    log_q = -(x + 0.7) ** 2 / (2 * 2.0) - 0.5 * np.log(2 * np.pi * 2.0)
    integral = np.sum(np.exp(log_p) * (log_p - log_q)) * (x[1] - x[0])
    got = float(normal_kl(0.3, np.log(0.5), -0.7, np.log(2.0)))
    assert abs(got - integral) < 1e-6, (got, integral)
    assert float(normal_kl(0.2, -1.0, 0.2, -1.0)) == 0.0


def test_gaussian_log_likelihood_is_the_normal_log_density():
    x, mean, log_variance = np.array([0.1, -2.0, 3.0]), np.array([0.0, -1.0, 3.5]), np.array(
        [0.0, -2.0, 1.0])
    sd = np.exp(0.5 * log_variance)
    expected = -0.5 * np.log(2 * np.pi) - np.log(sd) - (x - mean) ** 2 / (2 * sd**2)
    np.testing.assert_allclose(gaussian_log_likelihood(x, mean, log_variance), expected,
                               rtol=1e-6)


@pytest.mark.parametrize("mean,log_scale", [(0.0, np.log(0.01)), (0.7, np.log(0.3)),
                                            (-0.999, np.log(0.002)), (1.2, np.log(0.05))])
def test_discretized_gaussian_bins_are_the_normal_cdf_and_sum_to_one(mean, log_scale):
    """The 8-bit levels x = u / 127.5 - 1: bin [x - 1/255, x + 1/255], the end bins reaching to
    -inf and +inf (Ho et al. 2020, eq. 13), so the probabilities sum to 1 (float64)."""
    levels = np.arange(256) / 127.5 - 1.0
    scale = np.exp(log_scale)
    upper = np.where(levels > 0.999, 1.0, ndtr((levels + 1 / 255 - mean) / scale))
    lower = np.where(levels < -0.999, 0.0, ndtr((levels - 1 / 255 - mean) / scale))
    expected = upper - lower
    with jax.enable_x64(True):
        log_probs = discretized_gaussian_log_likelihood(
            jnp.asarray(levels, jnp.float64), jnp.float64(mean), jnp.float64(log_scale))
        probs = np.exp(np.asarray(log_probs))
    assert log_probs.dtype == jnp.float64
    assert abs(probs.sum() - 1.0) < 1e-9, probs.sum()
    big = expected > 1e-6  # below that the 1e-12 floor of the log shows
    np.testing.assert_allclose(probs[big], expected[big], rtol=1e-9)
    # float32, as training runs it: still a distribution to float32 rounding
    probs32 = np.exp(np.asarray(discretized_gaussian_log_likelihood(
        jnp.asarray(levels, jnp.float32), mean, log_scale), np.float64))
    assert abs(probs32.sum() - 1.0) < 1e-4, probs32.sum()


# --- the hybrid loss ---------------------------------------------------------------------------

def learned_range_numpy(table, v, t):
    """eq. 15 in float64: f log beta_t + (1 - f) log beta~_t, f = (v + 1) / 2, with beta~_1 for
    the zero beta~_0 (improved-diffusion's posterior_log_variance_clipped)."""
    fraction = (v + 1.0) / 2.0
    posterior = table["posterior_variance"]
    low = np.log(np.concatenate([posterior[1:2], posterior[1:]]))
    return fraction * np.log(table["betas"][t]) + (1.0 - fraction) * low[t]


@pytest.mark.parametrize("decoder", ["gaussian", "discretized"])
def test_hybrid_loss_is_l_simple_plus_lambda_t_times_the_vlb_term(decoder):
    """A hand-built batch (t = 0, 3, 9 of T = 10; a model returning fixed arrays) against NumPy:
    per example  mean((eps_hat - eps)^2) + 0.001 T L_t,  L_t = mean(KL) / ln 2 (t > 0) or
    mean(-log p(x0 | x1)) / ln 2 (t = 0), the KL and the likelihoods in closed form."""
    T, lam = 10, 0.001
    table = oracles.schedule("linear", T)
    s = jaxdiff.make_schedule("linear", timesteps=T)
    rng = np.random.default_rng(1)
    t = np.array([0, 3, 9])
    x0 = rng.integers(0, 256, (3, 4)) / 127.5 - 1.0  # 8-bit levels, for both decoders
    x0[0, :2] = [-1.0, 1.0]  # the two edge bins
    noise = rng.normal(size=(3, 4))
    eps_hat = noise + 0.3 * rng.normal(size=(3, 4))
    v = rng.uniform(0.5, 1.0, (3, 4))
    x0, noise, eps_hat, v = (a.astype(np.float32).astype(np.float64) for a in (x0, noise,
                                                                                eps_hat, v))

    def model_fn(x_t, t_):
        return jnp.asarray(np.concatenate([eps_hat, v], -1), jnp.float32)

    loss, per_example = jaxdiff.diffusion_loss(
        model_fn, s, jnp.asarray(x0, jnp.float32), jax.random.key(0), t=jnp.asarray(t, jnp.int32),
        noise=jnp.asarray(noise, jnp.float32), learned_variance=True, vlb_weight=lam,
        decoder=decoder)

    col = lambda name: table[name][t][:, None]  # noqa: E731
    abar = col("alphas_cumprod")
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise
    x0_hat = (x_t - np.sqrt(1 - abar) * eps_hat) / np.sqrt(abar)
    mean_p = col("posterior_mean_coef1") * x0_hat + col("posterior_mean_coef2") * x_t
    mean_q = col("posterior_mean_coef1") * x0 + col("posterior_mean_coef2") * x_t
    var_p = np.exp(learned_range_numpy(table, v, t[:, None]))
    var_q = col("posterior_variance")
    kl = 0.5 * (np.log(var_p / var_q) + var_q / var_p + (mean_q - mean_p) ** 2 / var_p - 1.0)
    if decoder == "gaussian":
        nll = 0.5 * np.log(2 * np.pi * var_p) + (x0 - mean_p) ** 2 / (2 * var_p)
    else:
        sd = np.sqrt(var_p)
        upper = np.where(x0 > 0.999, 1.0, ndtr((x0 + 1 / 255 - mean_p) / sd))
        lower = np.where(x0 < -0.999, 0.0, ndtr((x0 - 1 / 255 - mean_p) / sd))
        nll = -np.log(upper - lower)
    vlb = np.where(t == 0, nll.mean(1), kl.mean(1)) / LN2
    expected = ((eps_hat - noise) ** 2).mean(1) + lam * T * vlb
    np.testing.assert_allclose(per_example, expected, rtol=2e-5)
    np.testing.assert_allclose(loss, expected.mean(), rtol=2e-5)
    # the VLB term is a real part of it (not swamped by the MSE)
    assert (np.abs(lam * T * vlb) > 1e-3 * np.abs(expected)).all()


def test_the_vlb_gradient_reaches_v_and_not_the_mean():
    s = jaxdiff.make_schedule("linear", timesteps=50)
    x0 = jax.random.normal(jax.random.key(0), (64, 3)) * 0.5
    key = jax.random.key(1)

    def learned(params):
        def model_fn(x_t, t):
            return jnp.concatenate([params["w"] * x_t + params["b"],
                                    jnp.broadcast_to(params["v"], x_t.shape)], -1)
        return jaxdiff.diffusion_loss(model_fn, s, x0, key, learned_variance=True)[0]

    def plain(params):
        return jaxdiff.diffusion_loss(lambda x_t, t: params["w"] * x_t + params["b"], s, x0,
                                      key)[0]

    def vlb_only(params):
        return learned(params) - plain(params)

    params = {"w": jnp.float32(0.7), "b": jnp.float32(0.1), "v": jnp.float32(0.2)}
    grads, plain_grads = jax.grad(learned)(params), jax.grad(plain)(params)
    vlb_grads = jax.grad(vlb_only)(params)
    assert float(vlb_grads["w"]) == 0.0 and float(vlb_grads["b"]) == 0.0
    np.testing.assert_allclose(grads["w"], plain_grads["w"], rtol=1e-6)
    np.testing.assert_allclose(grads["b"], plain_grads["b"], rtol=1e-6)
    assert np.isfinite(grads["v"]) and abs(float(grads["v"])) > 1e-4


# Narrow Gaussian data: at these small t the optimum lies well inside [beta~_t, beta_t]
# (f* = 0.73, 0.59, 0.48, 0.34 for t = 1, 2, 3, 5 with sd = 0.02, T = 1000 linear).
OPT_MU, OPT_SD, OPT_T = 0.3, 0.02, 1000


@pytest.mark.parametrize("t", [1, 2, 3, 5])
def test_learned_range_at_the_optimum_is_the_analytic_optimal_variance(t):
    """With the exact mean E[x0 | x_t] of x0 ~ N(mu, sd^2), the expected KL of step t is
    0.5 (log Sigma + (beta~ + coef1^2 Var[x0 | x_t]) / Sigma) + const, least at
        Sigma* = beta~_t + coef1_t^2 Var[x0 | x_t],  Var[x0 | x_t] = sd^2 (1 - abar) /
                                                                   (abar sd^2 + 1 - abar).
    The v minimising the hybrid loss (a grid search; the loss is convex in v) over 65,536
    values gives exp(learned range) = Sigma* within Monte-Carlo error (0.55% of the coef1^2 Var
    part; bound 2.5%), and the sample optimum beta~ + mean(coef1^2 (x0 - x0_hat)^2) within
    0.1%."""
    table = oracles.schedule("linear", OPT_T)
    s = jaxdiff.make_schedule("linear", timesteps=OPT_T)
    abar = table["alphas_cumprod"][t]
    posterior_x0_var = OPT_SD**2 * (1 - abar) / (abar * OPT_SD**2 + 1 - abar)
    optimum = table["posterior_variance"][t] + table["posterior_mean_coef1"][t] ** 2 * (
        posterior_x0_var)
    assert table["posterior_variance"][t] < optimum < table["betas"][t]

    shape = (64, 1024)
    x0 = OPT_MU + OPT_SD * jax.random.normal(jax.random.key(t), shape)
    noise = jax.random.normal(jax.random.key(100 + t), shape)
    t_batch = jnp.full((shape[0],), t, jnp.int32)
    a, b = np.sqrt(abar), np.sqrt(1 - abar)
    gain = a * OPT_SD**2 / (abar * OPT_SD**2 + 1 - abar)

    def loss_at(v):
        def model_fn(x_t, t_):
            x0_hat = OPT_MU + gain * (x_t - a * OPT_MU)
            eps_hat = (x_t - a * x0_hat) / b
            return jnp.concatenate([eps_hat, jnp.full(x_t.shape, v)], -1)
        return jaxdiff.diffusion_loss(model_fn, s, x0, jax.random.key(0), t=t_batch,
                                      noise=noise, learned_variance=True)[0]

    losses = jax.jit(jax.vmap(loss_at))
    low, high = -1.0, 1.0
    for _ in range(4):  # zoom: 41 points, then +- one grid step around the best, 4 times
        grid = np.linspace(low, high, 41)
        best = grid[int(np.argmin(np.asarray(losses(jnp.asarray(grid, jnp.float32)))))]
        step = grid[1] - grid[0]
        low, high = best - step, best + step
    assert -1.0 < best < 1.0
    fraction = (best + 1) / 2
    found = np.exp(fraction * np.log(table["betas"][t])
                   + (1 - fraction) * np.log(table["posterior_variance"][t]))
    assert abs(found / optimum - 1) < 0.025, (t, found, optimum)
    x_t = a * np.asarray(x0, np.float64) + b * np.asarray(noise, np.float64)
    x0_hat = OPT_MU + gain * (x_t - a * OPT_MU)
    sample_optimum = table["posterior_variance"][t] + table["posterior_mean_coef1"][t] ** 2 * (
        np.mean((np.asarray(x0, np.float64) - x0_hat) ** 2))
    assert abs(found / sample_optimum - 1) < 1e-3, (t, found, sample_optimum)


def test_loss_errors_name_the_problem():
    s = jaxdiff.make_schedule("linear", timesteps=10)
    x0 = jnp.zeros((4, 2))
    with pytest.raises(ValueError) as error:
        jaxdiff.diffusion_loss(lambda x, t: x, s, x0, jax.random.key(0), learned_variance=True)
    assert "learned variance asked of a model without it" in one_line(error)
    with pytest.raises(ValueError) as error:
        jaxdiff.diffusion_loss(lambda x, t: jnp.concatenate([x, x], -1), s, x0,
                               jax.random.key(0))
    assert "learned_variance=True" in one_line(error)
    with pytest.raises(ValueError, match="decoder='binary'"):
        jaxdiff.diffusion_loss(lambda x, t: x, s, x0, jax.random.key(0), decoder="binary")
    with pytest.raises(ValueError, match="vlb_weight=-1"):
        jaxdiff.diffusion_loss(lambda x, t: x, s, x0, jax.random.key(0), vlb_weight=-1)


# --- sampling with a learned variance ----------------------------------------------------------

MU, SD = np.array([0.3, -0.5]), np.array([0.5, 0.2])
N = 100_000


def exact_model(s, mu=MU, sd=SD, v=None):
    """The exact eps prediction for N(mu, sd^2) data at s's tables; with `v`, a learned-variance
    model returning [eps, v]."""
    mu32, var32 = jnp.asarray(mu, jnp.float32)[None], jnp.asarray(sd, jnp.float32)[None] ** 2

    def model_fn(x_t, t):
        if jnp.issubdtype(t.dtype, jnp.floating):  # Karras calls at real t: interpolate abar
            abar = jnp.interp(t, jnp.arange(s.timesteps), jnp.asarray(s.alphas_cumprod))
            a, b = jnp.sqrt(abar)[:, None], jnp.sqrt(1 - abar)[:, None]
        else:
            a = jnp.asarray(s.sqrt_alphas_cumprod)[t][:, None]
            b = jnp.asarray(s.sqrt_one_minus_alphas_cumprod)[t][:, None]
        x0 = mu32 + a * var32 / (a**2 * var32 + b**2) * (x_t - a * mu32)
        eps = (x_t - a * x0) / b
        return eps if v is None else jnp.concatenate([eps, jnp.full_like(eps, v)], -1)

    return model_fn


def assert_moments(samples, mean, var, what):
    """Mean and std within 5 standard errors of the exact ones, per dimension."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    err_mean = np.abs(samples.mean(0) - mean) / np.sqrt(var / n)
    err_std = np.abs(samples.std(0) - np.sqrt(var)) / np.sqrt(var / (2 * n))
    assert (err_mean < 5).all() and (err_std < 5).all(), (what, err_mean, err_std)


@pytest.fixture(scope="module")
def s100():
    return jaxdiff.make_schedule("linear", timesteps=100)


@pytest.mark.parametrize("num_steps", [None, 20])
def test_learned_range_ends_are_the_fixed_variances(s100, num_steps):
    """v = -1 is beta~_t (fixed_small), v = +1 beta_t (fixed_large), also respaced: the same
    noise gives the same samples up to float rounding of exp(log)."""
    x_T = jax.random.normal(jax.random.key(3), (512, 2))
    run = lambda model, variance: jaxdiff.ddpm_sample(  # noqa: E731
        model, s100, key=jax.random.key(4), shape=(512, 2), clip_x0=False, variance=variance,
        x_T=x_T, num_steps=num_steps)
    for v, fixed in ((-1.0, "fixed_small"), (1.0, "fixed_large")):
        learned = run(exact_model(s100, v=v), "learned_range")
        np.testing.assert_allclose(learned, run(exact_model(s100), fixed), atol=5e-6,
                                   err_msg=f"v={v}")
    assert not np.allclose(run(exact_model(s100, v=0.0), "learned_range"),
                           run(exact_model(s100), "fixed_small"), atol=1e-3)


@pytest.mark.parametrize("num_steps", [None, 25])
def test_learned_range_samples_have_the_oracle_moments(s100, num_steps):
    """v = 0 everywhere: sigma_t^2 = sqrt(beta_t beta~_t); the exact denoiser's samples have the
    moments of the float64 oracle over the (respaced) schedule."""
    times = list(range(100)) if num_steps is None else respaced_timesteps(100, num_steps)
    mean, var = oracles.propagate(oracles.respaced_ddpm_steps("learned_range", MU, SD, 100,
                                                              times, fraction=0.5))
    samples = jaxdiff.ddpm_sample(exact_model(s100, v=0.0), s100, key=jax.random.key(5),
                                  shape=(N, 2), clip_x0=False, variance="learned_range",
                                  num_steps=num_steps)
    assert_moments(samples, mean, var, f"learned_range, num_steps={num_steps}")


def test_every_sampler_runs_a_learned_variance_model_on_its_prediction(s100):
    """DDIM, DPM-Solver++, Karras and DDIM inversion with learned_variance=True give exactly what
    they give for the prediction alone."""
    learned, plain = exact_model(s100, v=0.3), exact_model(s100)
    x_T = jax.random.normal(jax.random.key(6), (8, 2))
    common = dict(key=jax.random.key(7), shape=(8, 2), clip_x0=False, x_T=x_T, num_steps=10)
    for sampler in (jaxdiff.ddim_sample, jaxdiff.dpm_solver_sample, jaxdiff.karras_sample):
        np.testing.assert_array_equal(sampler(learned, s100, learned_variance=True, **common),
                                      sampler(plain, s100, **common), err_msg=sampler.__name__)
        with pytest.raises(ValueError) as error:
            sampler(learned, s100, **common)
        assert "learned_variance=True" in one_line(error)
        with pytest.raises(ValueError) as error:
            sampler(plain, s100, learned_variance=True, **common)
        assert "learned variance asked of a model without it" in one_line(error)
    x0 = jax.random.normal(jax.random.key(8), (8, 2))
    np.testing.assert_array_equal(
        jaxdiff.ddim_invert(learned, s100, x0, num_steps=10, learned_variance=True),
        jaxdiff.ddim_invert(plain, s100, x0, num_steps=10))


def test_ddpm_refuses_a_mismatch_of_model_and_variance(s100):
    common = dict(key=jax.random.key(0), shape=(4, 2))
    with pytest.raises(ValueError) as error:
        jaxdiff.ddpm_sample(exact_model(s100), s100, variance="learned_range", **common)
    assert one_line(error).startswith("learned variance asked of a model without it")
    for variance in ("fixed_small", "fixed_large"):
        with pytest.raises(ValueError) as error:
            jaxdiff.ddpm_sample(exact_model(s100, v=0.0), s100, variance=variance, **common)
        assert "variance='learned_range'" in one_line(error)


def test_guidance_guides_the_prediction_and_keeps_the_conditional_v():
    def model_fn(x, t, labels):
        scale = (labels.astype(jnp.float32) + 1.0)[:, None]
        return jnp.concatenate([scale * x, 0.1 * scale * jnp.ones_like(x)], -1)

    guided = jaxdiff.classifier_free_guidance(model_fn, 3.0, {"labels": 2})
    x = jnp.ones((2, 3))
    out = np.asarray(guided(x, jnp.zeros((2,), jnp.int32), labels=jnp.array([0, 1])))
    # prediction: uncond (label 2) 3, cond 1 and 2: 3 + 3 (c - 3) = -3 and 0; v: the conditional
    np.testing.assert_allclose(out[:, :3], [[-3.0] * 3, [0.0] * 3], atol=1e-6)
    np.testing.assert_allclose(out[:, 3:], [[0.1] * 3, [0.2] * 3], atol=1e-7)
    # and inside the samplers: guided ancestral sampling with the learned variance, guided DDIM
    s = jaxdiff.make_schedule("linear", timesteps=20)
    guidance = dict(key=jax.random.key(0), shape=(2, 3), cond={"labels": jnp.array([0, 1])},
                    guidance_scale=2.0, null_cond={"labels": 2})
    ddpm = jaxdiff.ddpm_sample(model_fn, s, variance="learned_range", num_steps=5, **guidance)
    ddim = jaxdiff.ddim_sample(model_fn, s, num_steps=5, learned_variance=True, **guidance)
    assert np.isfinite(np.asarray(ddpm)).all() and np.isfinite(np.asarray(ddim)).all()


# --- respaced DDPM -----------------------------------------------------------------------------

# improved-diffusion's `space_timesteps(T, [K])` (improved_diffusion/respace.py), computed with its
# own code: its positions are accumulated in floating point, so ties such as 12 * 49 / 24 = 24.5
# (T = 50, K = 25) and 7 * 99 / 14 = 49.5 (T = 100, K = 15) round as their float sums do.
IMPROVED_DIFFUSION_TIMES = {
    (50, 25): [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43,
               45, 47, 49],
    (100, 15): [0, 7, 14, 21, 28, 35, 42, 49, 57, 64, 71, 78, 85, 92, 99],
    (1000, 7): [0, 166, 333, 500, 666, 832, 999],
}


def test_respaced_times_are_improved_diffusions_even_spacing():
    for (T, K), expected in IMPROVED_DIFFUSION_TIMES.items():
        assert respaced_timesteps(T, K).tolist() == expected, (T, K)
    for T in (2, 37, 1000):
        for K in range(2, T + 1, max(1, T // 97)):
            times = respaced_timesteps(T, K)
            assert len(times) == K and times[0] == 0 and times[-1] == T - 1, (T, K)
            assert (np.diff(times) > 0).all()
            # each kept time is a rounding of the even position i (T - 1) / (K - 1)
            positions = np.arange(K) * (T - 1) / (K - 1)
            assert np.abs(times - positions).max() <= 0.5 + 1e-9, (T, K)
        assert respaced_timesteps(T, T).tolist() == list(range(T))
    assert respaced_timesteps(1000, 1).tolist() == [999]


def test_respaced_schedule_keeps_abar_at_the_kept_times():
    s = jaxdiff.make_schedule("cosine", timesteps=1000)
    times = respaced_timesteps(1000, 50)
    spaced = respace_schedule(s, times)
    assert spaced.timesteps == 50
    # float32 storage: abar' is rebuilt from s's float32 betas / alphas (1e-5 at abar ~ 2e-9)
    np.testing.assert_allclose(spaced.alphas_cumprod, np.asarray(s.alphas_cumprod)[times],
                               rtol=2e-5)
    np.testing.assert_allclose(spaced.alphas_cumprod[:-1], np.asarray(s.alphas_cumprod)[times][:-1],
                               rtol=1e-6)
    abar = oracles.alphas_cumprod("cosine", 1000)[times]
    expected = oracles.tables(1.0 - abar / np.concatenate([[1.0], abar[:-1]]))
    for name in ("betas", "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2"):
        np.testing.assert_allclose(getattr(spaced, name), expected[name], rtol=2e-5,
                                   err_msg=name)


def test_all_steps_is_plain_ddpm_bit_for_bit(s100):
    model = exact_model(s100)
    common = dict(key=jax.random.key(9), shape=(64, 2), clip_x0=False)
    np.testing.assert_array_equal(jaxdiff.ddpm_sample(model, s100, num_steps=100, **common),
                                  jaxdiff.ddpm_sample(model, s100, **common))
    x_start = jnp.full((64, 2), 0.4)
    np.testing.assert_array_equal(
        jaxdiff.ddpm_sample(model, s100, num_steps=31, x_start=x_start, t_start=30, **common),
        jaxdiff.ddpm_sample(model, s100, x_start=x_start, t_start=30, **common))


def recorded_times(s, batch, **kwargs):
    """The times the sampler calls the model at (a new `batch` size per call: a compiled loop
    keeps the callback of the model it was traced with)."""
    seen = []

    def model(x, t):
        jax.debug.callback(lambda tt: seen.append(int(np.asarray(tt)[0])), t, ordered=True)
        return jnp.zeros_like(x)

    jax.block_until_ready(jaxdiff.ddpm_sample(model, s, key=jax.random.key(0),
                                              shape=(batch, 2), **kwargs))
    jax.effects_barrier()
    return seen


def test_respaced_ddpm_calls_the_model_at_the_kept_times(s100):
    times = recorded_times(s100, 5, num_steps=7)
    assert times == respaced_timesteps(100, 7)[::-1].tolist() == [99, 82, 66, 50, 33, 16, 0]
    # SDEdit: spread over [0, t_start]
    assert recorded_times(s100, 6, num_steps=4, x_start=0.0, t_start=60) == [60, 40, 20, 0]


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("num_steps", [10, 50])
def test_respaced_ddpm_has_the_oracle_moments(s100, variance, num_steps):
    """The exact denoiser through the respaced sampler: samples distributed as the float64
    oracle propagated over the respaced process (betas' = 1 - abar[t_i] / abar[t_{i-1}])."""
    times = respaced_timesteps(100, num_steps)
    mean, var = oracles.propagate(oracles.respaced_ddpm_steps(variance, MU, SD, 100, times))
    samples = jaxdiff.ddpm_sample(exact_model(s100), s100, key=jax.random.key(num_steps),
                                  shape=(N, 2), clip_x0=False, variance=variance,
                                  num_steps=num_steps)
    assert_moments(samples, mean, var, f"{variance}, {num_steps} steps")
    if num_steps == 10 and variance == "fixed_small":
        # the respaced oracle differs from the all-steps one by more than the test resolves
        _, var_all = oracles.propagate(oracles.ddpm_steps(variance, MU, SD, 100))
        assert np.abs(var - var_all).max() > 10 * np.sqrt(2 / N) * var.max()


def test_respaced_inpainting_and_resampling_keep_the_known_values(s100):
    known = jnp.tile(jnp.array([[0.25, -0.75]]), (16, 1))
    mask = jnp.array([[1.0, 0.0]])
    for resamples in (1, 3):
        out = jaxdiff.ddpm_sample(exact_model(s100), s100, key=jax.random.key(1), shape=(16, 2),
                                  clip_x0=False, num_steps=20, known=known, mask=mask,
                                  resamples=resamples, jump_length=5)
        np.testing.assert_array_equal(np.asarray(out)[:, 0], 0.25)
        assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("kwargs,needle", [
    (dict(num_steps=0), "num_steps=0"),
    (dict(num_steps=101), "num_steps=101"),
    (dict(num_steps=2.5), "num_steps=2.5"),
    (dict(num_steps=True), "num_steps=True"),
    (dict(num_steps=40, x_start=jnp.zeros((2, 2)), t_start=30), "num_steps=40"),
])
def test_bad_num_steps_raise_valueerror_naming_it(s100, kwargs, needle):
    with pytest.raises(ValueError) as error:
        jaxdiff.ddpm_sample(exact_model(s100), s100, key=jax.random.key(0), shape=(2, 2),
                            **kwargs)
    assert needle in one_line(error)


# --- models, config, training ------------------------------------------------------------------

def _output_and_params(model, x):
    """The output's shape and the parameter count, from shapes alone (jax.eval_shape)."""
    t = jnp.zeros((x.shape[0],), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), x, t)
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    return jax.eval_shape(model.apply, params, x, t), count


@pytest.mark.parametrize("make,x,extra", [
    (lambda lv: MLPDenoiser(hidden=16, depth=1, time_dim=8,
                                            learned_variance=lv),
     jnp.zeros((3, 2)), 16 * 2 + 2),  # final Dense: hidden x D weights + D biases more
    (lambda lv: Unet(dim=8, dim_mults=(1, 2), channels=1, learned_variance=lv),
     jnp.zeros((2, 8, 8, 1)), 8 * 1 + 1),  # final 1x1 conv from init_dim = dim
    (lambda lv: DDPMUnet(ch=32, ch_mult=(1,), num_res_blocks=1,
                                         attn_resolutions=(), channels=3, learned_variance=lv),
     jnp.zeros((1, 8, 8, 3)), 9 * 32 * 3 + 3),  # conv_out 3x3 from ch
], ids=["mlp", "unet", "ddpm_unet"])
def test_models_double_their_output_channels(make, x, extra):
    out, count = _output_and_params(make(False), x)
    out_learned, count_learned = _output_and_params(make(True), x)
    assert out.shape == x.shape
    assert out_learned.shape == x.shape[:-1] + (2 * x.shape[-1],)
    assert count_learned - count == extra


def test_config_field_is_validated_and_optional():
    from jaxdiff.config import validate_config
    from jaxdiff.errors import ConfigError
    from jaxdiff.models import build_model
    from jaxdiff.training import loss_kwargs

    config = tiny_toy_config()
    assert config.model.learned_variance is False
    del config.model["learned_variance"]  # a config saved before the field existed
    validate_config(config)
    assert build_model(config).learned_variance is False
    assert "learned_variance" not in loss_kwargs(config)

    config.model.learned_variance = "yes"  # (a JSON config can hold any type)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert "config.model.learned_variance='yes'" in one_line(error)
    for fields, needle in (
            ({"model.learned_variance": True}, "config.sample.variance='fixed_small'"),
            ({"sample.variance": "learned_range"}, "model.learned_variance=True")):
        with pytest.raises(ConfigError) as error:
            validate_config(tiny_toy_config(**fields))
        assert needle in one_line(error), fields
    config = tiny_toy_config(**{"model.learned_variance": True,
                                "sample.variance": "learned_range"})
    validate_config(config)
    assert loss_kwargs(config)["learned_variance"] is True
    assert loss_kwargs(config)["decoder"] == "gaussian"
    from jaxdiff.config import image_config

    images = image_config()
    images.model.learned_variance, images.sample.variance = True, "learned_range"
    validate_config(images)
    assert loss_kwargs(images)["decoder"] == "discretized"
    assert build_model(images).learned_variance is True


def test_a_learned_variance_toy_run_trains_and_samples_with_every_sampler(tmp_path):
    from jaxdiff.run import load_run
    from jaxdiff.train_loop import train_and_evaluate

    # T = 50: with the tiny run's T = 20 the linear betas reach 0.999, where a 12-step model's
    # eps error is amplified 30x per step and its (unclipped) v with it
    config = tiny_toy_config(**{"model.learned_variance": True, "diffusion.timesteps": 50,
                                "sample.variance": "learned_range", "sample.sampler": "ddpm"})
    workdir = str(tmp_path / "run")
    report = train_and_evaluate(config, workdir)
    assert all(np.isfinite(value) for value in report.values() if isinstance(value, float))
    run = load_run(workdir)
    # the v half of the last layer (zeros at init) learned from the VLB term
    head = run.params["params"]
    last = head[max((name for name in head if name.startswith("Dense_")),
                    key=lambda name: int(name.split("_")[1]))]
    assert last["kernel"].shape[-1] == 4 and float(jnp.abs(last["kernel"][:, 2:]).max()) > 0
    for sampler in ("ddpm", "ddim", "dpm_solver", "karras"):
        samples = run.sample(32, sampler=sampler, seed=1)
        assert samples.shape == (32, 2) and np.isfinite(samples).all(), sampler
