"""jaxdiff.likelihood against closed forms (NumPy float64).

Gaussian data x0 ~ N(MU, C^2) per coordinate and its exact denoiser (tests/test_editing.py):
- the probability-flow ODE is affine: the standardised value (x_t - a_t MU) / s_t,
  s_t^2 = a_t^2 C^2 + 1 - a_t^2, is constant along it, so with the prior N(0, I) at T - 1
  log p(x) = log N(phi(x); 0, I) + D log(s_{T-1} / s_0),
  phi(x) = a_{T-1} MU + (x - a_0 MU) s_{T-1} / s_0;
- every VLB term is a KL between Gaussians with equal variances whose expectation over x_t is
  analytic: for fixed x0, x_t ~ N(a x0, b^2) and the exact x0_hat = MU + k (x_t - a MU),
  E[(x0 - x0_hat)^2] = ((1 - k a)(x0 - MU))^2 + k^2 b^2, k = a C^2 / (a^2 C^2 + b^2).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff.gaussians import discretized_gaussian_log_likelihood, normal_kl
from jaxdiff.likelihood import bits_per_dim, dequantize, ode_log_likelihood, vlb

import oracles
from test_editing import C, MU, gaussian_eps_model

T = 1000


@pytest.fixture(scope="module")
def sched():
    return jaxdiff.make_schedule("linear", timesteps=T)


def _tables():
    table = oracles.schedule("linear", T)
    return table, table["alphas_cumprod"]


def test_ode_log_likelihood_equals_the_closed_form_and_the_data_density(sched):
    x = jnp.array([[0.1, 0.6], [-0.5, 1.0], [0.3, 0.3], [1.4, -0.9]])
    log_p, steps = ode_log_likelihood(gaussian_eps_model(sched), sched, x, key=jax.random.key(0),
                                      return_steps=True)
    _, abar = _tables()
    a0, a_end = np.sqrt(abar[0]), np.sqrt(abar[-1])
    s0, s_end = np.sqrt(abar[0] * C**2 + 1 - abar[0]), np.sqrt(abar[-1] * C**2 + 1 - abar[-1])
    xx = np.asarray(x, np.float64)
    phi = a_end * MU + (xx - a0 * MU) * s_end / s0
    closed = np.sum(-0.5 * (np.log(2 * np.pi) + phi**2), axis=1) + 2 * np.log(s_end / s0)
    np.testing.assert_allclose(log_p, closed, atol=1e-4)  # measured 2e-6
    data = np.sum(-0.5 * (np.log(2 * np.pi * C**2) + (xx - MU) ** 2 / C**2), axis=1)
    assert np.max(np.abs(np.asarray(log_p) - data)) / 2 < 0.02  # nats per dimension
    assert steps < 100  # adaptive: measured 22 accepted steps


def _correlated_eps_model(s, rho=0.8, sd=0.5):
    """Exact eps for N(0, sd^2 [[1, rho], [rho, 1]]): a Jacobian with off-diagonal terms."""
    alphas_cumprod = np.asarray(s.alphas_cumprod, np.float64)
    log_sigmas = np.log(np.sqrt((1 - alphas_cumprod) / alphas_cumprod)).astype(np.float32)

    def model_fn(x, t):
        sigma = jnp.exp(jnp.interp(t.astype(jnp.float32),
                                   jnp.arange(len(log_sigmas), dtype=jnp.float32), log_sigmas))
        abar = (1.0 / (1.0 + sigma**2))[:, None]
        lam = sd**2 * jnp.array([[1 + rho, 1 - rho]])
        gain = jnp.sqrt(abar) * lam / (abar * lam + 1 - abar)
        u = jnp.stack([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1]], axis=1) / 2 * gain
        x0 = jnp.stack([u[:, 0] + u[:, 1], u[:, 0] - u[:, 1]], axis=1)
        return (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)

    return model_fn


def test_hutchinson_is_unbiased(sched):
    """The mean of 24 single-probe estimates is within 3 standard errors of the exact trace's
    log-likelihood (a non-diagonal Jacobian: one probe is not exact)."""
    model_fn = _correlated_eps_model(sched)
    x = jnp.array([[0.4, -0.3], [0.2, 0.5]])
    exact = np.asarray(ode_log_likelihood(model_fn, sched, x, key=jax.random.key(0)))
    estimates = np.stack([np.asarray(ode_log_likelihood(
        model_fn, sched, x, key=jax.random.key(i), trace="hutchinson")) for i in range(24)])
    spread = estimates.std(axis=0)
    assert np.all(spread > 1e-3)  # the estimator is really stochastic here
    np.testing.assert_array_less(np.abs(estimates.mean(axis=0) - exact),
                                 3 * spread / np.sqrt(len(estimates)))
    four = ode_log_likelihood(model_fn, sched, x, key=jax.random.key(99), trace="hutchinson",
                              num_probes=4)
    assert np.all(np.isfinite(four))


def _expected_vlb(x0, variance):
    """E over x_t of every VLB term for one x0 (float64), with the exact denoiser."""
    table, abar = _tables()
    x0 = np.asarray(x0, np.float64)
    betas, post = table["betas"], table["posterior_variance"]
    log_var = np.log(np.append(post[1], post[1:])) if variance == "fixed_small" else np.log(
        np.append(post[1], betas[1:]))
    terms = []
    for t in range(T):
        a, b2 = np.sqrt(abar[t]), 1 - abar[t]
        k = a * C**2 / (abar[t] * C**2 + b2)
        err2 = ((1 - k * a) * (x0 - MU)) ** 2 + k**2 * b2  # E (x0 - x0_hat)^2
        c1 = table["posterior_mean_coef1"][t]
        if t == 0:  # -log N(x0; x0_hat, exp(log_var[0])): the posterior mean at 0 is x0_hat
            terms.append(np.sum(0.5 * (np.log(2 * np.pi) + log_var[0] + err2 / np.exp(log_var[0]))))
        else:
            true_log_var = np.log(post[t])
            terms.append(np.sum(0.5 * (log_var[t] - true_log_var
                                       + np.exp(true_log_var - log_var[t])
                                       + c1**2 * err2 / np.exp(log_var[t]) - 1)))
    prior = np.sum(0.5 * (-np.log(1 - abar[-1]) + (1 - abar[-1]) + abar[-1] * x0**2 - 1))
    return prior, np.array(terms)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_vlb_expectation_matches_its_closed_form(sched, variance):
    x0 = np.array([0.1, 0.6], np.float32)
    n = 2000
    out = vlb(gaussian_eps_model(sched), sched, jnp.tile(x0, (n, 1)), key=jax.random.key(1),
              variance=variance)
    total, prior, terms = (np.asarray(out[k], np.float64) for k in ("total", "prior", "terms"))
    assert terms.shape == (n, T)
    np.testing.assert_allclose(total, prior + terms.sum(axis=1), rtol=1e-5, atol=1e-4)
    expected_prior, expected_terms = _expected_vlb(x0, variance)
    np.testing.assert_allclose(prior, expected_prior, rtol=1e-3, atol=1e-6)
    standard_error = total.std() / np.sqrt(n)
    assert abs(total.mean() - (expected_prior + expected_terms.sum())) < 3 * standard_error
    # the decoder and the first KL terms each within 4 of their standard errors
    for t in (0, 1, 10):
        error = terms[:, t].std() / np.sqrt(n)
        assert abs(terms[:, t].mean() - expected_terms[t]) < 4 * error + 1e-6, t


def test_discretized_decoder_is_a_distribution_over_the_256_levels():
    levels = jnp.arange(256, dtype=jnp.float32) / 127.5 - 1.0
    for mean, log_scale in ((0.0, -2.0), (0.93, -4.0), (-1.2, 0.5), (0.2, -6.0)):
        log_p = discretized_gaussian_log_likelihood(levels, mean, log_scale)
        np.testing.assert_allclose(np.exp(np.asarray(log_p, np.float64)).sum(), 1.0, atol=2e-5)


def test_normal_kl_closed_form():
    kl = normal_kl(0.3, np.log(0.5), -0.2, np.log(2.0))
    expected = np.log(np.sqrt(2.0) / np.sqrt(0.5)) + (0.5 + 0.25) / (2 * 2.0) - 0.5
    np.testing.assert_allclose(kl, expected, rtol=1e-6)


def test_bits_per_dim_and_dequantisation():
    np.testing.assert_allclose(bits_per_dim(64 * np.log(2.0) * 3.0, 64), 3.0, rtol=1e-6)
    # a density that is uniform within each bin gives back -log P(u) exactly
    np.testing.assert_allclose(bits_per_dim(-64 * np.log(255 / 2.0), 64, dequantized=True),
                               0.0, atol=1e-6)
    u = np.array([[0, 1, 128, 255]], np.uint8)
    x = np.asarray(dequantize(jax.random.key(0), u))
    levels = u / 127.5 - 1
    assert np.all(np.abs(x - levels) <= 1 / 255 + 1e-7)


def test_bad_input_names_the_argument(sched):
    model_fn = gaussian_eps_model(sched)
    x = jnp.zeros((2, 2))
    common = dict(key=jax.random.key(0))
    with pytest.raises(ValueError, match="decoder='bernoulli'"):
        vlb(model_fn, sched, x, decoder="bernoulli", **common)
    with pytest.raises(ValueError, match="needs x0 in"):
        vlb(model_fn, sched, x + 3.0, decoder="discretized", **common)
    with pytest.raises(ValueError, match="needs a learned-variance model"):
        vlb(model_fn, sched, x, variance="learned_range", **common)
    with pytest.raises(ValueError, match="learned_range"):
        vlb(lambda x_t, t: jnp.concatenate([x_t, x_t], -1), sched, x, **common)
    with pytest.raises(ValueError, match="variance='fixed_medium'"):
        vlb(model_fn, sched, x, variance="fixed_medium", **common)
    with pytest.raises(ValueError, match="trace='approximate'"):
        ode_log_likelihood(model_fn, sched, x, trace="approximate", **common)
    with pytest.raises(ValueError, match="num_probes"):
        ode_log_likelihood(model_fn, sched, x, trace="hutchinson", num_probes=0, **common)
