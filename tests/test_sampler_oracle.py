"""Samplers driven by the exact denoiser of Gaussian data, checked against float64 moments.

For x0 ~ N(mu, s^2) (per dimension) the posterior mean is linear in x_t:
  E[x0 | x_t] = mu + g_t (x_t - sqrt(abar_t) mu),  g_t = sqrt(abar_t) s^2 / (abar_t s^2 + 1 - abar_t).
Each sampler step is then x' = A x + B + sigma z, so the output is exactly Gaussian and its mean m
and variance v follow m' = A m + B, v' = A^2 v + sigma^2 from x_T ~ N(0, 1). The expected
moments below are propagated in float64 from the papers' formulas (Ho et al. 2020 eq. 6-7;
Song et al. 2021 eq. 12 and 16), independently of jaxdiff's code; the empirical moments of
N samples must match them within 5 standard errors.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff

MU = np.array([0.3, -0.5])
SD = np.array([0.5, 0.2])
N = 40_000
T = 1000


def linear_alphas_cumprod(timesteps):
    betas = np.linspace(1e-4 * 1000 / timesteps, 0.02 * 1000 / timesteps, timesteps)
    return betas, np.cumprod(1.0 - betas)


def oracle_x0(x_t, t, *, sqrt_abar, sqrt_one_minus):
    a = sqrt_abar[t][:, None]
    mu, var = MU[None, :], SD[None, :] ** 2  # explicit ranks: tests run with rank promotion off
    gain = a * var / (a**2 * var + sqrt_one_minus[t][:, None] ** 2)
    return mu + gain * (x_t - a * mu)


def oracle_model(objective, timesteps=T):
    """The exact prediction of `objective` for Gaussian data, as a jnp model_fn."""
    betas, abar = linear_alphas_cumprod(timesteps)
    sqrt_abar = jnp.asarray(np.sqrt(abar), jnp.float32)
    sqrt_one_minus = jnp.asarray(np.sqrt(1 - abar), jnp.float32)

    def model_fn(x_t, t):
        a, b = sqrt_abar[t][:, None], sqrt_one_minus[t][:, None]
        x0 = oracle_x0(x_t, t, sqrt_abar=sqrt_abar, sqrt_one_minus=sqrt_one_minus)
        eps = (x_t - a * x0) / b
        return {"pred_x0": x0, "pred_noise": eps, "pred_v": a * eps - b * x0}[objective]

    return model_fn


def ddpm_moments(variance="fixed_small", timesteps=T):
    betas, abar = linear_alphas_cumprod(timesteps)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    m, v = np.zeros(2), np.ones(2)
    for t in range(timesteps - 1, -1, -1):
        gain = np.sqrt(abar[t]) * SD**2 / (abar[t] * SD**2 + 1 - abar[t])
        coef1 = betas[t] * np.sqrt(abar_prev[t]) / (1 - abar[t])
        coef2 = (1 - abar_prev[t]) * np.sqrt(1 - betas[t]) / (1 - abar[t])
        A = coef1 * gain + coef2
        B = coef1 * (MU - gain * np.sqrt(abar[t]) * MU)
        sigma2 = 0.0
        if t > 0:
            sigma2 = betas[t] * (1 - abar_prev[t]) / (1 - abar[t]) if variance == "fixed_small" \
                else betas[t]
        m, v = A * m + B, A**2 * v + sigma2
    return m, v


def ddim_moments(times, eta, timesteps=T):
    """times: descending visited t's; the last step goes to abar = 1."""
    _, abar = linear_alphas_cumprod(timesteps)
    m, v = np.zeros(2), np.ones(2)
    for i, t in enumerate(times):
        a_next = abar[times[i + 1]] if i + 1 < len(times) else 1.0
        gain = np.sqrt(abar[t]) * SD**2 / (abar[t] * SD**2 + 1 - abar[t])
        # x0hat = gain x + (mu - gain sqrt(abar) mu); eps = (x - sqrt(abar) x0hat) / sqrt(1 - abar)
        x0_A, x0_B = gain, MU - gain * np.sqrt(abar[t]) * MU
        eps_A = (1 - np.sqrt(abar[t]) * x0_A) / np.sqrt(1 - abar[t])
        eps_B = -np.sqrt(abar[t]) * x0_B / np.sqrt(1 - abar[t])
        sigma = eta * np.sqrt((1 - a_next) / (1 - abar[t]) * (1 - abar[t] / a_next))
        c = np.sqrt(1 - a_next - sigma**2)
        A = np.sqrt(a_next) * x0_A + c * eps_A
        B = np.sqrt(a_next) * x0_B + c * eps_B
        m, v = A * m + B, A**2 * v + sigma**2
    return m, v


def assert_moments(samples, mean, var):
    samples = np.asarray(samples, np.float64)
    n = len(samples)
    se_mean, se_std = np.sqrt(var / n), np.sqrt(var / (2 * n))
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * se_mean)
    np.testing.assert_array_less(np.abs(samples.std(0) - np.sqrt(var)), 5 * se_std)


@pytest.fixture(scope="module")
def schedule():
    return jaxdiff.make_schedule("linear", T)


# Discretisation bias with T = 1000 linear steps, measured from the float64 propagation:
# std / s - 1 = (-0.8%, -1.9%) for DDPM fixed_small and DDIM eta = 1 (the posterior variance
# ignores Var[x0 | x_t]), (+0.2%, +0.5%) for fixed_large, (-0.3%, -0.7%) for DDIM eta = 0;
# mean bias <= 0.001. Hence these tolerances on the distance to the data distribution:
STD_BIAS = 0.025
MEAN_BIAS = 0.01 * SD.min()


def assert_close_to_data(samples):
    samples = np.asarray(samples, np.float64)
    se_mean, se_std = SD / np.sqrt(len(samples)), SD / np.sqrt(2 * len(samples))
    np.testing.assert_array_less(np.abs(samples.mean(0) - MU), MEAN_BIAS + 5 * se_mean)
    np.testing.assert_array_less(np.abs(samples.std(0) - SD), STD_BIAS * SD + 5 * se_std)


def test_exact_moments_are_close_to_the_data(schedule):
    for mean, var in (ddpm_moments(), ddpm_moments("fixed_large"),
                      ddim_moments(list(range(T - 1, -1, -1)), 0.0),
                      ddim_moments(list(range(T - 1, -1, -1)), 1.0)):
        np.testing.assert_array_less(np.abs(mean - MU), MEAN_BIAS)
        np.testing.assert_array_less(np.abs(np.sqrt(var) / SD - 1), STD_BIAS)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_ddpm_matches_gaussian_oracle(schedule, objective):
    samples = jaxdiff.ddpm_sample(oracle_model(objective), schedule, key=jax.random.key(0),
                                  shape=(N, 2), objective=objective, clip_x0=False)
    assert_moments(samples, *ddpm_moments())
    assert_close_to_data(samples)


def test_ddpm_fixed_large_has_its_own_moments(schedule):
    samples = jaxdiff.ddpm_sample(oracle_model("pred_x0"), schedule, key=jax.random.key(1),
                                  shape=(N, 2), objective="pred_x0", clip_x0=False,
                                  variance="fixed_large")
    mean, var = ddpm_moments("fixed_large")
    assert_moments(samples, mean, var)
    assert (var > ddpm_moments("fixed_small")[1]).all()


def test_ddim_eta0_all_steps_matches_oracle_and_is_deterministic(schedule):
    model = oracle_model("pred_noise")
    x_T = jax.random.normal(jax.random.key(5), (N, 2))
    a = jaxdiff.ddim_sample(model, schedule, key=jax.random.key(0), shape=(N, 2), num_steps=T,
                            eta=0.0, clip_x0=False, x_T=x_T)
    b = jaxdiff.ddim_sample(model, schedule, key=jax.random.key(1), shape=(N, 2), num_steps=T,
                            eta=0.0, clip_x0=False, x_T=x_T)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert_moments(a, *ddim_moments(list(range(T - 1, -1, -1)), 0.0))
    assert_close_to_data(a)


@pytest.mark.parametrize("num_steps", [T, 20])
def test_stochastic_ddim_eta1(schedule, num_steps):
    model = oracle_model("pred_noise")
    times = [int(t) for t in np.linspace(-1, T - 1, num_steps + 1).astype(np.int64)[::-1][:-1]]
    samples = jaxdiff.ddim_sample(model, schedule, key=jax.random.key(2), shape=(N, 2),
                                  num_steps=num_steps, eta=1.0, clip_x0=False)
    mean, var = ddim_moments(times, 1.0)
    assert_moments(samples, mean, var)
    if num_steps == T:  # eta = 1 over all steps is ancestral DDPM with the posterior variance
        np.testing.assert_allclose(var, ddpm_moments()[1], rtol=1e-9)
    else:  # with few steps eta changes the distribution, as predicted
        assert np.abs(var - ddim_moments(times, 0.0)[1]).max() > 10 * np.sqrt(2 / N) * var.max()


def test_stochastic_ddim_adds_exactly_its_sigma_noise(schedule):
    """Same x_T, two keys: the outputs differ by the propagated noise only. With the oracle the
    map from x_T is affine, so Var(out_1 - out_2) = 2 * (v_eta1 - A_total^2 * 1) where
    A_total^2 = the eta = 1 variance propagated from a deterministic start (v0 = 0)."""
    model = oracle_model("pred_noise")
    num_steps = 20
    times = [int(t) for t in np.linspace(-1, T - 1, num_steps + 1).astype(np.int64)[::-1][:-1]]
    x_T = jax.random.normal(jax.random.key(9), (N, 2))
    run = functools.partial(jaxdiff.ddim_sample, model, schedule, shape=(N, 2),
                            num_steps=num_steps, eta=1.0, clip_x0=False, x_T=x_T)
    difference = np.asarray(run(key=jax.random.key(3))) - np.asarray(run(key=jax.random.key(4)))
    _, abar = linear_alphas_cumprod(T)
    noise_var = np.zeros(2)  # variance added by sigma z alone, propagated to the output
    for i, t in enumerate(times):
        a_next = abar[times[i + 1]] if i + 1 < len(times) else 1.0
        gain = np.sqrt(abar[t]) * SD**2 / (abar[t] * SD**2 + 1 - abar[t])
        sigma = np.sqrt((1 - a_next) / (1 - abar[t]) * (1 - abar[t] / a_next))
        c = np.sqrt(1 - a_next - sigma**2)
        A = np.sqrt(a_next) * gain + c * (1 - np.sqrt(abar[t]) * gain) / np.sqrt(1 - abar[t])
        noise_var = A**2 * noise_var + sigma**2
    expected = 2 * noise_var
    se = expected * np.sqrt(2 / N)
    np.testing.assert_array_less(np.abs(difference.var(0) - expected), 5 * se)
    assert (expected > 0.01).all()


@pytest.mark.parametrize("objective", ["pred_x0", "pred_v"])
def test_objectives_give_the_same_samples(schedule, objective):
    x_T = jax.random.normal(jax.random.key(7), (1000, 2))
    kwargs = dict(key=jax.random.key(0), shape=(1000, 2), num_steps=50, clip_x0=False, x_T=x_T)
    reference = jaxdiff.ddim_sample(oracle_model("pred_noise"), schedule, **kwargs)
    other = jaxdiff.ddim_sample(oracle_model(objective), schedule, objective=objective, **kwargs)
    np.testing.assert_allclose(np.asarray(other), np.asarray(reference), atol=2e-4)
