"""DDIM inversion and slerp, against the exact Gaussian denoiser of test_ode_samplers and closed
forms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff

from test_ode_samplers import T, exact_eps_model


@pytest.fixture(scope="module")
def sched():
    return jaxdiff.make_schedule("linear", timesteps=T)


def test_inversion_then_ddim_reconstructs_with_first_order_error(sched):
    """With the exact denoiser, DDIM (eta = 0) discretises the probability-flow ODE and the
    inversion its reverse; the round trip returns x0 up to a discretisation error that falls
    like 1 / steps (measured: 8.1e-2 at 50 steps, 2.0e-2 at 200)."""
    model_fn = functools.partial(exact_eps_model, sched)
    x0 = 0.3 + 0.5 * jax.random.normal(jax.random.key(0), (128, 2))
    errors = []
    for num_steps in (50, 200):
        x_T = jaxdiff.ddim_invert(model_fn, sched, x0, num_steps=num_steps)
        assert abs(float(jnp.std(x_T)) - 1.0) < 0.15  # it lands on (roughly) unit noise
        back = jaxdiff.ddim_sample(model_fn, sched, key=jax.random.key(1), shape=x0.shape,
                                   num_steps=num_steps, eta=0.0, clip_x0=False, x_T=x_T)
        errors.append(float(jnp.max(jnp.abs(back - x0))))
    assert errors[0] < 0.12 and errors[1] < 0.03
    assert errors[0] / errors[1] > 3.0  # 4x the steps: ~4x smaller


def test_inversion_trajectory_and_errors(sched):
    model_fn = functools.partial(exact_eps_model, sched)
    x0 = jnp.zeros((4, 2))
    x_T, trajectory = jaxdiff.ddim_invert(model_fn, sched, x0, num_steps=10,
                                          return_trajectory=True)
    assert trajectory.shape == (11, 4, 2)
    np.testing.assert_array_equal(trajectory[0], x0)
    np.testing.assert_array_equal(trajectory[-1], x_T)
    with pytest.raises(ValueError, match="num_steps=0"):
        jaxdiff.ddim_invert(model_fn, sched, x0, num_steps=0)
    with pytest.raises(ValueError, match="output of shape"):
        jaxdiff.ddim_invert(lambda x, t: x[:, :1], sched, x0)


def test_slerp_closed_forms():
    x0 = jnp.array([[1.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    x1 = jnp.array([[0.0, 1.0], [0.0, 2.0], [2.0, 2.0]])  # the last pair is parallel
    np.testing.assert_allclose(jaxdiff.slerp(x0, x1, 0.0), x0, atol=1e-6)
    np.testing.assert_allclose(jaxdiff.slerp(x0, x1, 1.0), x1, atol=1e-6)
    half = jaxdiff.slerp(x0, x1, 0.5)
    # orthogonal equal norms: the midpoint on the circle, norm kept
    np.testing.assert_allclose(half[0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    np.testing.assert_allclose(half[1], [np.sqrt(2.0), np.sqrt(2.0)], atol=1e-6)
    np.testing.assert_allclose(half[2], [1.5, 1.5], atol=1e-6)  # parallel: the straight line
    per_example = jaxdiff.slerp(x0, x1, jnp.array([0.0, 1.0, 0.5]))
    np.testing.assert_allclose(per_example, [x0[0], x1[1], half[2]], atol=1e-6)
    with pytest.raises(ValueError, match="equal shapes"):
        jaxdiff.slerp(x0, x1[:2], 0.5)


# --- SDEdit and inpainting ------------------------------------------------------------------------
#
# Data x0 ~ N(MU, C^2) per coordinate. With x_t = a x0 + b z (a = sqrt(abar_t), b^2 = 1 - abar_t):
#   p(x0 | x_t) = N(MU + k (x_t - a MU), w),
#   k = a C^2 / (a^2 C^2 + b^2),  w = C^2 b^2 / (a^2 C^2 + b^2),
# so SDEdit from a fixed x_start, x_t ~ q(x_t | x_start), then the exact reverse process gives
#   N(MU + k a (x_start - MU), w + k^2 b^2),
# and the probability-flow ODE maps x_t to MU + (x_t / a - MU) C / sqrt(C^2 + sigma_t^2),
# sigma_t = b / a (the standardised value is constant along it).

MU, C = 0.3, 0.5


def gaussian_eps_model(s):
    """The exact eps prediction for N(MU, C^2) data, at integer or real t (log-sigma
    interpolation of the schedule's table, the samplers' convention)."""
    alphas_cumprod = np.asarray(s.alphas_cumprod, np.float64)
    log_sigmas = np.log(np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)).astype(np.float32)

    def model_fn(x_t, t):
        table_times = jnp.arange(len(log_sigmas), dtype=jnp.float32)
        log_sigma = jnp.interp(t.astype(jnp.float32), table_times, log_sigmas)
        sigma = jnp.exp(log_sigma).reshape((-1,) + (1,) * (x_t.ndim - 1))
        x_ve = x_t * jnp.sqrt(1.0 + sigma**2)
        x0 = MU + C**2 / (C**2 + sigma**2) * (x_ve - MU)
        return (x_ve - x0) / sigma

    return model_fn


def sdedit_law(abar, x_start):
    a, b2 = np.sqrt(abar), 1.0 - abar
    k, w = a * C**2 / (abar * C**2 + b2), C**2 * b2 / (abar * C**2 + b2)
    return MU + k * a * (np.asarray(x_start, np.float64) - MU), w + k**2 * b2


@pytest.fixture(scope="module")
def sched1000():
    return jaxdiff.make_schedule("linear", timesteps=1000)


def test_sdedit_ddpm_has_the_moments_of_the_exact_reverse_process(sched1000):
    """fixed_large: the exact law within 4 standard errors (its variance is 0.3% above it at
    T = 1000, far inside the 1% standard error). fixed_small: the sampler's own law (the oracle
    propagation of tests/oracles.py), whose variance is 1.6% low: the known bias of the fixed
    small variance (Bao et al. 2022), not an SDEdit error."""
    import oracles

    t_start, n = 300, 20000
    x_start = jnp.array([-1.0, 1.2])  # broadcast to every example
    model_fn = gaussian_eps_model(sched1000)
    abar = float(np.asarray(oracles.alphas_cumprod("linear", 1000))[t_start])
    mean, var = sdedit_law(abar, x_start)
    for variance in ("fixed_large", "fixed_small"):
        out = np.asarray(jaxdiff.ddpm_sample(
            model_fn, sched1000, key=jax.random.key(3), shape=(n, 2), clip_x0=False,
            variance=variance, x_start=x_start, t_start=t_start), np.float64)
        if variance == "fixed_small":
            steps = oracles.ddpm_steps(variance, np.full(2, MU), np.full(2, C), 1000)[-t_start - 1:]
            mean, var = oracles.propagate(steps, np.sqrt(abar) * np.asarray(x_start), 1.0 - abar)
            assert np.all(var < sdedit_law(abar, x_start)[1])
        np.testing.assert_array_less(np.abs(out.mean(0) - mean), 4 * np.sqrt(var / n))
        np.testing.assert_array_less(np.abs(out.var(0) - var), 4 * var * np.sqrt(2.0 / n))


@pytest.mark.parametrize("sampler,tolerance", [
    ("ddim", 0.025), ("dpm_solver", 2e-3), ("karras", 2e-3)])
def test_sdedit_ode_samplers_follow_the_exact_ode_from_the_noised_start(sched1000, sampler,
                                                                        tolerance):
    """Deterministic samplers map q_sample(x_start, t_start, x_T) to the PF-ODE end point, per
    sample. Max errors measured over 256 x 2 values: DDIM (first order) 0.089, 0.036, 0.018 at
    20, 50, 100 steps; DPM-Solver++ 2M 9.1e-4 at 20 steps; Heun 1.1e-3 at 50 steps. Below
    ~5e-4 the last step's jump to the x0 prediction dominates (module docstring of
    jaxdiff.ode_samplers)."""
    t_start = 400
    x_start = jax.random.normal(jax.random.key(0), (256, 2))
    x_T = jax.random.normal(jax.random.key(1), (256, 2))
    model_fn = gaussian_eps_model(sched1000)
    common = dict(key=jax.random.key(2), shape=(256, 2), clip_x0=False, x_T=x_T, x_start=x_start,
                  t_start=t_start)
    if sampler == "ddim":
        out = jaxdiff.ddim_sample(model_fn, sched1000, num_steps=100, eta=0.0, **common)
    elif sampler == "dpm_solver":
        out = jaxdiff.dpm_solver_sample(model_fn, sched1000, num_steps=20, order=2, **common)
    else:
        out = jaxdiff.karras_sample(model_fn, sched1000, num_steps=50, solver="heun", **common)
    abar = float(np.asarray(sched1000.alphas_cumprod, np.float64)[t_start])
    sigma = np.sqrt((1.0 - abar) / abar)
    x_ve = np.asarray(x_start, np.float64) + sigma * np.asarray(x_T, np.float64)
    expected = MU + (x_ve - MU) * C / np.sqrt(C**2 + sigma**2)
    error = float(np.max(np.abs(np.asarray(out, np.float64) - expected)))
    assert error < tolerance, error


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm_solver", "karras"])
def test_sdedit_starts_at_q_sample_and_takes_the_steps_below_t_start(sched, sampler):
    t_start, shape = 60, (4, 2)
    x_start = jnp.linspace(-1.0, 1.0, 8).reshape(shape)
    x_T = jax.random.normal(jax.random.key(1), shape)
    model_fn = functools.partial(exact_eps_model, sched)
    reports = []
    common = dict(key=jax.random.key(0), shape=shape, clip_x0=False, x_T=x_T, x_start=x_start,
                  t_start=t_start, return_trajectory=True,
                  progress=lambda done, total: reports.append((done, total)))
    calls = {"ddpm": jaxdiff.ddpm_sample,
             "ddim": functools.partial(jaxdiff.ddim_sample, num_steps=10),
             "dpm_solver": functools.partial(jaxdiff.dpm_solver_sample, num_steps=10),
             "karras": functools.partial(jaxdiff.karras_sample, num_steps=10)}
    _, trajectory = calls[sampler](model_fn, sched, **common)
    steps = t_start + 1 if sampler == "ddpm" else 10
    assert trajectory.shape == (steps + 1, *shape) and reports[-1] == (steps, steps)
    abar = float(np.asarray(sched.alphas_cumprod, np.float64)[t_start])
    np.testing.assert_allclose(trajectory[0], np.sqrt(abar) * x_start + np.sqrt(1 - abar) * x_T,
                               rtol=1e-6, atol=1e-6)


def test_inpainting_keeps_known_values_exactly_and_leaves_independent_coordinates_alone(sched):
    """The exact model treats coordinates independently, so the unknown coordinate must come out
    bit for bit as in plain sampling with the same key (the same noise reaches it)."""
    model_fn = functools.partial(exact_eps_model, sched)
    shape = (64, 2)
    known = jnp.stack([jnp.linspace(-2.0, 2.0, 64), jnp.full(64, 99.0)], axis=1)
    mask = jnp.array([1.0, 0.0])
    for sample in (functools.partial(jaxdiff.ddpm_sample, clip_x0=False),
                   functools.partial(jaxdiff.ddim_sample, num_steps=20, eta=0.5, clip_x0=False),
                   functools.partial(jaxdiff.ddim_sample, num_steps=20, eta=0.0, clip_x0=False)):
        plain = sample(model_fn, sched, key=jax.random.key(5), shape=shape)
        out = sample(model_fn, sched, key=jax.random.key(5), shape=shape, known=known, mask=mask)
        np.testing.assert_array_equal(out[:, 0], known[:, 0])
        np.testing.assert_array_equal(out[:, 1], plain[:, 1])


def test_ddpm_timesteps_follow_repaint_schedule():
    from jaxdiff.samplers import ddpm_timesteps

    plain = ddpm_timesteps(6)
    np.testing.assert_array_equal(plain, [[5, 4], [4, 3], [3, 2], [2, 1], [1, 0], [0, -1]])
    np.testing.assert_array_equal(ddpm_timesteps(1000, t_start=2), [[2, 1], [1, 0], [0, -1]])
    # r = 3, jump 2 over t = 5..0: jumps back up from t = 2 and t = 0, twice each
    moves = ddpm_timesteps(6, resamples=3, jump_length=2)
    down = [(5, 4), (4, 3), (3, 2)]
    from_2 = [(2, 4), (4, 3), (3, 2)]
    from_0 = [(0, 2), (2, 1), (1, 0)]
    expected = down + from_2 + from_2 + [(2, 1), (1, 0)] + from_0 + from_0 + [(0, -1)]
    np.testing.assert_array_equal(moves, expected)


def test_repaint_resampling_approaches_the_exact_conditional():
    """Correlated 2-D Gaussian data (correlation 0.9), the first coordinate known: the exact
    conditional of the second is N(0.25, 0.0475). Plain replacement is far off (mean 0.11:
    its known part does not inform the unknown one enough, a known weakness), and RePaint's
    resampling moves it towards the exact law as r grows (measured, T = 100, jump 1: mean error
    0.14, 0.038, 0.013 for r = 1, 4, 16; variance error 0.037, 0.010, 0.004)."""
    s = jaxdiff.make_schedule("linear", timesteps=100)
    mu, sd, rho = jnp.array([[0.3, -0.2]]), 0.5, 0.9
    alphas_cumprod = jnp.asarray(s.alphas_cumprod)

    def model_fn(x, t):  # exact eps; Sigma's eigenvectors are (1, 1) and (1, -1)
        abar = alphas_cumprod[t][:, None]
        a = jnp.sqrt(abar)
        lam = sd**2 * jnp.array([[1 + rho, 1 - rho]])
        gain = a * lam / (abar * lam + 1.0 - abar)  # [B, 2] per eigen-direction
        d = x - a * mu
        along = jnp.stack([d[:, 0] + d[:, 1], d[:, 0] - d[:, 1]], axis=1) / 2 * gain
        x0 = mu + jnp.stack([along[:, 0] + along[:, 1], along[:, 0] - along[:, 1]], axis=1)
        return (x - a * x0) / jnp.sqrt(1.0 - abar)

    n, known_value = 8000, 0.8
    mean, var = -0.2 + rho * (known_value - 0.3), sd**2 * (1 - rho**2)
    errors = []
    for resamples in (1, 4, 16):
        out = np.asarray(jaxdiff.ddpm_sample(
            model_fn, s, key=jax.random.key(0), shape=(n, 2), clip_x0=False,
            variance="fixed_large", known=jnp.array([known_value, 0.0]),
            mask=jnp.array([1.0, 0.0]), resamples=resamples, jump_length=1), np.float64)
        assert np.all(out[:, 0] == np.float32(known_value))
        errors.append((abs(out[:, 1].mean() - mean), abs(out[:, 1].var() - var)))
    print("RePaint |mean error|, |var error| for r = 1, 4, 16:", errors)
    assert errors[0][0] > 0.1  # plain replacement is biased
    assert errors[0][0] > errors[1][0] > errors[2][0] and errors[0][1] > errors[2][1]
    assert errors[2][0] < 0.025 and errors[2][1] < 0.008


def test_editing_bad_input_names_the_argument(sched):
    model_fn = functools.partial(exact_eps_model, sched)
    common = dict(key=jax.random.key(0), shape=(2, 2))
    x = jnp.zeros((2, 2))
    cases = [
        (jaxdiff.ddpm_sample, dict(t_start=10), "t_start is missing|x_start is missing"),
        (jaxdiff.ddim_sample, dict(x_start=x), "t_start is missing"),
        (jaxdiff.ddpm_sample, dict(x_start=x, t_start=T), f"t_start={T} must be an integer in"),
        (jaxdiff.dpm_solver_sample, dict(x_start=x, t_start=-1), "t_start=-1"),
        (jaxdiff.karras_sample, dict(x_start=x, t_start=2.5), "t_start=2.5"),
        (jaxdiff.ddim_sample, dict(x_start=jnp.zeros((3, 2)), t_start=5), "x_start has shape"),
        (jaxdiff.ddim_sample, dict(x_start=x, t_start=5, num_steps=7), r"num_steps=7 must be <="),
        (jaxdiff.dpm_solver_sample, dict(x_start=x, t_start=5, num_steps=20), "num_steps=20"),
        (jaxdiff.ddpm_sample, dict(known=x), "mask is missing"),
        (jaxdiff.ddim_sample, dict(mask=x), "known is missing"),
        (jaxdiff.ddpm_sample, dict(known=x, mask=jnp.ones(3)), r"mask has shape \(3,\)"),
        (jaxdiff.ddpm_sample, dict(known=x, mask=2 * jnp.ones(2)), "mask values must be in"),
        (jaxdiff.ddpm_sample, dict(known=x, mask=x, resamples=0), "resamples must be"),
        (jaxdiff.ddpm_sample, dict(resamples=3), "give known and mask"),
        (jaxdiff.ddpm_sample, dict(known=x, mask=x, resamples=2, jump_length=0), "jump_length"),
    ]
    for sample, kwargs, needle in cases:
        with pytest.raises(ValueError, match=needle):
            sample(model_fn, sched, **common, **kwargs)
