"""diffusion_loss and loss_weights against errors and weights computed by hand in float64.

Targets (denoising-diffusion-pytorch's three objectives): eps (Ho et al. 2020, eq. 14), x0, and
v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022). Weights: Min-SNR-gamma (Hang et al.
2023) with c = min(snr, gamma): pred_noise c / snr, pred_x0 c, pred_v c / (snr + 1); "eps" is the
same with c = snr. Self-conditioning: Chen et al. 2022 ("Analog Bits"), sec. 3.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import losses

import oracles
from helpers import label_model
from oracles import OBJECTIVES, per_example

T = 50


@pytest.fixture(scope="module")
def s():
    return jaxdiff.make_schedule("linear", timesteps=T)


ABAR = oracles.alphas_cumprod("linear", T)


def weights64(objective, weighting, t, gamma=5.0):
    snr = oracles.schedule("linear", T)["snr"][t]
    if weighting == "none":
        return np.ones_like(snr)
    c = np.minimum(snr, gamma) if weighting == "min_snr" else snr
    return {"pred_noise": c / snr, "pred_x0": c, "pred_v": c / (snr + 1)}[objective]


def batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, size=shape)
    noise = rng.normal(size=shape)
    t = rng.integers(0, T, size=shape[0]).astype(np.int32)
    t[:2] = [0, T - 1]  # both ends of the schedule
    return x0, noise, t


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("loss_type", ["l2", "l1"])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 2)])
def test_loss_equals_independent_error(s, objective, loss_type, shape):
    """A linear toy model out = 0.7 x_t + 0.1: the loss is mean |out - target|^p per example."""
    x0, noise, t = batch(shape)
    a = per_example(ABAR[t], len(shape))
    x_t = oracles.q_sample(a, x0, noise)
    error = 0.7 * x_t + 0.1 - oracles.target(objective, x0, noise, a)
    pointwise = error**2 if loss_type == "l2" else np.abs(error)
    expected = pointwise.reshape(shape[0], -1).mean(axis=1)
    model = lambda x, tt: 0.7 * x + 0.1  # noqa: E731
    loss, per_ex = jaxdiff.diffusion_loss(model, s, jnp.asarray(x0, jnp.float32), jax.random.key(0),
                                          objective=objective, loss_type=loss_type,
                                          t=jnp.asarray(t), noise=jnp.asarray(noise, jnp.float32))
    assert loss.shape == () and per_ex.shape == (shape[0],)
    np.testing.assert_allclose(per_ex, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean(np.asarray(per_ex)), rtol=1e-6)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("weighting", ["none", "min_snr", "eps"])
def test_weighted_loss(s, objective, weighting):
    x0, noise, t = batch((8, 2), seed=1)
    a = ABAR[t][:, None]
    x_t = oracles.q_sample(a, x0, noise)
    W = np.array([[0.5, -0.2], [0.3, 0.9]])
    out = x_t @ W
    mse = ((out - oracles.target(objective, x0, noise, a)) ** 2).mean(axis=1)
    expected = weights64(objective, weighting, t) * mse
    model = lambda x, tt: x @ jnp.asarray(W, jnp.float32)  # noqa: E731
    loss, per_ex = jaxdiff.diffusion_loss(model, s, jnp.asarray(x0, jnp.float32), jax.random.key(1),
                                          objective=objective, weighting=weighting,
                                          t=jnp.asarray(t), noise=jnp.asarray(noise, jnp.float32))
    np.testing.assert_allclose(per_ex, expected, rtol=2e-5)
    np.testing.assert_allclose(loss, expected.mean(), rtol=2e-5)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("weighting", ["none", "min_snr", "eps"])
@pytest.mark.parametrize("gamma", [5.0, 1.0])
def test_loss_weights_match_float64(s, objective, weighting, gamma):
    t = jnp.arange(T, dtype=jnp.int32)
    got = jaxdiff.loss_weights(s, t, objective, weighting, gamma)
    assert got.shape == (T,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, weights64(objective, weighting, np.arange(T), gamma), rtol=1e-5)


def test_min_snr_gamma_actually_clips(s):
    """snr spans both sides of gamma = 5 on this schedule, so min_snr differs from both "none"
    and "eps" somewhere (or the weighting tests above could not tell them apart)."""
    snr = oracles.schedule("linear", T)["snr"]
    assert snr.max() > 5 > snr.min()
    t = jnp.arange(T, dtype=jnp.int32)
    min_snr = np.asarray(jaxdiff.loss_weights(s, t, "pred_x0", "min_snr"))
    eps = np.asarray(jaxdiff.loss_weights(s, t, "pred_x0", "eps"))
    assert np.abs(min_snr - eps).max() > 1 and np.abs(min_snr - 1).max() > 1
    assert min_snr.max() <= 5.0 * (1 + 1e-6)


def test_eps_weighting_makes_every_objective_the_eps_mse(s):
    """With c = snr every objective's weighted loss is the eps-prediction MSE (an identity that
    follows from x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, checked here through the code)."""
    x0, noise, t = batch((6, 2), seed=2)
    t[:2] = [1, 5]  # avoid t = T - 1 where eps -> x0 is ill-conditioned in float32
    a = ABAR[t][:, None]
    x_t = oracles.q_sample(a, x0, noise)
    eps_hat = np.random.default_rng(3).normal(size=x0.shape)
    x0_hat = (x_t - np.sqrt(1 - a) * eps_hat) / np.sqrt(a)
    outputs = {objective: oracles.target(objective, x0_hat, eps_hat, a)
               for objective in OBJECTIVES}
    expected = ((eps_hat - noise) ** 2).mean(axis=1)
    for objective, output in outputs.items():
        model = lambda x, tt, out=output: jnp.asarray(out, jnp.float32)  # noqa: E731
        _, per_ex = jaxdiff.diffusion_loss(model, s, jnp.asarray(x0, jnp.float32), jax.random.key(0),
                                           objective=objective, weighting="eps",
                                           t=jnp.asarray(t), noise=jnp.asarray(noise, jnp.float32))
        np.testing.assert_allclose(per_ex, expected, rtol=1e-3, err_msg=objective)


def test_sampled_t_and_noise(s):
    """t ~ U{0, ..., T-1}: 20 batches of 1000 draws, chi-square over the 50 bins; noise ~ N(0, 1)."""
    seen_t, seen_x_t = [], []

    def model(x_t, t):  # the loss runs eagerly here, so t is concrete
        seen_t.append(np.asarray(t))
        seen_x_t.append(np.asarray(x_t))
        return x_t

    x0 = jnp.zeros((1000, 1))
    for i in range(20):
        jaxdiff.diffusion_loss(model, s, x0, jax.random.key(i))
    t = np.concatenate(seen_t)
    assert t.dtype == np.int32 and t.min() == 0 and t.max() == T - 1
    counts = np.bincount(t, minlength=T)
    assert len(counts) == T
    expected = len(t) / T
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # chi-square with 49 degrees of freedom: mean 49, sd ~9.9; 5 sd above the mean
    assert chi2 < 49 + 5 * np.sqrt(2 * 49), chi2
    # with x0 = 0, x_t = sqrt(1 - abar_t) eps: eps = x_t / sqrt(1 - abar_t) is standard normal
    eps = np.concatenate(seen_x_t)[:, 0] / np.sqrt(1 - ABAR[t])
    assert abs(eps.mean()) < 5 / np.sqrt(len(eps))
    assert abs(eps.std() - 1) < 5 / np.sqrt(2 * len(eps))
    # different keys give different draws
    assert not np.array_equal(seen_t[0], seen_t[1])


def test_loss_is_differentiable(s):
    """jax.grad through the loss (a jitted one too) equals the hand-derived gradient of
    mean((w x_t + c - eps)^2) with respect to (w, c)."""
    x0, noise, t = batch((6, 3), seed=4)
    a = ABAR[t][:, None]
    x_t = oracles.q_sample(a, x0, noise)
    w, c = 0.4, -0.2
    residual = w * x_t + c - noise
    expected = {"w": np.mean(2 * residual * x_t), "c": np.mean(2 * residual)}

    def loss_fn(params, key, t=None, noise=None):
        model = lambda x, tt: params["w"] * x + params["c"]  # noqa: E731
        return jaxdiff.diffusion_loss(model, s, jnp.asarray(x0, jnp.float32), key, t=t,
                                      noise=noise)[0]

    params = {"w": jnp.float32(w), "c": jnp.float32(c)}
    grads = jax.jit(jax.grad(loss_fn))(params, jax.random.key(0), jnp.asarray(t),
                                       jnp.asarray(noise, jnp.float32))
    for name in expected:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-4, err_msg=name)
    grads = jax.grad(loss_fn)(params, jax.random.key(1))  # sampled t and noise
    assert all(np.isfinite(g) and g != 0 for g in jax.tree_util.tree_leaves(grads))


def test_cond_is_passed_to_the_model(s):
    labels = jnp.array([1, 0, 2])

    def model(x_t, t, y):
        return x_t * 0 + y[:, None].astype(jnp.float32)

    x0 = jnp.zeros((3, 2))
    noise = jnp.zeros((3, 2))
    _, per_ex = jaxdiff.diffusion_loss(model, s, x0, jax.random.key(0), cond={"y": labels},
                                       t=jnp.array([0, 1, 2]), noise=noise)
    np.testing.assert_allclose(per_ex, [1.0, 0.0, 4.0])


# --- self-conditioning -------------------------------------------------------------------------

SC_T = np.array([2, 10, 25, 49], np.int32)
W, U = 0.6, 0.3  # model: eps_hat = W x_t + U x_self_cond (objective pred_noise)


def sc_batch():
    rng = np.random.default_rng(5)
    x0 = rng.uniform(-1, 1, size=(4, 3))
    noise = rng.normal(size=(4, 3))
    a = ABAR[SC_T][:, None]
    x_t = oracles.q_sample(a, x0, noise)
    # the model's x0 prediction from a zero self-condition: eps_hat = W x_t
    x0_hat = (x_t - np.sqrt(1 - a) * W * x_t) / np.sqrt(a)
    return x0, noise, x_t, x0_hat


def sc_loss(s, params, key):
    x0, noise, _, _ = sc_batch()

    def model(x_t, t, x_self_cond):
        return params["w"] * x_t + params["u"] * x_self_cond

    return jaxdiff.diffusion_loss(model, s, jnp.asarray(x0, jnp.float32), key, self_condition=True,
                                  t=jnp.asarray(SC_T), noise=jnp.asarray(noise, jnp.float32))[0]


@pytest.fixture(scope="module")
def self_conditions(s):
    """What the model call that produces the loss received as x_self_cond, for 200 keys.

    The loss is jitted with the key as argument; the model reports its x_self_cond through an
    ordered debug callback. When the batch is self-conditioned the extra forward pass (inside
    lax.cond, with a zero self-condition) reports first, so the last report of each call is the
    one that matters.
    """
    x0, noise, _, _ = sc_batch()
    received = []

    def model(x_t, t, x_self_cond):
        jax.debug.callback(lambda c: received.append(np.asarray(c, np.float64)), x_self_cond,
                           ordered=True)
        return W * x_t + U * x_self_cond

    loss = jax.jit(lambda key: jaxdiff.diffusion_loss(
        model, s, jnp.asarray(x0, jnp.float32), key, self_condition=True, t=jnp.asarray(SC_T),
        noise=jnp.asarray(noise, jnp.float32))[0])
    final = []
    for i in range(200):
        received.clear()
        jax.block_until_ready(loss(jax.random.key(i)))
        jax.effects_barrier()
        assert 1 <= len(received) <= 2, len(received)
        if len(received) == 2:  # the extra pass saw zeros
            assert not np.any(received[0] != 0)
        final.append(received[-1])
    return final


def test_self_condition_is_used_for_about_half_of_the_batches(self_conditions):
    nonzero = [bool(np.any(c != 0)) for c in self_conditions]
    # Binomial(200, 1/2): mean 100, sd ~7.1; 4 sd either side
    assert 71 < sum(nonzero) < 129, sum(nonzero)


def test_self_condition_is_the_x0_prediction_from_a_zero_self_condition(self_conditions):
    _, _, _, x0_hat = sc_batch()
    for c in self_conditions:
        if np.any(c != 0):  # the whole batch is self-conditioned, with the x0 estimate
            np.testing.assert_allclose(c, x0_hat, rtol=1e-4, atol=1e-5)
        else:
            assert c.shape == x0_hat.shape


def test_no_gradient_flows_through_the_self_condition(s, self_conditions):
    """With sc = stop_gradient(x0_hat(w)) fixed: L = mean((w x_t + u sc - eps)^2), so
    dL/dw = mean(2 r x_t), dL/du = mean(2 r sc); a gradient through sc would add
    u * mean(2 r d sc/dw) to dL/dw (and d sc/dw != 0 here)."""
    _, noise, x_t, x0_hat = sc_batch()
    used = [i for i, c in enumerate(self_conditions) if np.any(c != 0)]
    unused = [i for i, c in enumerate(self_conditions) if not np.any(c != 0)]
    params = {"w": jnp.float32(W), "u": jnp.float32(U)}
    grad_fn = jax.grad(lambda p, key: sc_loss(s, p, key))
    for keys, sc in ((used, x0_hat), (unused, np.zeros_like(x0_hat))):
        residual = W * x_t + U * sc - noise
        grads = grad_fn(params, jax.random.key(keys[0]))
        np.testing.assert_allclose(grads["w"], np.mean(2 * residual * x_t), rtol=1e-4)
        np.testing.assert_allclose(grads["u"], np.mean(2 * residual * sc), rtol=1e-4, atol=1e-7)
    # the alternative (gradient through sc) is measurably different
    a = ABAR[SC_T][:, None]
    dsc_dw = -np.sqrt(1 - a) * x_t / np.sqrt(a)
    residual = W * x_t + U * x0_hat - noise
    assert abs(U * np.mean(2 * residual * dsc_dw)) > 1e-2 * abs(np.mean(2 * residual * x_t))


def test_self_conditioned_loss_runs_under_jit(s):
    loss = jax.jit(lambda key: sc_loss(s, {"w": W, "u": U}, key))(jax.random.key(3))
    assert np.isfinite(loss)


# --- label dropout (classifier-free guidance training, Ho & Salimans 2022) -----------------------

def test_label_dropout_rate_and_kept_labels():
    labels = jnp.asarray(np.arange(40_000) % 10, jnp.int32)
    for p in (0.0, 0.15, 0.5, 1.0):
        out = np.asarray(jax.jit(losses.drop_condition)(
            {"labels": labels}, {"labels": 10}, jax.random.key(3), p)["labels"])
        dropped = out == 10
        assert abs(dropped.mean() - p) <= 5 * np.sqrt(p * (1 - p) / len(out)) + 1e-12, p
        np.testing.assert_array_equal(out[~dropped], np.asarray(labels)[~dropped])


def test_dropout_of_a_vector_condition_drops_whole_rows():
    """The conditioning path is general: a continuous [B, D] condition is replaced row-wise."""
    emb = jnp.ones((1000, 4))
    out = np.asarray(losses.drop_condition({"emb": emb, "labels": jnp.zeros(1000, jnp.int32)},
                                           {"emb": 0.0}, jax.random.key(0), 0.3)["emb"])
    rows = out.sum(axis=1)
    assert set(np.unique(rows)) == {0.0, 4.0}
    assert abs((rows == 0).mean() - 0.3) < 5 * np.sqrt(0.21 / 1000)


def test_cond_drop_schedule_is_the_seeds_decay():
    schedule = losses.cond_drop_schedule("linear", 0.1, start=1.0, total_steps=500)
    epochs = 5  # the seed: c_drop_prob = max(0.1, 1 - epoch / epochs), 100 steps per epoch
    for epoch in range(epochs):
        assert float(schedule(epoch * 100)) == pytest.approx(max(0.1, 1 - epoch / epochs))
    assert float(schedule(500)) == pytest.approx(0.1)
    assert float(losses.cond_drop_schedule("constant", 0.2)(123)) == pytest.approx(0.2)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_loss_drops_labels_for_every_objective_and_self_conditioning(linear30, objective):
    """A model exact for dropped labels and off by 1 for kept ones: the fraction of zero
    per-example losses is the dropout rate; the self-conditioning pass sees the same labels."""
    batch = 4000
    x0 = jax.random.normal(jax.random.key(0), (batch, 2))
    noise = jax.random.normal(jax.random.key(1), (batch, 2))
    t = jax.random.randint(jax.random.key(2), (batch,), 0, linear30.timesteps)
    abar = oracles.alphas_cumprod("linear", 30)[np.asarray(t)][:, None]
    target = jnp.asarray(oracles.target(objective, np.asarray(x0, np.float64),
                                        np.asarray(noise, np.float64), abar), jnp.float32)
    seen = []

    def model(x, t, labels, x_self_cond):
        jax.debug.callback(lambda value: seen.append(np.asarray(value)), labels)
        return target + (labels != 10).astype(jnp.float32)[:, None] + 0.0 * x_self_cond

    for seed in range(8):  # until the self-conditioning pass (probability 1/2) has run
        seen.clear()
        _, per_example = jaxdiff.diffusion_loss(
            model, linear30, x0, jax.random.key(seed), objective=objective, self_condition=True,
            cond={"labels": jnp.asarray(np.arange(batch) % 10)}, t=t, noise=noise,
            cond_drop_prob=0.25, null_cond={"labels": 10})
        jax.effects_barrier()
        if len(seen) == 2:
            break
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0], seen[1])
    per_example = np.asarray(per_example)
    dropped = per_example < 1e-6
    np.testing.assert_array_equal(dropped, seen[1] == 10)
    np.testing.assert_allclose(per_example[~dropped], 1.0, rtol=1e-4)
    assert abs(dropped.mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / batch)


# --- bad input ---------------------------------------------------------------------------------

def test_loss_dropout_needs_a_null_condition(linear30):
    with pytest.raises(ValueError, match="cond_drop_prob=0.2 needs null_cond"):
        jaxdiff.diffusion_loss(label_model, linear30, jnp.zeros((2, 2)), jax.random.key(0),
                               cond={"labels": jnp.array([0, 1])}, cond_drop_prob=0.2)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(objective="pred_eps"), "pred_eps"),
    (dict(loss_type="huber"), "huber"),
    (dict(weighting="p2"), "p2"),
])
def test_bad_arguments_raise_valueerror_naming_the_value(s, kwargs, needle):
    model = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError) as error:
        jaxdiff.diffusion_loss(model, s, jnp.ones((2, 2)), jax.random.key(0), **kwargs)
    assert needle in str(error.value)


@pytest.mark.parametrize("objective,weighting,needle", [
    ("pred_eps", "none", "pred_eps"), ("pred_x0", "snr_trunc", "snr_trunc")])
def test_loss_weights_bad_arguments(s, objective, weighting, needle):
    with pytest.raises(ValueError) as error:
        jaxdiff.loss_weights(s, jnp.arange(3), objective, weighting)
    assert needle in str(error.value)
