"""Forward process and prediction conversions against float64 closed forms."""

import jax
import numpy as np
import pytest

import jaxdiff

T = 100


@pytest.fixture(scope="module")
def s():
    return jaxdiff.make_schedule("cosine", timesteps=T)


def abar64(T):
    t = np.linspace(0, T, T + 1) / T
    f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    return betas, np.cumprod(1 - betas)


def per_example(values, ndim):
    return values.reshape((-1,) + (1,) * (ndim - 1))


@pytest.mark.parametrize("shape", [(6, 3), (6, 4, 4, 2)])
def test_q_sample_matches_closed_form(s, shape):
    rng = np.random.default_rng(0)
    x0, noise = rng.normal(size=shape), rng.normal(size=shape)
    t = np.array([0, 1, 17, 50, 98, 99])
    _, abar = abar64(T)
    a = per_example(abar[t], len(shape))
    expected = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    got = jaxdiff.q_sample(s, x0.astype(np.float32), t, noise.astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_conversions_round_trip(s):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(5, 3, 3, 1)).astype(np.float32)
    eps = rng.normal(size=x0.shape).astype(np.float32)
    t = np.array([0, 10, 40, 80, 99])
    x_t = jaxdiff.q_sample(s, x0, t, eps)
    v = jaxdiff.predict_v(s, x0, t, eps)
    _, abar = abar64(T)
    a = per_example(abar[t], 4)
    np.testing.assert_allclose(v, np.sqrt(a) * eps - np.sqrt(1 - a) * x0, atol=1e-5)
    np.testing.assert_allclose(jaxdiff.predict_x0_from_v(s, x_t, t, v), x0, atol=1e-4)
    np.testing.assert_allclose(jaxdiff.predict_eps_from_v(s, x_t, t, v), eps, atol=1e-4)
    # eps -> x0 is ill-conditioned at t = T - 1 (divides by sqrt(abar) ~ 1e-2): looser there
    np.testing.assert_allclose(jaxdiff.predict_x0_from_eps(s, x_t, t, eps), x0, atol=2e-3)
    np.testing.assert_allclose(jaxdiff.predict_eps_from_x0(s, x_t, t, x0)[1:], eps[1:], atol=2e-3)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_model_predictions_recover_eps_and_x0(s, objective):
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-0.9, 0.9, size=(4, 6)).astype(np.float32)
    eps = rng.normal(size=x0.shape).astype(np.float32)
    t = np.array([3, 20, 50, 70])
    x_t = jaxdiff.q_sample(s, x0, t, eps)
    output = jaxdiff.target_for(objective, s, x0, t, eps)
    pred = jaxdiff.model_predictions(s, output, x_t, t, objective)
    np.testing.assert_allclose(pred.x0, x0, atol=1e-3)
    np.testing.assert_allclose(pred.eps, eps, atol=1e-3)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_clipping_rederives_eps(s, objective):
    rng = np.random.default_rng(3)
    x_t = 3 * rng.normal(size=(8, 5)).astype(np.float32)
    t = np.full(8, 30)
    output = 3 * rng.normal(size=x_t.shape).astype(np.float32)
    pred = jaxdiff.model_predictions(s, output, x_t, t, objective, clip_x0=True)
    assert np.abs(pred.x0).max() <= 1.0
    assert np.abs(pred.x0).max() == 1.0  # something was clipped, or the test proves nothing
    # the pair is consistent with x_t: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
    np.testing.assert_allclose(jaxdiff.q_sample(s, pred.x0, t, pred.eps), x_t, atol=1e-4)


def test_q_posterior_matches_closed_form(s):
    rng = np.random.default_rng(4)
    x0, x_t = rng.normal(size=(2, 3, 2))
    t = np.array([0, 55, 99])
    betas, abar = abar64(T)
    prev = np.append(1.0, abar[:-1])[t][:, None]
    b, a = betas[t][:, None], abar[t][:, None]
    mean = b * np.sqrt(prev) / (1 - a) * x0 + (1 - prev) * np.sqrt(1 - b) / (1 - a) * x_t
    var = b * (1 - prev) / (1 - a)
    got_mean, got_var, got_log = jaxdiff.q_posterior(s, x0.astype(np.float32),
                                                     x_t.astype(np.float32), t)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_var, var, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(got_log, np.log(np.maximum(var, 1e-20)), rtol=1e-5)


def test_works_under_jit(s):
    f = jax.jit(lambda x0, t, n: jaxdiff.q_sample(s, x0, t, n))
    assert f(np.ones((2, 3), np.float32), np.array([1, 2]), np.ones((2, 3), np.float32)).shape == (2, 3)


def test_unknown_objective(s):
    with pytest.raises(ValueError, match="pred_eps"):
        jaxdiff.model_predictions(s, np.zeros((1, 2)), np.zeros((1, 2)), np.array([0]), "pred_eps")
