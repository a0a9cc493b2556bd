"""DPM-Solver++ and the Karras (EDM) samplers against closed forms.

For Gaussian data x0 ~ N(mu, c^2) per coordinate the denoiser is exact and linear,
D(x_VE, sigma) = mu + c^2 / (c^2 + sigma^2) (x_VE - mu), and the probability-flow ODE maps its
start x_VE(sigma_max) to x0 = mu + (x_VE - mu) c / sqrt(c^2 + sigma_max^2) (the standardised
value (x - mu) / sqrt(c^2 + sigma^2) is constant along the ODE). Everything here is NumPy float64
or follows from these two lines.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import ode_samplers
from jaxdiff.ode_samplers import (dpm_solver_orders, dpm_solver_sample, dpm_solver_timesteps,
                                  karras_sample, karras_sigmas)

MU, C = 0.3, 0.5
T = 200


@pytest.fixture(scope="module")
def sched():
    return jaxdiff.make_schedule("linear", timesteps=T)


def _sigmas(s):
    """sigma(t) = sqrt((1 - abar) / abar) in float64, from the schedule's abar table."""
    alphas_cumprod = np.asarray(s.alphas_cumprod, np.float64)
    return np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)


def exact_eps_model(s, x_t, t):
    """The exact eps prediction for N(MU, C^2) data at (possibly real-valued) t, with sigma(t)
    interpolated in log sigma between the table's integers (the samplers' convention)."""
    log_sigmas = np.log(_sigmas(s)).astype(np.float32)
    log_sigma = jnp.interp(t.astype(jnp.float32), jnp.arange(T, dtype=jnp.float32), log_sigmas)
    sigma = jnp.exp(log_sigma)[:, None]
    alpha = 1.0 / jnp.sqrt(1.0 + sigma**2)
    x_ve = x_t / alpha
    x0 = MU + C**2 / (C**2 + sigma**2) * (x_ve - MU)
    return (x_ve - x0) / sigma  # eps = (x_VE - x0) / sigma_VE


def exact_endpoint(s, x_T):
    sigma_max = _sigmas(s)[-1]
    x_ve = np.asarray(x_T, np.float64) * np.sqrt(1.0 + sigma_max**2)
    return MU + (x_ve - MU) * C / np.sqrt(C**2 + sigma_max**2)


def test_timesteps_follow_diffusers_definitions():
    np.testing.assert_array_equal(dpm_solver_timesteps(1000, 5, "linspace"),
                                  [999, 799, 599, 400, 200])
    np.testing.assert_array_equal(dpm_solver_timesteps(1000, 4, "leading"), [800, 600, 400, 200])
    np.testing.assert_array_equal(dpm_solver_timesteps(1000, 4, "trailing"), [999, 749, 499, 249])
    np.testing.assert_array_equal(dpm_solver_orders(6, 3, True), [1, 2, 3, 3, 2, 1])
    np.testing.assert_array_equal(dpm_solver_orders(20, 3, True)[-3:], [3, 3, 1])
    np.testing.assert_array_equal(dpm_solver_orders(20, 3, False)[-3:], [3, 3, 1])


def test_karras_sigmas_eq_5():
    sigmas = karras_sigmas(0.002, 80.0, 3, rho=7.0)
    middle = ((80.0 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    np.testing.assert_allclose(sigmas, [80.0, middle, 0.002, 0.0], rtol=1e-6)  # float32


def test_first_order_dpm_solver_is_ddim_with_eta_zero(sched):
    """Same times (trailing, T divisible by the step count) and the same final jump to x0."""
    model_fn = functools.partial(exact_eps_model, sched)
    x_T = jax.random.normal(jax.random.key(0), (64, 2))
    dpm = dpm_solver_sample(model_fn, sched, key=jax.random.key(1), shape=(64, 2), num_steps=10,
                            order=1, timestep_spacing="trailing", x_T=x_T)
    ddim = jaxdiff.ddim_sample(model_fn, sched, key=jax.random.key(1), shape=(64, 2),
                               num_steps=10, eta=0.0, clip_x0=False, timestep_spacing="trailing",
                               x_T=x_T)
    np.testing.assert_allclose(dpm, ddim, atol=2e-5)


def _error(sample, s, x_T):
    return float(np.max(np.abs(np.asarray(sample, np.float64) - exact_endpoint(s, x_T))))


def _exact_vp(s, x_T, sigma):
    """The exact ODE solution at noise level sigma, in VP space."""
    sigmas = _sigmas(s)
    x_ve = np.asarray(x_T, np.float64) * np.sqrt(1.0 + sigmas[-1] ** 2)
    x_ve = MU + (x_ve - MU) * np.sqrt(C**2 + sigma**2) / np.sqrt(C**2 + sigmas[-1] ** 2)
    return x_ve / np.sqrt(1.0 + sigma**2)


def _halfway_error(s, x_T, order, num_steps):
    """Error of the state halfway through the loop (before the last step's jump to the x0
    prediction, which dominates the end-point error)."""
    model_fn = functools.partial(exact_eps_model, s)
    _, trajectory = dpm_solver_sample(model_fn, s, key=jax.random.key(0), shape=x_T.shape,
                                      num_steps=num_steps, order=order, x_T=x_T,
                                      return_trajectory=True)
    k = num_steps // 2
    time = dpm_solver_timesteps(T, num_steps, "linspace")[k]
    sigma = _sigmas(s)[time]
    return float(np.max(np.abs(np.asarray(trajectory[k], np.float64) - _exact_vp(s, x_T, sigma))))


@pytest.mark.parametrize("order,rate", [(1, 1.8), (2, 3.3), (3, 4.2)])
def test_dpm_solver_converges_at_its_order(sched, order, rate):
    """Halving the step doubles the accuracy per order (measured: 1.99, 3.74, 5.07 for
    20 -> 40 steps; a variable-step multistep method of order 3 reaches 8 only asymptotically)."""
    x_T = jax.random.normal(jax.random.key(2), (256, 2))
    coarse, fine = _halfway_error(sched, x_T, order, 20), _halfway_error(sched, x_T, order, 40)
    assert coarse / fine > rate, (coarse, fine)


def test_dpm_solver_end_point(sched):
    model_fn = functools.partial(exact_eps_model, sched)
    x_T = jax.random.normal(jax.random.key(2), (256, 2))
    sample = dpm_solver_sample(model_fn, sched, key=jax.random.key(0), shape=(256, 2),
                               num_steps=100, order=2, x_T=x_T)
    assert _error(sample, sched, x_T) < 5e-3  # measured 3.0e-3


def test_higher_orders_are_more_accurate(sched):
    x_T = jax.random.normal(jax.random.key(3), (256, 2))
    errors = [_halfway_error(sched, x_T, order, 20) for order in (1, 2, 3)]
    assert errors[0] > 2 * errors[1] > 2 * errors[2] > 0
    model_fn = functools.partial(exact_eps_model, sched)
    karras = [_error(karras_sample(model_fn, sched, key=jax.random.key(0), shape=(256, 2),
                                   num_steps=50, solver=solver, x_T=x_T), sched, x_T)
              for solver in ("euler", "heun")]
    assert karras[0] > 5 * karras[1]  # measured 0.11 and 0.011


def _karras_halfway_error(s, x_T, solver, num_steps):
    model_fn = functools.partial(exact_eps_model, s)
    _, trajectory = karras_sample(model_fn, s, key=jax.random.key(0), shape=x_T.shape,
                                  num_steps=num_steps, solver=solver, x_T=x_T,
                                  return_trajectory=True)
    sigmas = _sigmas(s)
    k = num_steps // 2
    sigma = float(karras_sigmas(sigmas[0], sigmas[-1], num_steps)[k])
    return float(np.max(np.abs(np.asarray(trajectory[k], np.float64) - _exact_vp(s, x_T, sigma))))


@pytest.mark.parametrize("solver,rate", [("euler", 1.7), ("heun", 3.5)])
def test_karras_converges_at_its_order(sched, solver, rate):
    """Halfway along the trajectory (measured 20 -> 40 steps: Heun 5.9x, as a float64 reference
    integration of the same grid gives; a float32 rounding residual that leaked noise into the
    churn-free sampler once held it at 2e-3 from 40 steps on)."""
    x_T = jax.random.normal(jax.random.key(2), (256, 2))
    coarse = _karras_halfway_error(sched, x_T, solver, 20)
    fine = _karras_halfway_error(sched, x_T, solver, 40)
    assert coarse / fine > rate, (coarse, fine)


def test_karras_without_churn_is_deterministic(sched):
    model_fn = functools.partial(exact_eps_model, sched)
    x_T = jax.random.normal(jax.random.key(5), (64, 2))
    a, b = (karras_sample(model_fn, sched, key=jax.random.key(seed), shape=(64, 2), num_steps=10,
                          x_T=x_T) for seed in (0, 1))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_karras_heun_reaches_the_exact_endpoint_for_every_objective(sched, objective):
    def model_fn(x_t, t):
        eps = exact_eps_model(sched, x_t, t)
        if objective == "pred_noise":
            return eps
        log_sigmas = np.log(_sigmas(sched)).astype(np.float32)
        sigma = jnp.exp(jnp.interp(t, jnp.arange(T, dtype=jnp.float32), log_sigmas))[:, None]
        alpha, sigma_vp = 1.0 / jnp.sqrt(1.0 + sigma**2), sigma / jnp.sqrt(1.0 + sigma**2)
        x0 = (x_t - sigma_vp * eps) / alpha
        return x0 if objective == "pred_x0" else alpha * eps - sigma_vp * x0

    x_T = jax.random.normal(jax.random.key(4), (256, 2))
    sample = karras_sample(model_fn, sched, key=jax.random.key(0), shape=(256, 2), num_steps=100,
                           solver="heun", objective=objective, x_T=x_T)
    assert _error(sample, sched, x_T) < 3e-3  # measured 8.9e-4 (pred_noise)


def test_karras_churn_is_stochastic_and_keeps_the_distribution(sched):
    model_fn = functools.partial(exact_eps_model, sched)
    shape = (4096, 2)
    cache = ode_samplers._karras_loop._cache_size
    a = karras_sample(model_fn, sched, key=jax.random.key(0), shape=shape, num_steps=80,
                      churn=10.0)
    size = cache()
    b = karras_sample(model_fn, sched, key=jax.random.key(1), shape=shape, num_steps=80,
                      churn=20.0, rho=5.0)
    assert cache() == size  # churn and rho are traced
    assert not np.allclose(a, b)
    for sample in (a, b):  # N(MU, C^2): 4096 x 2 draws, 5 standard errors
        assert abs(float(np.mean(sample)) - MU) < 5 * C / np.sqrt(sample.size)
        assert abs(float(np.std(sample)) - C) < 5 * C / np.sqrt(2 * sample.size)


def test_models_accept_real_valued_t():
    """jaxdiff's models embed t sinusoidally: real t is accepted, and integer-valued real t gives
    the integer t's output."""
    from jaxdiff.models import MLPDenoiser, Unet

    for model, shape in ((MLPDenoiser(hidden=16, depth=1, time_dim=8), (3, 2)),
                         (Unet(dim=8, dim_mults=(1, 2), channels=1, resnet_block_groups=4),
                          (3, 8, 8, 1))):
        x = jax.random.normal(jax.random.key(0), shape)
        params = model.init(jax.random.key(1), x, jnp.zeros((3,), jnp.int32))
        # the U-Net's last layer starts at zero: perturb every weight so the output depends on t
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(2), len(leaves))
        params = jax.tree.unflatten(tree, [leaf + 0.1 * jax.random.normal(k, leaf.shape)
                                           for leaf, k in zip(leaves, keys)])
        whole = model.apply(params, x, jnp.array([0, 5, 9], jnp.int32))
        real = model.apply(params, x, jnp.array([0.0, 5.0, 9.0], jnp.float32))
        np.testing.assert_allclose(whole, real, atol=1e-6)
        between = model.apply(params, x, jnp.array([0.5, 5.25, 9.75], jnp.float32))
        assert np.all(np.isfinite(between)) and not np.allclose(between, whole)


def test_bad_arguments_name_themselves(sched):
    model_fn = functools.partial(exact_eps_model, sched)
    common = dict(key=jax.random.key(0), shape=(2, 2))
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        dpm_solver_sample(model_fn, sched, order=4, **common)
    with pytest.raises(ValueError, match="timestep_spacing='even'"):
        dpm_solver_sample(model_fn, sched, timestep_spacing="even", **common)
    with pytest.raises(ValueError, match="solver='rk4'"):
        karras_sample(model_fn, sched, solver="rk4", **common)
    with pytest.raises(ValueError, match="churn must be"):
        karras_sample(model_fn, sched, churn=-1.0, **common)
    with pytest.raises(ValueError, match="rho must be"):
        karras_sample(model_fn, sched, rho=0.0, **common)
    with pytest.raises(ValueError, match="num_steps=0"):
        karras_sample(model_fn, sched, num_steps=0, **common)
