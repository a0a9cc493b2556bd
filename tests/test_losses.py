"""diffusion_loss against hand-computed errors; weights; self-conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff.losses import self_condition_input

T = 50


@pytest.fixture(scope="module")
def s():
    return jaxdiff.make_schedule("linear", timesteps=T)


def abar64():
    betas = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)
    return np.cumprod(1 - betas)


def linear_model(w):
    return lambda x_t, t: x_t * w


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("loss_type", ["l2", "l1"])
def test_loss_equals_hand_computed_error(s, objective, loss_type):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(4, 3)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    t = np.array([0, 7, 25, 49], np.int32)
    a = abar64()[t][:, None]
    x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    target = {"pred_noise": noise, "pred_x0": x0,
              "pred_v": np.sqrt(a) * noise - np.sqrt(1 - a) * x0}[objective]
    error = 0.5 * x_t - target
    expected = (error**2 if loss_type == "l2" else np.abs(error)).mean(axis=1)
    loss, per_example = jaxdiff.diffusion_loss(linear_model(0.5), s, x0, jax.random.key(0),
                                               objective=objective, loss_type=loss_type,
                                               t=t, noise=noise)
    assert per_example.shape == (4,)
    np.testing.assert_allclose(per_example, expected, rtol=1e-5)
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)


def test_loss_weights(s):
    t = np.arange(T)
    snr = abar64() / (1 - abar64())
    clipped = np.minimum(snr, 5.0)
    expected = {
        ("min_snr", "pred_noise"): clipped / snr, ("min_snr", "pred_x0"): clipped,
        ("min_snr", "pred_v"): clipped / (snr + 1),
        ("eps", "pred_noise"): np.ones(T), ("eps", "pred_x0"): snr, ("eps", "pred_v"): snr / (snr + 1),
        ("none", "pred_x0"): np.ones(T),
    }
    for (weighting, objective), value in expected.items():
        got = jaxdiff.loss_weights(s, t, objective, weighting, 5.0)
        np.testing.assert_allclose(got, value, rtol=1e-5, err_msg=f"{weighting} {objective}")


def test_eps_weighting_makes_every_objective_the_eps_mse(s):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(6, 2)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    t = np.array([1, 5, 10, 20, 30, 45], np.int32)
    a = abar64()[t][:, None]
    x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    eps_hat = rng.normal(size=x0.shape)
    x0_hat = (x_t - np.sqrt(1 - a) * eps_hat) / np.sqrt(a)
    outputs = {"pred_noise": eps_hat, "pred_x0": x0_hat,
               "pred_v": np.sqrt(a) * eps_hat - np.sqrt(1 - a) * x0_hat}
    expected = ((eps_hat - noise) ** 2).mean(1)
    for objective, output in outputs.items():
        model = lambda x, tt, out=output: jnp.asarray(out, jnp.float32)  # noqa: E731
        _, per_example = jaxdiff.diffusion_loss(model, s, x0, jax.random.key(0), t=t, noise=noise,
                                                objective=objective, weighting="eps")
        np.testing.assert_allclose(per_example, expected, rtol=2e-3, err_msg=objective)


def test_sampled_t_is_uniform(s):
    seen = []

    def model(x_t, t):  # diffusion_loss runs eagerly here, so t is concrete
        seen.append(np.asarray(t))
        return x_t

    for i in range(20):
        jaxdiff.diffusion_loss(model, s, jnp.zeros((1000, 1)), jax.random.key(i))
    counts = np.bincount(np.concatenate(seen), minlength=T)
    # 20,000 draws over 50 bins: each count ~ Binomial(20000, 1/50) = 400 +- 20
    assert len(counts) == T and counts.min() > 300 and counts.max() < 500


def test_gradient_is_finite(s):
    x0 = jnp.ones((8, 2))
    grad = jax.grad(lambda w: jaxdiff.diffusion_loss(linear_model(w), s, x0, jax.random.key(3))[0])(0.3)
    assert np.isfinite(grad) and grad != 0


def test_self_conditioning_feeds_a_stopped_x0_estimate_half_the_time(s):
    x_t = jnp.asarray(np.random.default_rng(2).normal(size=(4, 2)), jnp.float32)
    t = jnp.array([3, 10, 20, 40])

    def model(w):
        def apply(x, tt, x_self_cond):
            return w * x + 0.25 * x_self_cond
        return apply

    used = []
    for i in range(200):
        cond = self_condition_input(model(0.7), s, x_t, t, jax.random.key(i), "pred_x0", {})
        used.append(bool(np.abs(np.asarray(cond)).max() > 0))
        if used[-1]:
            # the estimate is the model's x0 prediction from a zero self-condition
            np.testing.assert_allclose(cond, 0.7 * x_t, rtol=1e-6)
    assert 70 < sum(used) < 130  # Binomial(200, 0.5): mean 100, sd ~7

    # no gradient flows through the self-condition: d/dw of mean(out) is mean(x_t) only
    key = next(jax.random.key(i) for i in range(200) if used[i])
    def objective(w):
        cond = self_condition_input(model(w), s, x_t, t, key, "pred_x0", {})
        return jnp.mean(model(w)(x_t, t, cond))
    np.testing.assert_allclose(jax.grad(objective)(0.7), np.mean(np.asarray(x_t)), rtol=1e-5)


def test_loss_with_self_conditioning_runs(s):
    def apply(x, t, x_self_cond):
        return x + x_self_cond
    loss, _ = jaxdiff.diffusion_loss(apply, s, jnp.ones((3, 2)), jax.random.key(0),
                                     self_condition=True)
    assert np.isfinite(loss)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(objective="pred_eps"), "pred_eps"),
    (dict(loss_type="huber2"), "huber2"),
    (dict(weighting="p2"), "p2"),
])
def test_bad_arguments(s, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        jaxdiff.diffusion_loss(linear_model(1.0), s, jnp.ones((2, 2)), jax.random.key(0), **kwargs)
