"""DDPM and DDIM samplers against an analytic oracle, plus their mechanics.

Oracle (tests/oracles.py). For Gaussian data x0 ~ N(mu, s^2) (independently per dimension) the
exact denoiser is linear in x_t:
    E[x0 | x_t] = mu + g_t (x_t - sqrt(abar_t) mu),   g_t = sqrt(abar_t) s^2 / (abar_t s^2 + 1 - abar_t).
A model_fn returning that prediction (in any objective) makes every sampler step affine in x_t
plus Gaussian noise, x' = A x + B + sigma z, so the sampler's output is exactly Gaussian with
    m' = A m + B,   v' = A^2 v + sigma^2,   starting from x_T ~ N(0, 1),
propagated in float64 from the papers' formulas, independently of jaxdiff's code:
  DDPM  (Ho et al. 2020, eqs. 6-7 and algorithm 2) x_{t-1} = c1_t x0_hat + c2_t x_t + sigma_t z,
        sigma_t^2 = beta~_t ("fixed_small") or beta_t ("fixed_large"), no noise at t = 0.
  DDIM  (Song et al. 2021, eqs. 12 and 16) x_next = sqrt(abar_next) x0_hat + c eps_hat + sigma z,
        sigma = eta sqrt((1 - abar_next) / (1 - abar)) sqrt(1 - abar / abar_next),
        c = sqrt(1 - abar_next - sigma^2), abar_next = 1 after the last visited time.
"""

import functools
from fractions import Fraction

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import samplers

from oracles import OBJECTIVES, compose, ddim_steps, ddpm_steps, propagate, trailing_times

T = 1000
MU = np.array([0.3, -0.5])
SD = np.array([0.5, 0.2])
N = 100_000  # samples per moment check: 5 standard errors of the std = 1.1% of s

_ORACLES = {}


def oracle_model(objective, s, mu, sd):
    """The exact prediction of `objective` for data N(mu, sd^2) ([D] or [H, W, C]), in jnp, using
    the schedule tables as a trained model would. Memoised, so that tests sampling with the same
    oracle and shapes reuse one compiled sampler."""
    mu, sd = np.asarray(mu, np.float64), np.asarray(sd, np.float64)
    key = (objective, id(s), mu.tobytes(), sd.tobytes())
    if key not in _ORACLES:
        _ORACLES[key] = (s, _oracle_model(objective, s, mu, sd))  # holding s keeps id(s) unique
    return _ORACLES[key][1]


def _oracle_model(objective, s, mu, sd):
    mu = jnp.asarray(mu, jnp.float32)[None]
    var = jnp.asarray(sd, jnp.float32)[None] ** 2

    def model_fn(x_t, t):
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        a = jnp.asarray(s.sqrt_alphas_cumprod)[t].reshape(shape)
        b = jnp.asarray(s.sqrt_one_minus_alphas_cumprod)[t].reshape(shape)
        x0 = mu + a * var / (a**2 * var + b**2) * (x_t - a * mu)
        eps = (x_t - a * x0) / b
        return {"pred_x0": x0, "pred_noise": eps, "pred_v": a * eps - b * x0}[objective]

    return model_fn


def assert_moments(samples, mean, var, what):
    """Empirical mean and std within 5 standard errors of the exact ones (per dimension)."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    se_mean, se_std = np.sqrt(var / n), np.sqrt(var / (2 * n))
    err_mean = np.abs(samples.mean(0) - mean) / se_mean
    err_std = np.abs(samples.std(0) - np.sqrt(var)) / se_std
    assert (err_mean < 5).all() and (err_std < 5).all(), (
        f"{what}: mean {samples.mean(0)} vs {mean} ({err_mean} SE), "
        f"std {samples.std(0)} vs {np.sqrt(var)} ({err_std} SE)")


@pytest.fixture(scope="module")
def s():
    return jaxdiff.make_schedule("linear", timesteps=T)


ALL_TIMES = list(range(T - 1, -1, -1))


def exact(name):
    return {
        "ddpm fixed_small": lambda: propagate(ddpm_steps("fixed_small", MU, SD, T)),
        "ddpm fixed_large": lambda: propagate(ddpm_steps("fixed_large", MU, SD, T)),
        "ddim eta=0": lambda: propagate(ddim_steps(ALL_TIMES, 0.0, MU, SD, T)),
        "ddim eta=1": lambda: propagate(ddim_steps(ALL_TIMES, 1.0, MU, SD, T)),
    }[name]()


# Discretisation bias with T = 1000 linear steps and the exact denoiser (float64 propagation):
#   sampler            (mean - mu) / s         std / s - 1
#   ddpm fixed_small   (-6e-6, +4e-6)          (-0.78%, -1.85%)
#   ddpm fixed_large   (-6e-6, +4e-6)          (+0.15%, +0.46%)
#   ddim eta = 0       (-0.19%, +0.32%)        (-0.30%, -0.75%)
#   ddim eta = 1       identical to ddpm fixed_small
# fixed_small under- and fixed_large over-disperses (the posterior variance leaves out
# c1^2 Var[x0 | x_t], beta_t over-counts it), most for the narrowest dimension; both biases vanish
# as T grows. DDIM's mean bias is the prior mismatch x_T ~ N(0, 1) vs N(sqrt(abar_T) mu, .)
# carried along the deterministic flow. Tolerances on |bias|, per sampler:
BIAS_TOLERANCE = {  # (mean, std), as fractions of s
    "ddpm fixed_small": (1e-4, 0.025),
    "ddpm fixed_large": (1e-4, 0.01),
    "ddim eta=0": (0.01, 0.01),
    "ddim eta=1": (1e-4, 0.025),
}


def test_exact_moments_have_a_small_discretisation_bias(capsys):
    lines = []
    for name, (mean_tol, std_tol) in BIAS_TOLERANCE.items():
        m, v = exact(name)
        mean_bias, std_bias = (m - MU) / SD, np.sqrt(v) / SD - 1
        lines.append(f"{name:18s} (mean - mu)/s = {np.array2string(mean_bias, precision=6)}"
                     f"  std/s - 1 = {np.array2string(std_bias, precision=5)}")
        assert (np.abs(mean_bias) < mean_tol).all(), lines[-1]
        assert (np.abs(std_bias) < std_tol).all(), lines[-1]
    # the two DDPM variances bracket the data's s
    assert (exact("ddpm fixed_small")[1] < SD**2).all() and (exact("ddpm fixed_large")[1] > SD**2).all()
    # stochastic DDIM with every step is ancestral DDPM with the posterior variance (eq. 16)
    for a, b in zip(exact("ddim eta=1"), exact("ddpm fixed_small")):
        np.testing.assert_allclose(a, b, rtol=1e-9)
    with capsys.disabled():
        print("\ndiscretisation bias, T = 1000 linear, exact denoiser of N(mu, s^2):")
        print("\n".join(lines))


def assert_close_to_data(samples, name):
    """Within the sampler's bias tolerance (plus 5 standard errors) of N(mu, s^2)."""
    samples = np.asarray(samples, np.float64)
    mean_tol, std_tol = BIAS_TOLERANCE[name]
    n = samples.shape[0]
    assert (np.abs(samples.mean(0) - MU) < mean_tol * SD + 5 * SD / np.sqrt(n)).all(), name
    assert (np.abs(samples.std(0) - SD) < std_tol * SD + 5 * SD / np.sqrt(2 * n)).all(), name


def start_noise(seed, n=N):
    """A given x_T: every oracle run passes one, so runs with equal shapes and step counts share
    one compiled loop (eta, key and x_T are traced)."""
    return jax.random.normal(jax.random.key(seed), (n, 2))


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_matches_the_oracle(s, variance):
    samples = jaxdiff.ddpm_sample(oracle_model("pred_noise", s, MU, SD), s, key=jax.random.key(0),
                                  shape=(N, 2), clip_x0=False, variance=variance,
                                  x_T=start_noise(100))
    assert samples.shape == (N, 2) and samples.dtype == jnp.float32
    mean, var = exact(f"ddpm {variance}")
    assert_moments(samples, mean, var, f"ddpm {variance}")
    assert_close_to_data(samples, f"ddpm {variance}")


def test_ddpm_variances_are_distinguishable():
    """In the narrow dimension (s = 0.2) fixed_large's propagated variance exceeds fixed_small's
    by 10 standard errors of the test above, so swapping the two would fail it (in the wide one
    the gap is 4 SE; the step-by-step test below separates them everywhere)."""
    v_small, v_large = exact("ddpm fixed_small")[1], exact("ddpm fixed_large")[1]
    se_var = v_small * np.sqrt(2 / N)
    assert (v_large > v_small).all()
    assert v_large[1] - v_small[1] > 10 * se_var[1]


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_every_ddpm_step_is_the_posterior_step(s, variance):
    """Step by step: traj[k+1] - (A_k traj[k] + B_k) must be sigma_k z with z ~ N(0, 1) drawn
    afresh each step (pooled standardised residuals have mean 0, variance 1, no correlation
    between consecutive steps; every step's own variance is 1) and exactly 0 at t = 0."""
    n = 256
    _, trajectory = jaxdiff.ddpm_sample(oracle_model("pred_x0", s, MU, SD), s,
                                        key=jax.random.key(11), shape=(n, 2), objective="pred_x0",
                                        clip_x0=False, variance=variance, return_trajectory=True)
    trajectory = np.asarray(trajectory, np.float64)
    assert trajectory.shape == (T + 1, n, 2)
    steps = ddpm_steps(variance, MU, SD, T)
    residuals = []
    for k, (A, B, sigma2) in enumerate(steps[:-1]):
        residuals.append((trajectory[k + 1] - A * trajectory[k] - B) / np.sqrt(sigma2))
    z = np.stack(residuals)  # [T - 1, n, 2]
    count = z.size
    assert abs(z.mean()) < 5 / np.sqrt(count)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / count)
    # each step's own variance (catches a wrong sigma at some t, e.g. an off-by-one table index);
    # 999 steps of 512 draws: the largest of 999 deviations stays below 5 standard errors
    per_step = z.reshape(T - 1, -1).var(axis=1)
    assert np.abs(per_step - 1).max() < 5 * np.sqrt(2 / (2 * n)), np.abs(per_step - 1).argmax()
    corr = (z[1:] * z[:-1]).mean()
    assert abs(corr) < 5 / np.sqrt(count)
    # the last step (t = 0) adds no noise: out = x0_hat
    A, B, _ = steps[-1]
    np.testing.assert_allclose(trajectory[-1], A * trajectory[-2] + B, atol=1e-5)


def test_ddim_eta0_all_steps_matches_the_oracle_and_is_deterministic(s):
    x_T = start_noise(5)
    run = functools.partial(jaxdiff.ddim_sample, oracle_model("pred_noise", s, MU, SD), s,
                            shape=(N, 2), num_steps=T, eta=0.0, clip_x0=False, x_T=x_T)
    a, b = np.asarray(run(key=jax.random.key(0))), np.asarray(run(key=jax.random.key(1)))
    np.testing.assert_array_equal(a, b)
    assert_moments(a, *exact("ddim eta=0"), "ddim eta=0")
    assert_close_to_data(a, "ddim eta=0")
    # sample by sample: the deterministic flow is the composed affine map of x_T (float32 error
    # accumulated over 1000 steps stays ~1e-5)
    A, B = compose(ddim_steps(ALL_TIMES, 0.0, MU, SD, T))
    np.testing.assert_allclose(a, A * np.asarray(x_T, np.float64) + B, atol=2e-4)


def test_ddim_eta1_all_steps_has_the_ddpm_distribution(s):
    samples = jaxdiff.ddim_sample(oracle_model("pred_noise", s, MU, SD), s, key=jax.random.key(2),
                                  shape=(N, 2), num_steps=T, eta=1.0, clip_x0=False,
                                  x_T=start_noise(6))
    assert_moments(samples, *exact("ddpm fixed_small"), "ddim eta=1, T steps")
    assert_close_to_data(samples, "ddim eta=1")


@pytest.mark.parametrize("num_steps", [50, 20])
def test_ddim_few_steps_eta0_and_eta1(s, num_steps):
    times = trailing_times(T, num_steps)
    model = oracle_model("pred_noise", s, MU, SD)
    moments = {eta: propagate(ddim_steps(times, eta, MU, SD, T)) for eta in (0.0, 1.0)}
    for eta, (mean, var) in moments.items():
        samples = jaxdiff.ddim_sample(model, s, key=jax.random.key(3), shape=(N, 2),
                                      num_steps=num_steps, eta=eta, clip_x0=False,
                                      x_T=start_noise(int(10 * eta) + num_steps))
        assert_moments(samples, mean, var, f"ddim eta={eta}, {num_steps} steps")
    # eta changes the distribution by far more than the sampling error (so each check above
    # would fail for the other eta)
    var0, var1 = moments[0.0][1], moments[1.0][1]
    assert (np.abs(np.sqrt(var1) - np.sqrt(var0)) > 10 * np.sqrt(var0 / (2 * N))).all()


def test_stochastic_ddim_adds_exactly_its_noise(s):
    """Same x_T, two keys: out_1 - out_2 is the difference of the two noise parts only, whose
    variance is twice the eta = 1 variance propagated from a fixed start (v_T = 0)."""
    num_steps = 20
    steps = ddim_steps(trailing_times(T, num_steps), 1.0, MU, SD, T)
    run = functools.partial(jaxdiff.ddim_sample, oracle_model("pred_noise", s, MU, SD), s,
                            shape=(N, 2), num_steps=num_steps, eta=1.0, clip_x0=False,
                            x_T=start_noise(9))
    out_1, out_2 = np.asarray(run(key=jax.random.key(3))), np.asarray(run(key=jax.random.key(4)))
    difference = out_1.astype(np.float64) - out_2
    expected = 2 * propagate(steps, m=0.0, v=0.0)[1]
    assert (expected > 0.05 * SD**2).all()  # a real amount of noise
    se = expected * np.sqrt(2 / N)
    assert (np.abs(difference.var(0) - expected) < 5 * se).all(), (difference.var(0), expected)
    assert (np.abs(difference.mean(0)) < 5 * np.sqrt(expected / N)).all()
    # eta = 0.5 gives its own propagated noise variance, which differs from eta = 1's by several
    # standard errors (more noise per step at eta = 1, but it also contracts the earlier noise
    # more: the total is not monotone in eta)
    steps_half = ddim_steps(trailing_times(T, num_steps), 0.5, MU, SD, T)
    run_half = functools.partial(run, eta=0.5)
    half = (np.asarray(run_half(key=jax.random.key(3)), np.float64)
            - np.asarray(run_half(key=jax.random.key(4))))
    expected_half = 2 * propagate(steps_half, m=0.0, v=0.0)[1]
    assert (np.abs(half.var(0) - expected_half) < 5 * expected_half * np.sqrt(2 / N)).all()
    assert (np.abs(expected_half - expected) > 5 * expected * np.sqrt(2 / N)).all()


def test_the_three_objectives_give_the_same_samples(s):
    """Same x_T and key, exact predictions in each parametrisation: the same samples, which for
    eta = 0 are the float64 affine map of x_T (the pred_noise oracle divides by sqrt(1 - abar),
    0.01 at t = 0, so float32 rounding is amplified ~100x: tolerance 1e-4)."""
    x_T = start_noise(7)
    A, B = compose(ddim_steps(trailing_times(T, 50), 0.0, MU, SD, T))
    expected = A * np.asarray(x_T, np.float64) + B
    outputs = {}
    for objective in OBJECTIVES:
        outputs[objective] = np.asarray(jaxdiff.ddim_sample(
            oracle_model(objective, s, MU, SD), s, key=jax.random.key(0), shape=(N, 2),
            num_steps=50, eta=0.0, objective=objective, clip_x0=False, x_T=x_T))
        np.testing.assert_allclose(outputs[objective], expected, atol=1e-4, err_msg=objective)
    for objective in OBJECTIVES[1:]:
        np.testing.assert_allclose(outputs[objective], outputs["pred_noise"], atol=1e-4)
    # and ancestral sampling with the same key draws the same noise for every objective
    n = 4096
    ddpm = [np.asarray(jaxdiff.ddpm_sample(oracle_model(o, s, MU, SD), s, key=jax.random.key(1),
                                           shape=(n, 2), objective=o, clip_x0=False,
                                           x_T=x_T[:n]))
            for o in OBJECTIVES]
    np.testing.assert_allclose(ddpm[1], ddpm[0], atol=1e-4)
    np.testing.assert_allclose(ddpm[2], ddpm[0], atol=1e-4)


def test_image_shaped_oracle_trajectory():
    """[N, H, W, C] with a different N(mu, s^2) per pixel: every DDIM (eta = 0) trajectory entry is
    the float64 composition of the steps so far applied to x_T."""
    timesteps, num_steps = 100, 10
    sched = jaxdiff.make_schedule("linear", timesteps=timesteps)
    shape = (64, 4, 3, 2)
    mu = np.linspace(-0.6, 0.6, 24).reshape(4, 3, 2)
    sd = np.linspace(0.1, 0.9, 24).reshape(4, 3, 2)[::-1]
    x_T = jax.random.normal(jax.random.key(8), shape)
    x, trajectory = jaxdiff.ddim_sample(oracle_model("pred_x0", sched, mu, sd), sched,
                                        key=jax.random.key(0), shape=shape, num_steps=num_steps,
                                        objective="pred_x0", clip_x0=False, x_T=x_T,
                                        return_trajectory=True)
    assert trajectory.shape == (num_steps + 1,) + shape
    steps = ddim_steps(trailing_times(timesteps, num_steps), 0.0, mu, sd, timesteps)
    x_T64 = np.asarray(x_T, np.float64)
    for k in range(num_steps + 1):
        A, B = compose(steps[:k])
        np.testing.assert_allclose(trajectory[k], A * x_T64 + B, atol=1e-4, err_msg=f"entry {k}")
    np.testing.assert_array_equal(trajectory[-1], x)


# --- time grids --------------------------------------------------------------------------------

def test_ddim_timesteps_trailing():
    pairs = jaxdiff.ddim_timesteps(1000, 50, "trailing")
    assert pairs.shape == (50, 2) and pairs.dtype == np.int32
    expected = list(range(999, 18, -20)) + [-1]  # 999, 979, ..., 19, then -1
    assert pairs[:, 0].tolist() == expected[:-1]
    assert pairs[:, 1].tolist() == expected[1:]
    assert jaxdiff.ddim_timesteps(10, 3, "trailing").tolist() == [[9, 5], [5, 2], [2, -1]]
    assert jaxdiff.ddim_timesteps(1000, 1000, "trailing")[:, 0].tolist() == list(range(999, -1, -1))
    assert jaxdiff.ddim_timesteps(7, 1, "trailing").tolist() == [[6, -1]]


@pytest.mark.parametrize("timesteps", [10, 37, 100, 1000])
def test_ddim_timesteps_trailing_is_exact(timesteps):
    """int(linspace(-1, T - 1, n + 1)) with exact rationals, for every n in [1, T] (T <= 100) or
    a spread of n (T = 1000)."""
    counts = range(1, timesteps + 1) if timesteps <= 100 else [1, 2, 3, 7, 30, 50, 333, 999, 1000]
    for num_steps in counts:
        times = [int(Fraction(-1) + Fraction(timesteps * k, num_steps)) for k in range(num_steps, -1, -1)]
        pairs = jaxdiff.ddim_timesteps(timesteps, num_steps, "trailing")
        assert pairs[:, 0].tolist() == times[:-1], num_steps
        assert pairs[:, 1].tolist() == times[1:], num_steps


def test_ddim_timesteps_leading_and_linspace():
    leading = jaxdiff.ddim_timesteps(1000, 50, "leading")
    assert leading[:, 0].tolist() == list(range(980, -1, -20))  # 980, 960, ..., 0
    assert leading[:, 1].tolist() == list(range(960, -1, -20)) + [-1]
    linspace = jaxdiff.ddim_timesteps(1000, 50, "linspace")
    expected = np.round(np.linspace(0, 999, 50)).astype(int)[::-1].tolist()
    assert expected[:3] == [999, 979, 958]  # by hand: 999 * 48 / 49 = 978.6, 999 * 47 / 49 = 958.2
    assert linspace[:, 0].tolist() == expected
    assert linspace[:, 1].tolist() == expected[1:] + [-1]
    # T = 10, 3 steps: leading k * (10 // 3) = 0, 3, 6; linspace 0, 4.5 -> 4 (round half to even,
    # as numpy and hence diffusers), 9
    assert jaxdiff.ddim_timesteps(10, 3, "leading").tolist() == [[6, 3], [3, 0], [0, -1]]
    assert jaxdiff.ddim_timesteps(10, 3, "linspace").tolist() == [[9, 4], [4, 0], [0, -1]]


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_ddim_visits_its_time_grid(spacing):
    sched = jaxdiff.make_schedule("linear", timesteps=10)
    seen = []

    def model(x, t):
        jax.debug.callback(lambda tt: seen.append(np.asarray(tt)), t, ordered=True)
        return jnp.zeros_like(x)

    jax.block_until_ready(jaxdiff.ddim_sample(model, sched, key=jax.random.key(0), shape=(3, 2),
                                              num_steps=3, timestep_spacing=spacing))
    jax.effects_barrier()
    expected = {"trailing": [9, 5, 2], "leading": [6, 3, 0], "linspace": [9, 4, 0]}[spacing]
    assert [tt.tolist() for tt in seen] == [[v] * 3 for v in expected]
    assert all(tt.dtype == np.int32 for tt in seen)


def test_ddpm_visits_every_time():
    sched = jaxdiff.make_schedule("linear", timesteps=30)
    seen = []

    def model(x, t):
        jax.debug.callback(lambda tt: seen.append(np.asarray(tt)), t, ordered=True)
        return jnp.zeros_like(x)

    jax.block_until_ready(jaxdiff.ddpm_sample(model, sched, key=jax.random.key(0), shape=(2, 2)))
    jax.effects_barrier()
    assert [tt.tolist() for tt in seen] == [[t, t] for t in range(29, -1, -1)]


# --- shapes, trajectories, clipping, self-conditioning ------------------------------------------

@pytest.fixture(scope="module")
def small():
    return jaxdiff.make_schedule("linear", timesteps=40)


@pytest.mark.parametrize("shape", [(3, 5), (2, 6, 6, 3)])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_shapes_and_trajectory(small, shape, sampler):
    model = lambda x, t: 0.1 * x  # noqa: E731
    x_T = jax.random.normal(jax.random.key(1), shape)
    if sampler == "ddpm":
        run, steps = functools.partial(jaxdiff.ddpm_sample, model, small), 40
    else:
        run, steps = functools.partial(jaxdiff.ddim_sample, model, small, num_steps=7, eta=0.5), 7
    x, trajectory = run(key=jax.random.key(0), shape=shape, x_T=x_T, return_trajectory=True)
    assert x.shape == shape and trajectory.shape == (steps + 1,) + shape
    np.testing.assert_array_equal(trajectory[0], x_T)
    np.testing.assert_array_equal(trajectory[-1], x)
    # consecutive entries differ (every step is recorded, not a repeated state)
    assert all(not np.array_equal(trajectory[k], trajectory[k + 1]) for k in range(steps))
    if len(shape) == 2:  # without the trajectory: the same samples (one shape is enough)
        np.testing.assert_allclose(run(key=jax.random.key(0), shape=shape, x_T=x_T), x, atol=1e-6)
    # without x_T: noise drawn from the key, N(0, 1), returned as trajectory[0]
    x, trajectory = run(key=jax.random.key(2), shape=shape, return_trajectory=True)
    assert x.shape == shape and trajectory.shape == (steps + 1,) + shape
    assert not np.array_equal(trajectory[0], x_T)
    drawn = np.asarray(trajectory[0], np.float64)
    # N(0, 1) noise: mean and std within 5 standard errors
    assert abs(drawn.mean()) < 5 / np.sqrt(drawn.size)
    assert abs(drawn.std() - 1) < 5 / np.sqrt(2 * drawn.size)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_clip_x0_keeps_samples_in_range(sampler):
    """Data N((1.5, -2.0), 0.3^2) lie mostly outside [-1, 1]: without clipping the samples do too,
    with clip_x0 the final sample (x0_hat at the last step) is inside [-1, 1]."""
    sched = jaxdiff.make_schedule("linear", timesteps=100)
    mu, sd = np.array([1.5, -2.0]), np.array([0.3, 0.3])
    model = oracle_model("pred_noise", sched, mu, sd)
    if sampler == "ddpm":
        run = functools.partial(jaxdiff.ddpm_sample, model, sched)
    else:
        run = functools.partial(jaxdiff.ddim_sample, model, sched, num_steps=20)
    free = np.asarray(run(key=jax.random.key(0), shape=(2000, 2), clip_x0=False))
    assert (np.abs(free) > 1).mean() > 0.9
    clipped = np.asarray(run(key=jax.random.key(0), shape=(2000, 2), clip_x0=True))
    assert np.abs(clipped).max() <= 1.0
    assert (np.abs(clipped) > 0.99).mean() > 0.5  # pushed to the boundary, not collapsed to 0


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_self_conditioning_feeds_back_the_previous_x0(sampler):
    """The model predicts x0 = 0.5 x_self_cond + c (c differs per element). If the sampler feeds
    back the previous x0 estimate (zeros first), step k sees 2c (1 - 0.5^(k-1)) and the final
    sample is the last estimate, 2c (1 - 0.5^n)."""
    sched = jaxdiff.make_schedule("linear", timesteps=20)
    c = jnp.arange(1.0, 7.0).reshape(2, 3) / 6
    received = []

    def model(x, t, x_self_cond):
        jax.debug.callback(lambda v: received.append(np.asarray(v, np.float64)), x_self_cond,
                           ordered=True)
        return 0.5 * x_self_cond + c

    kwargs = dict(key=jax.random.key(0), shape=(2, 3), objective="pred_x0", clip_x0=False,
                  self_condition=True)
    if sampler == "ddpm":
        x, steps = jaxdiff.ddpm_sample(model, sched, **kwargs), 20
    else:
        x, steps = jaxdiff.ddim_sample(model, sched, num_steps=5, eta=0.0, **kwargs), 5
    jax.block_until_ready(x)
    jax.effects_barrier()
    assert len(received) == steps
    c64 = np.asarray(c, np.float64)
    for k, value in enumerate(received):
        np.testing.assert_allclose(value, 2 * c64 * (1 - 0.5**k), rtol=1e-5, atol=1e-7,
                                   err_msg=f"step {k}")
    assert not np.any(received[0])
    # the final sample is the last x0 estimate (DDPM: posterior mean at t = 0 is x0_hat)
    np.testing.assert_allclose(x, 2 * c64 * (1 - 0.5**steps), rtol=1e-4)


def test_cond_reaches_the_model(small):
    labels = jnp.array([0.0, 1.0, 2.0])

    def model(x, t, y):
        return jnp.zeros_like(x) + y[:, None]  # as pred_x0: the sample is the label

    x = jaxdiff.ddim_sample(model, small, key=jax.random.key(0), shape=(3, 2), num_steps=5,
                            objective="pred_x0", clip_x0=False, cond={"y": labels})
    np.testing.assert_allclose(x, np.repeat(np.asarray(labels)[:, None], 2, axis=1), atol=1e-5)


# --- compile once ------------------------------------------------------------------------------

TRACES = {"flax": 0, "plain": 0}


class TinyDense(nn.Module):
    @nn.compact
    def __call__(self, x, t):
        TRACES["flax"] += 1  # Python side effect: runs only while tracing
        return nn.Dense(x.shape[-1])(x)


def plain_model(params, x, t):
    TRACES["plain"] += 1
    return x * params["w"] + params["b"][None]


def test_samplers_compile_once():
    """New parameters, a new key, a new eta and a new x_T reuse the compiled loop; a new step count
    or a new shape compiles again. Shapes unique to this test keep other tests' cache entries out."""
    sched = jaxdiff.make_schedule("linear", timesteps=20)
    shape = (7, 3)
    ddim_cache, ddpm_cache = samplers._ddim_loop._cache_size, samplers._ddpm_loop._cache_size

    def run_all(i):
        """Sample with new model objects, parameters, key, eta and x_T; return the outputs and
        how many times each model body was traced by the samplers."""
        module = TinyDense()  # a new module object every time (equal by value)
        params = module.init(jax.random.key(i), jnp.zeros((1, 3)), jnp.zeros((1,), jnp.int32))
        flax_fn = functools.partial(module.apply, params)
        plain_fn = functools.partial(plain_model, {"w": jnp.float32(0.5 + i),
                                                   "b": jnp.full((3,), 0.1 * i, jnp.float32)})
        x_T = jax.random.normal(jax.random.key(100 + i), shape)
        before = dict(TRACES)  # after init, which also runs the module body
        outs = []
        for fn in (flax_fn, plain_fn):
            outs.append(jaxdiff.ddim_sample(fn, sched, key=jax.random.key(i), shape=shape,
                                            num_steps=4, eta=0.25 * i, x_T=x_T))
            outs.append(jaxdiff.ddpm_sample(fn, sched, key=jax.random.key(i), shape=shape, x_T=x_T))
        return outs, {name: TRACES[name] - before[name] for name in TRACES}

    first, traced = run_all(0)
    # flax: one trace per sampler (the test can see traces); plain functions are traced once per
    # call to find the arrays they capture, plus once per sampler while compiling
    assert traced == {"flax": 2, "plain": 4}
    sizes = ddim_cache(), ddpm_cache()
    for i in (1, 2):
        outs, traced = run_all(i)
        assert traced == {"flax": 0, "plain": 2}, (i, traced)
        assert (ddim_cache(), ddpm_cache()) == sizes
        # the new parameters / eta / x_T were really used (not baked-in constants)
        assert all(not np.allclose(a, b) for a, b in zip(outs, first))
    # a list shape equal to the tuple is the same static argument
    plain_fn = functools.partial(plain_model, {"w": jnp.float32(1.0), "b": jnp.zeros(3)})
    jaxdiff.ddim_sample(plain_fn, sched, key=jax.random.key(0), shape=list(shape), num_steps=4,
                        eta=1.0, x_T=jnp.ones(shape))
    assert ddim_cache() == sizes[0]

    # a new step count or a new shape does compile again
    jaxdiff.ddim_sample(plain_fn, sched, key=jax.random.key(0), shape=shape, num_steps=5)
    assert ddim_cache() == sizes[0] + 1
    jaxdiff.ddim_sample(plain_fn, sched, key=jax.random.key(0), shape=(8, 3), num_steps=4)
    assert ddim_cache() == sizes[0] + 2
    jaxdiff.ddpm_sample(plain_fn, sched, key=jax.random.key(0), shape=(8, 3))
    assert ddpm_cache() == sizes[1] + 1


# --- bad input ---------------------------------------------------------------------------------

def _ddim(sched, **kwargs):
    kwargs = {"key": jax.random.key(0), "shape": (2, 2), "num_steps": 10, **kwargs}
    return jaxdiff.ddim_sample(lambda x, t: x, sched, **kwargs)


def _ddpm(sched, **kwargs):
    kwargs = {"key": jax.random.key(0), "shape": (2, 2), **kwargs}
    return jaxdiff.ddpm_sample(lambda x, t: x, sched, **kwargs)


@pytest.mark.parametrize("call,needle", [
    (lambda s: _ddim(s, num_steps=0), "num_steps=0"),
    (lambda s: _ddim(s, num_steps=41), "num_steps=41"),
    (lambda s: _ddim(s, num_steps=-3), "-3"),
    (lambda s: _ddpm(s, variance="learned"), "learned"),
    (lambda s: _ddim(s, timestep_spacing="uniform"), "uniform"),
    (lambda s: jaxdiff.ddim_timesteps(40, 5, "uniform"), "uniform"),
    (lambda s: jaxdiff.ddim_timesteps(40, 41, "trailing"), "41"),
    (lambda s: _ddpm(s, objective="pred_eps"), "pred_eps"),
    (lambda s: _ddim(s, objective="pred_epsilon"), "pred_epsilon"),
    (lambda s: _ddim(s, eta=-0.5), "-0.5"),
    (lambda s: _ddim(s, eta=-1), "-1"),
    (lambda s: _ddim(s, eta=np.float32(-0.5)), "-0.5"),
    (lambda s: _ddim(s, eta=np.array(-0.25)), "-0.25"),
    (lambda s: _ddim(s, x_T=jnp.zeros((3, 2))), "(3, 2)"),
    (lambda s: _ddpm(s, x_T=jnp.zeros((2, 2, 1))), "(2, 2, 1)"),
], ids=["num_steps0", "num_steps_gt_T", "num_steps_negative", "variance", "spacing",
        "spacing_grid", "grid_steps_gt_T", "ddpm_objective", "ddim_objective", "eta_float",
        "eta_int", "eta_np_float32", "eta_0d_array", "ddim_x_T_shape", "ddpm_x_T_shape"])
def test_bad_arguments_raise_valueerror_naming_the_value(small, call, needle):
    with pytest.raises(ValueError) as error:
        call(small)
    assert needle in str(error.value), str(error.value)
