"""Forward process, parametrisation conversions and posterior against float64 closed forms.

  x_t = sqrt(abar) x0 + sqrt(1 - abar) eps                   (Ho et al. 2020, eq. 4)
  v   = sqrt(abar) eps - sqrt(1 - abar) x0                   (Salimans & Ho 2022, sec. 4)
  q(x_{t-1} | x_t, x0) = N(c1 x0 + c2 x_t, beta~_t)          (Ho et al. 2020, eqs. 6-7)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff

import oracles
from oracles import OBJECTIVES, per_example

SHAPES = [(6, 3), (6, 4, 5, 2)]
CASES = [("linear", 1000), ("cosine", 100)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}{c[1]}")
def case(request):
    """(schedule, float64 betas, float64 abar) of a linear (Ho et al.) or cosine (Nichol &
    Dhariwal) schedule."""
    kind, T = request.param
    table = oracles.schedule(kind, T)
    return jaxdiff.make_schedule(kind, timesteps=T), table["betas"], table["alphas_cumprod"]


def times_for(T, batch):
    """Per-example t covering both ends of the schedule."""
    return np.array([0, 1, T // 3, T // 2, T - 2, T - 1][:batch], np.int32)


def draw(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), rng.normal(size=shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_q_sample_matches_closed_form(case, shape):
    s, _, abar = case
    x0, noise = draw(shape, 0)
    t = times_for(s.timesteps, shape[0])
    a = per_example(abar[t], len(shape))
    expected = oracles.q_sample(a, x0, noise)
    got = jaxdiff.q_sample(s, jnp.asarray(x0, jnp.float32), jnp.asarray(t), jnp.asarray(noise, jnp.float32))
    assert got.shape == shape and got.dtype == jnp.float32
    # |x_t| ~ 1-4 and the coefficients are float32-rounded: absolute error ~1e-6
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)
    # each example really uses its own t (a shared t would fail this for the t = 0 row)
    np.testing.assert_allclose(got[0], oracles.q_sample(abar[0], x0[0], noise[0]), atol=2e-6)


def test_q_sample_works_under_jit_and_with_the_schedule_as_argument(case):
    s, _, abar = case
    x0, noise = draw((3, 2, 2, 1), 1)
    t = np.array([0, 5, s.timesteps - 1], np.int32)
    got = jax.jit(jaxdiff.q_sample)(s, jnp.asarray(x0, jnp.float32), t, jnp.asarray(noise, jnp.float32))
    a = per_example(abar[t], 4)
    np.testing.assert_allclose(got, oracles.q_sample(a, x0, noise), rtol=1e-5, atol=2e-6)


def test_rank_promotion_is_an_error_in_this_session():
    """conftest.py's setting is what makes the shape tests above meaningful."""
    with pytest.raises(ValueError):
        jnp.ones((3,)) * jnp.ones((3, 2, 2, 1))


@pytest.mark.parametrize("shape", SHAPES)
def test_predict_v_matches_closed_form(case, shape):
    s, _, abar = case
    x0, eps = draw(shape, 2)
    t = times_for(s.timesteps, shape[0])
    a = per_example(abar[t], len(shape))
    got = jaxdiff.predict_v(s, jnp.asarray(x0, jnp.float32), t, jnp.asarray(eps, jnp.float32))
    np.testing.assert_allclose(got, oracles.target("pred_v", x0, eps, a), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trips(case, shape):
    """eps -> x0 -> eps, x0 -> v -> x0, v -> eps, against float64 values.

    Recovering x0 from eps divides by sqrt(abar) (~0.006 at t = T - 1 for linear T = 1000) and
    recovering eps from x0 divides by sqrt(1 - abar) (0.01 at t = 0), so each check is done
    where the conversion is well conditioned, with a tolerance scaled by its condition number.
    """
    s, _, abar = case
    x0, eps = draw(shape, 3)
    t = times_for(s.timesteps, shape[0])
    a = per_example(abar[t], len(shape))
    x_t = oracles.q_sample(a, x0, eps)  # float64
    f32 = lambda z: jnp.asarray(z, jnp.float32)  # noqa: E731
    ulp = 2e-7  # a few float32 roundings of O(1) values

    x0_from_eps = np.asarray(jaxdiff.predict_x0_from_eps(s, f32(x_t), t, f32(eps)), np.float64)
    scale_x0 = 10 * ulp * (np.abs(x_t) + np.abs(eps)) / np.sqrt(a)
    assert (np.abs(x0_from_eps - x0) <= scale_x0 + 1e-6).all()

    eps_from_x0 = np.asarray(jaxdiff.predict_eps_from_x0(s, f32(x_t), t, f32(x0)), np.float64)
    scale_eps = 10 * ulp * (np.abs(x_t) / np.sqrt(a) + np.abs(x0)) / np.sqrt(1 / a - 1)
    assert (np.abs(eps_from_x0 - eps) <= scale_eps + 1e-6).all()

    # eps -> x0 -> eps through jaxdiff alone
    back = jaxdiff.predict_eps_from_x0(s, f32(x_t), t, jaxdiff.predict_x0_from_eps(s, f32(x_t), t, f32(eps)))
    assert (np.abs(np.asarray(back, np.float64) - eps) <= 2 * scale_eps + 1e-5).all()

    # v is well conditioned everywhere: both coefficients are <= 1
    v = oracles.target("pred_v", x0, eps, a)
    np.testing.assert_allclose(jaxdiff.predict_x0_from_v(s, f32(x_t), t, f32(v)), x0, atol=5e-6)
    np.testing.assert_allclose(jaxdiff.predict_eps_from_v(s, f32(x_t), t, f32(v)), eps, atol=5e-6)
    v_back = jaxdiff.predict_v(s, jaxdiff.predict_x0_from_v(s, f32(x_t), t, f32(v)), t, f32(eps))
    np.testing.assert_allclose(v_back, v, atol=5e-6)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("shape", SHAPES)
def test_model_predictions_recover_eps_and_x0(case, objective, shape):
    s, _, abar = case
    x0, eps = draw(shape, 4)
    x0 = np.tanh(x0)  # inside [-1, 1]: clipping must then change nothing
    t = np.array([1, 2, s.timesteps // 4, s.timesteps // 2, (3 * s.timesteps) // 4,
                  (9 * s.timesteps) // 10], np.int32)
    a = per_example(abar[t], len(shape))
    x_t = oracles.q_sample(a, x0, eps)
    output = oracles.target(objective, x0, eps, a)
    for clip in (False, True):
        pred = jaxdiff.model_predictions(s, jnp.asarray(output, jnp.float32),
                                         jnp.asarray(x_t, jnp.float32), t, objective, clip_x0=clip)
        assert isinstance(pred, jaxdiff.Prediction)
        assert pred.x0.shape == shape and pred.eps.shape == shape
        np.testing.assert_allclose(pred.x0, x0, atol=2e-4, err_msg=f"{objective} clip={clip}")
        np.testing.assert_allclose(pred.eps, eps, atol=2e-4, err_msg=f"{objective} clip={clip}")


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("shape", SHAPES)
def test_clip_x0_clips_and_rederives_eps(case, objective, shape):
    """With clip_x0, x0 = clip(x0_hat, -1, 1) and eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar), so
    that q_sample(x0, t, eps) == x_t (denoising-diffusion-pytorch's rederive_pred_noise)."""
    s, _, abar = case
    rng = np.random.default_rng(5)
    t = np.array([3, 10, s.timesteps // 3, s.timesteps // 2, (4 * s.timesteps) // 5,
                  s.timesteps - 1], np.int32)
    a = per_example(abar[t], len(shape))
    x_t = rng.normal(size=shape) * 2
    output = rng.normal(size=shape) * 3
    if objective == "pred_noise":
        x0_hat = (x_t - np.sqrt(1 - a) * output) / np.sqrt(a)
    elif objective == "pred_x0":
        x0_hat = output
    else:
        x0_hat = np.sqrt(a) * x_t - np.sqrt(1 - a) * output
    x0_clipped = np.clip(x0_hat, -1, 1)
    eps_expected = (x_t - np.sqrt(a) * x0_clipped) / np.sqrt(1 - a)
    pred = jaxdiff.model_predictions(s, jnp.asarray(output, jnp.float32),
                                     jnp.asarray(x_t, jnp.float32), t, objective, clip_x0=True)
    assert np.abs(np.asarray(pred.x0)).max() <= 1.0
    inside = np.abs(x0_hat) < 1 - 1e-3  # away from the clip boundary, where float32 decides
    assert inside.any() and (~inside).any()  # both regimes are exercised
    np.testing.assert_allclose(np.asarray(pred.x0)[~inside], x0_clipped[~inside], atol=1e-3)
    np.testing.assert_allclose(np.asarray(pred.x0)[inside], x0_hat[inside],
                               atol=2e-3 if objective == "pred_noise" else 1e-5)
    np.testing.assert_allclose(pred.eps, eps_expected, rtol=1e-3, atol=1e-3)
    # consistency with x_t, the point of re-deriving eps
    np.testing.assert_allclose(jaxdiff.q_sample(s, pred.x0, t, pred.eps), x_t, atol=1e-4)
    # and without clipping the out-of-range x0 is returned as is
    unclipped = jaxdiff.model_predictions(s, jnp.asarray(output, jnp.float32),
                                          jnp.asarray(x_t, jnp.float32), t, objective)
    assert np.abs(np.asarray(unclipped.x0)).max() > 1.5


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_target_for(case, objective):
    s, _, abar = case
    x0, eps = draw((6, 3), 6)
    t = times_for(s.timesteps, 6)
    a = abar[t][:, None]
    expected = oracles.target(objective, x0, eps, a)
    got = jaxdiff.target_for(objective, s, jnp.asarray(x0, jnp.float32), t,
                             jnp.asarray(eps, jnp.float32))
    np.testing.assert_allclose(got, expected, atol=2e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_q_posterior_matches_closed_form(case, shape):
    s, betas, abar = case
    x0, x_t = draw(shape, 7)
    t = times_for(s.timesteps, shape[0])
    table = {name: per_example(values[t], len(shape))
             for name, values in oracles.tables(betas).items()}
    mean = table["posterior_mean_coef1"] * x0 + table["posterior_mean_coef2"] * x_t
    variance = table["posterior_variance"]
    mean_got, var_got, log_var_got = jaxdiff.q_posterior(
        s, jnp.asarray(x0, jnp.float32), jnp.asarray(x_t, jnp.float32), t)
    assert mean_got.shape == shape
    assert var_got.shape == log_var_got.shape == (shape[0],) + (1,) * (len(shape) - 1)
    np.testing.assert_allclose(mean_got, mean, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(var_got, variance, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(log_var_got, table["posterior_log_variance_clipped"], rtol=1e-5)
    assert var_got[0].item() == 0.0  # t = 0: q(x_{-1} | x_0, x0) is a point mass at x0
    np.testing.assert_allclose(mean_got[0], x0[0], atol=2e-6)


def test_q_posterior_is_the_bayes_posterior(case):
    """Independent of eq. 7: q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0), i.e. a product
    of Gaussians, N(sqrt(alpha) x_{t-1}, beta) and N(sqrt(abar_prev) x0, 1 - abar_prev)."""
    s, betas, abar = case
    t = np.array([1, s.timesteps // 2, s.timesteps - 1], np.int32)
    x0, x_t = draw((3, 1), 8)
    abar_prev = abar[t - 1][:, None]
    alpha = 1 - betas[t][:, None]
    precision = alpha / betas[t][:, None] + 1 / (1 - abar_prev)
    mean = (np.sqrt(alpha) * x_t / betas[t][:, None] + np.sqrt(abar_prev) * x0 / (1 - abar_prev)) / precision
    got_mean, got_var, _ = jaxdiff.q_posterior(s, jnp.asarray(x0, jnp.float32),
                                               jnp.asarray(x_t, jnp.float32), t)
    np.testing.assert_allclose(got_var, 1 / precision, rtol=1e-5)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=2e-6)


def test_unknown_objective_raises_naming_it(case):
    s = case[0]
    z = jnp.zeros((2, 3))
    t = jnp.array([0, 1])
    with pytest.raises(ValueError) as error:
        jaxdiff.model_predictions(s, z, z, t, "pred_eps")
    assert "pred_eps" in str(error.value)
    with pytest.raises(ValueError) as error:
        jaxdiff.target_for("predict_x0", s, z, t, z)
    assert "predict_x0" in str(error.value)
