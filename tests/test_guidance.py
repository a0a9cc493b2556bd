"""Classifier-free guidance: the guided model wrapper, label dropout, configs and error messages.

References are independent of the code under test: guidance and rescaling are recomputed in
NumPy float64 from their papers' formulas (Ho & Salimans 2022, eq. 6, in diffusers' convention;
Lin et al. 2024, eqs. 15-16), and sampler runs are compared with runs of the same sampler on a
model whose conditional / unconditional prediction is known in closed form.
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import jaxdiff
from jaxdiff import losses, samplers
from jaxdiff.config import validate_config
from jaxdiff.errors import ConfigError
from jaxdiff.guidance import classifier_free_guidance, guide
from jaxdiff.models import MLPDenoiser, build_model
from jaxdiff.run import sample_model
from jaxdiff.training import build_optimizer, build_schedule, init_train_state, loss_kwargs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
NULL = 3  # the null class of a 3-class model


@pytest.fixture(scope="module")
def sched():
    return jaxdiff.make_schedule("linear", timesteps=30)


def label_model(x, t, labels, x_self_cond=None):
    """A non-linear 'denoiser' whose output depends on x, t and the label (the null class 3
    included), elementwise, so every batch row is computed independently and exactly."""
    shift = (labels.astype(jnp.float32) - 1.0).reshape((-1,) + (1,) * (x.ndim - 1))
    tt = t.astype(jnp.float32).reshape(shift.shape) / 30.0
    out = 0.3 * jnp.tanh(x) + 0.2 * shift * jnp.cos(x + tt)
    if x_self_cond is not None:
        out = out + 0.1 * x_self_cond
    return out


def sample(sampler, sched, model_fn, labels, shape, **kwargs):
    """Samples of a bounded x0 predictor (so that no step amplifies rounding)."""
    common = dict(key=jax.random.key(7), shape=shape, cond={"labels": jnp.asarray(labels)},
                  clip_x0=False, objective="pred_x0", **kwargs)
    if sampler == "ddim":
        return jaxdiff.ddim_sample(model_fn, sched, num_steps=6, eta=0.5, **common)
    return jaxdiff.ddpm_sample(model_fn, sched, **common)


# --- the guided prediction ----------------------------------------------------------------------

def _guided_and_reference(sampler, sched, labels, reference_labels, shape, scale, **kwargs):
    """(guided, reference) samples, op by op (exact arithmetic of the formulas) and compiled,
    on a short schedule (op by op is slow)."""
    sched = jaxdiff.make_schedule("linear", timesteps=10)
    def both():
        guided = sample(sampler, sched, label_model, labels, shape, guidance_scale=scale,
                        null_cond={"labels": NULL}, **kwargs)
        return np.asarray(guided), np.asarray(sample(sampler, sched, label_model,
                                                     reference_labels, shape, **kwargs))

    with jax.disable_jit():
        eager = both()
    return eager, both()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("self_condition", [False, True])
def test_scale_one_is_plain_conditional_sampling_exactly(sched, sampler, self_condition):
    """Bit for bit when run op by op. Compiled, the two programs differ (one model call on a
    doubled batch, then a slice) and XLA may fuse multiply-adds differently: equal to rounding."""
    labels = np.array([0, 1, 2, 1])
    (guided, plain), (guided_jit, plain_jit) = _guided_and_reference(
        sampler, sched, labels, labels, (4, 3, 2, 1), 1.0, self_condition=self_condition)
    np.testing.assert_array_equal(guided, plain)
    np.testing.assert_allclose(guided_jit, plain_jit, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(guided_jit, plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_scale_zero_is_the_null_label_prediction(sched, sampler):
    labels = np.array([0, 1, 2])
    (guided, unconditional), (guided_jit, unconditional_jit) = _guided_and_reference(
        sampler, sched, labels, np.full(3, NULL), (3, 5), 0.0)
    np.testing.assert_array_equal(guided, unconditional)
    np.testing.assert_allclose(guided_jit, unconditional_jit, rtol=1e-6, atol=1e-6)
    # and the wrapper itself, one (op-by-op) call: s = 0 is the null label, s = 1 the label
    x = jax.random.normal(jax.random.key(1), (3, 5))
    t = jnp.array([4, 9, 29])
    for scale, reference in ((0.0, np.full(3, NULL)), (1.0, labels)):
        wrapped = classifier_free_guidance(label_model, scale, {"labels": NULL})
        np.testing.assert_array_equal(wrapped(x, t, labels=jnp.asarray(labels)),
                                      label_model(x, t, jnp.asarray(reference)))


def test_guided_prediction_matches_the_formula_and_uses_one_batched_call():
    calls = []

    def model(x, t, labels):
        calls.append(x.shape)
        return label_model(x, t, labels)

    x = jax.random.normal(jax.random.key(2), (4, 3))
    t = jnp.array([0, 5, 17, 29])
    labels = jnp.array([0, 2, 1, 0])
    scales = np.array([0.5, 2.0, 3.0, 7.5])
    out = classifier_free_guidance(model, scales, {"labels": NULL})(x, t, labels=labels)
    assert calls == [(8, 3)]  # one call on the doubled batch
    cond = np.asarray(label_model(x, t, labels), np.float64)
    uncond = np.asarray(label_model(x, t, jnp.full(4, NULL)), np.float64)
    expected = uncond + scales[:, None] * (cond - uncond)  # diffusers' formula
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_the_dli_seed_weighting_is_guidance_scale_w():
    """Seed 004 samples with e_t = w e_keep + (1 - w) e_drop; that is guidance_scale = w."""
    rng = np.random.default_rng(0)
    keep, drop = rng.standard_normal((2, 6, 4, 4, 1))
    for w in (-1.0, 0.5, 2.0, 5.0):
        np.testing.assert_allclose(guide(jnp.asarray(keep), jnp.asarray(drop), w),
                                   w * keep + (1 - w) * drop, rtol=1e-5, atol=1e-5)


def _eps_pair(sched, x, t, labels):
    """Closed-form eps predictions (conditional and null) of a label-dependent Gaussian model."""
    abar = np.asarray(sched.alphas_cumprod, np.float64)[np.asarray(t)][:, None]
    mean = 0.4 * (np.asarray(labels, np.float64)[:, None] - 1.0)
    x = np.asarray(x, np.float64)
    eps_cond = (x - np.sqrt(abar) * mean) / np.sqrt(1 - abar) * 0.7
    eps_uncond = x / np.sqrt(1 - abar) * 0.7
    return abar, x, eps_cond, eps_uncond


@pytest.mark.parametrize("objective", ["pred_x0", "pred_v"])
def test_guiding_x0_or_v_outputs_is_guiding_eps(sched, objective):
    """eps, x0 and v are affine in the output with weights summing to one: guiding the raw x0 or
    v output and converting gives exactly the guided eps."""
    x = jax.random.normal(jax.random.key(3), (5, 2))
    t = jnp.array([0, 3, 11, 20, 29])
    labels = np.array([0, 1, 2, 0, 1])
    abar, x64, eps_cond, eps_uncond = _eps_pair(sched, x, t, labels)

    def as_objective(eps):  # float64 conversions, from x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
        x0 = (x64 - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
        return x0 if objective == "pred_x0" else np.sqrt(abar) * eps - np.sqrt(1 - abar) * x0

    outputs = {lab: as_objective(_eps_pair(sched, x, t, np.full(5, lab))[2]) for lab in range(3)}
    outputs[NULL] = as_objective(eps_uncond)

    table = jnp.asarray(np.stack([outputs[k] for k in range(4)]), jnp.float32)  # [label, B, D]

    def model(x, t, labels):  # row i of the doubled batch is row i % 5 of x
        return table[labels, jnp.arange(labels.shape[0]) % 5]

    for scale in (0.0, 1.0, 3.0):
        out = classifier_free_guidance(model, scale, {"labels": NULL})(x, t, labels=jnp.asarray(labels))
        eps = jaxdiff.model_predictions(sched, out, x, t, objective).eps
        expected = eps_uncond + scale * (eps_cond - eps_uncond)
        np.testing.assert_allclose(eps, expected, rtol=2e-4, atol=2e-4 * max(scale, 1.0))


def test_the_three_objectives_give_the_same_guided_samples(sched):
    """Whole DDIM runs: an eps model, and the same model expressed as x0 and as v."""
    shape = (4, 2)
    labels = jnp.array([0, 1, 2, 2])

    def eps_model(x, t, labels):
        mean = 0.4 * (labels.astype(jnp.float32)[:, None] - 1.0) * (labels != NULL)[:, None]
        abar = jnp.asarray(sched.alphas_cumprod)[t][:, None]
        return 0.7 * (x - jnp.sqrt(abar) * mean) / jnp.sqrt(1 - abar)

    def converted(objective):
        def model(x, t, labels):
            eps = eps_model(x, t, labels)
            x0 = jaxdiff.predict_x0_from_eps(sched, x, t, eps)
            return x0 if objective == "pred_x0" else jaxdiff.predict_v(sched, x0, t, eps)
        return model

    runs = {objective: jaxdiff.ddim_sample(
        eps_model if objective == "pred_noise" else converted(objective), sched,
        key=jax.random.key(0), shape=shape, num_steps=10, objective=objective, clip_x0=False,
        cond={"labels": labels}, guidance_scale=2.5, null_cond={"labels": NULL})
        for objective in ("pred_noise", "pred_x0", "pred_v")}
    np.testing.assert_allclose(runs["pred_x0"], runs["pred_noise"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(runs["pred_v"], runs["pred_noise"], rtol=1e-3, atol=1e-3)


def test_rescale_matches_a_numpy_reference():
    rng = np.random.default_rng(1)
    cond = rng.standard_normal((3, 4, 4, 2)) * np.array([1.0, 2.0, 0.5])[:, None, None, None]
    uncond = rng.standard_normal((3, 4, 4, 2))
    scale, phi = np.array([1.5, 4.0, 7.0]), np.array([0.0, 0.7, 1.0])
    out = guide(jnp.asarray(cond, jnp.float32), jnp.asarray(uncond, jnp.float32), scale, phi)
    # Lin et al. 2024, eqs. 15-16 with torch's (unbiased) std over the non-batch axes
    cfg = uncond + scale[:, None, None, None] * (cond - uncond)
    std_cond = cond.reshape(3, -1).std(axis=1, ddof=1)[:, None, None, None]
    std_cfg = cfg.reshape(3, -1).std(axis=1, ddof=1)[:, None, None, None]
    p = phi[:, None, None, None]
    expected = p * cfg * std_cond / std_cfg + (1 - p) * cfg
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out[2]).std(), cond[2].std(), rtol=1e-5)
    # phi = 0 leaves plain guidance untouched, bit for bit
    plain = guide(jnp.asarray(cond, jnp.float32), jnp.asarray(uncond, jnp.float32), 2.0)
    zero = guide(jnp.asarray(cond, jnp.float32), jnp.asarray(uncond, jnp.float32), 2.0, 0.0)
    np.testing.assert_array_equal(plain, zero)


def test_guidance_with_a_flax_model_and_self_conditioning(sched):
    """The MLP denoiser with a null class: s = 1 matches plain conditional sampling (to
    rounding: the batched matmuls of [x; x] may block differently), s = 0 the null class."""
    model = MLPDenoiser(hidden=16, depth=1, time_dim=8, num_classes=3, self_condition=True)
    x = jnp.zeros((1, 2))
    params = model.init(jax.random.key(0), x, jnp.zeros((1,), jnp.int32),
                        labels=jnp.zeros((1,), jnp.int32))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), params)
    fn = functools.partial(model.apply, params)
    labels = np.array([0, 1, 2, 0, 1])
    kwargs = dict(self_condition=True, null_cond={"labels": NULL})
    for scale, reference in ((1.0, labels), (0.0, np.full(5, NULL))):
        guided = sample("ddim", sched, fn, labels, (5, 2), guidance_scale=scale, **kwargs)
        plain = sample("ddim", sched, fn, reference, (5, 2), self_condition=True)
        np.testing.assert_allclose(guided, plain, rtol=1e-5, atol=1e-5)


# --- compile once ---------------------------------------------------------------------------------

TRACES = {"model": 0}


def counted_model(params, x, t, labels):
    TRACES["model"] += 1  # runs only while tracing
    return label_model(x, t, labels) * params["w"]


def test_guided_sampler_compiles_once(sched):
    """New scales, rescales, null labels and parameters reuse the compiled guided loop."""
    shape = (6, 3)  # unique to this test
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    cache = samplers._ddim_loop._cache_size

    def run(scale, rescale, w):
        fn = functools.partial(counted_model, {"w": jnp.float32(w)})
        return jaxdiff.ddim_sample(fn, sched, key=jax.random.key(0), shape=shape, num_steps=5,
                                   cond={"labels": labels}, guidance_scale=scale,
                                   guidance_rescale=rescale, null_cond={"labels": NULL})

    first = run(0.0, 0.0, 1.0)
    traced, size = TRACES["model"], cache()
    assert traced >= 1
    outs = [run(s, r, w) for s, r, w in ((1.0, 0.0, 1.0), (3.0, 0.5, 1.0), (7.5, 0.7, 1.2))]
    assert TRACES["model"] == traced and cache() == size
    assert all(not np.allclose(a, first) for a in outs)  # the new values were really used
    # per-example scales are a new shape: one more compile, then none
    run(np.linspace(0, 3, 6), 0.0, 1.0)
    assert TRACES["model"] == traced + 1 and cache() == size + 1
    run(np.linspace(1, 5, 6), 0.3, 0.9)
    assert TRACES["model"] == traced + 1 and cache() == size + 1


# --- label dropout --------------------------------------------------------------------------------

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
def test_loss_drops_labels_for_every_objective_and_self_conditioning(sched, objective):
    """A model exact for dropped labels and off by 1 for kept ones: the fraction of zero
    per-example losses is the dropout rate; the self-conditioning pass sees the same labels."""
    batch = 4000
    x0 = jax.random.normal(jax.random.key(0), (batch, 2))
    noise = jax.random.normal(jax.random.key(1), (batch, 2))
    t = jax.random.randint(jax.random.key(2), (batch,), 0, sched.timesteps)
    abar = np.asarray(sched.alphas_cumprod, np.float64)[np.asarray(t)][:, None]
    x0_64, noise_64 = np.asarray(x0, np.float64), np.asarray(noise, np.float64)
    target = {"pred_noise": noise_64, "pred_x0": x0_64,
              "pred_v": np.sqrt(abar) * noise_64 - np.sqrt(1 - abar) * x0_64}[objective]
    target = jnp.asarray(target, jnp.float32)
    seen = []

    def model(x, t, labels, x_self_cond):
        jax.debug.callback(lambda value: seen.append(np.asarray(value)), labels)
        return target + (labels != 10).astype(jnp.float32)[:, None] + 0.0 * x_self_cond

    for seed in range(8):  # until the self-conditioning pass (probability 1/2) has run
        seen.clear()
        _, per_example = jaxdiff.diffusion_loss(
            model, sched, x0, jax.random.key(seed), objective=objective, self_condition=True,
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


def test_train_step_evaluates_the_dropout_schedule_once_compiled():
    from jaxdiff.training import create_train_state, make_optimizer, make_train_step

    model = MLPDenoiser(hidden=8, depth=1, time_dim=8, num_classes=3)
    x = jnp.zeros((16, 2))
    params = model.init(jax.random.key(0), x, jnp.zeros((16,), jnp.int32))
    optimizer = make_optimizer(1e-3)
    state = create_train_state(params, optimizer, jax.random.key(1))
    schedule = losses.cond_drop_schedule("linear", 0.1, start=1.0, total_steps=4)
    step = make_train_step(model.apply, optimizer, jaxdiff.make_schedule("linear", 20),
                           loss_kwargs=dict(cond_drop_prob=schedule, null_cond={"labels": 3}),
                           ema_decay=0.9)
    batch = {"x": np.ones((16, 2), np.float32), "labels": np.arange(16, dtype=np.int32) % 3}
    probabilities = []
    for _ in range(4):
        state, metrics = step(state, batch)
        probabilities.append(float(metrics["cond_drop_prob"]))
    np.testing.assert_allclose(probabilities, [1.0, 0.75, 0.5, 0.25], rtol=1e-6)
    assert step._cache_size() == 1


# --- configs --------------------------------------------------------------------------------------

def test_digits_cond_config_validates_and_builds():
    import digits_cond

    config = digits_cond.get_config()
    validate_config(config)
    model = build_model(config)
    assert model.num_classes == 10
    kwargs = loss_kwargs(config)
    assert kwargs["null_cond"] == {"labels": 10} and kwargs["cond_drop_prob"] == 0.15
    out = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((2, 8, 8, 1)), jnp.zeros((2,), jnp.int32),
        labels=jnp.array([3, 10]))[0])
    assert out.shape == (2, 8, 8, 1)


def test_fashion_mnist_cfg_is_the_seed_recipe_and_reads_mock_data():
    import tensorflow_datasets as tfds

    import fashion_mnist_cfg
    from jaxdiff.train_loop import prepare

    config = fashion_mnist_cfg.get_config()
    validate_config(config)
    assert (config.diffusion.schedule, config.diffusion.timesteps) == ("linear", 150)
    assert config.sample.guidance_scale == 5.0  # the seed's w
    schedule = loss_kwargs(config)["cond_drop_prob"]
    steps = config.train.steps
    for fraction in (0.0, 0.2, 0.5, 0.95):
        assert float(schedule(int(fraction * steps))) == pytest.approx(
            max(0.1, 1 - int(fraction * steps) / steps), abs=1e-6)
    model = build_model(config)
    assert model.num_classes == 10
    config.train.batch_size = 8
    with tfds.testing.mock_data(num_examples=32):
        source = prepare(config)
        batch = source.batch(0, 8)
    assert source.num_classes == 10 and source.shape == (16, 16, 1)
    assert batch["x"].shape == (8, 16, 16, 1) and batch["labels"].dtype == np.int32
    # the whole train step traces (abstractly: nothing is compiled) with dropout on the labels
    from jaxdiff.training import make_train_step

    optimizer = build_optimizer(config)
    state = jax.eval_shape(lambda: init_train_state(config, model, optimizer, source.shape))
    step = make_train_step(model.apply, optimizer, build_schedule(config),
                           loss_kwargs=loss_kwargs(config), ema_decay=0.0)
    _, metrics = jax.eval_shape(step, state, batch)
    assert metrics["cond_drop_prob"].shape == ()


# --- bad input ------------------------------------------------------------------------------------

def _ddim(sched, **kwargs):
    kwargs = {"key": jax.random.key(0), "shape": (2, 2), "num_steps": 3, **kwargs}
    return jaxdiff.ddim_sample(label_model, sched, **kwargs)


LABELS = {"labels": jnp.array([0, 1])}


@pytest.mark.parametrize("kwargs,needle", [
    (dict(guidance_scale=3.0), "needs a conditional model"),
    (dict(guidance_scale=3.0, null_cond={"labels": NULL}), "needs a conditional model"),
    (dict(cond=LABELS, guidance_scale=3.0), "needs null_cond"),
    (dict(cond=LABELS, guidance_scale=3.0, null_cond={"label": NULL}), "['label']"),
    (dict(cond=LABELS, guidance_scale=np.ones(3), null_cond={"labels": NULL}), "shape (2,)"),
    (dict(cond=LABELS, guidance_scale=np.nan, null_cond={"labels": NULL}), "finite"),
    (dict(cond=LABELS, guidance_scale=2.0, guidance_rescale=1.5, null_cond={"labels": NULL}),
     "guidance_rescale=1.5"),
    (dict(cond=LABELS, null_cond={"labels": NULL}), "only used with guidance_scale"),
], ids=["no_cond", "no_cond_with_null", "no_null", "null_key", "scale_shape", "scale_nan",
        "rescale_range", "null_without_scale"])
def test_bad_guidance_arguments_raise_naming_the_value(sched, kwargs, needle):
    with pytest.raises(ValueError) as error:
        _ddim(sched, **kwargs)
    assert needle in str(error.value), str(error.value)


def test_loss_dropout_needs_a_null_condition(sched):
    with pytest.raises(ValueError, match="cond_drop_prob=0.2 needs null_cond"):
        jaxdiff.diffusion_loss(label_model, sched, jnp.zeros((2, 2)), jax.random.key(0),
                               cond={"labels": jnp.array([0, 1])}, cond_drop_prob=0.2)


def _tiny_config(num_classes=3, **sample_fields):
    config = ml_collections.ConfigDict({
        "model": {"num_classes": num_classes, "self_condition": False},
        "diffusion": {"objective": "pred_noise"},
        "sample": {"sampler": "ddim", "steps": 3, "eta": 0.0, "variance": "fixed_small",
                   "clip_x0": False, "timestep_spacing": "trailing", **sample_fields},
    })
    return config


@pytest.mark.parametrize("labels,needle", [
    ([0, 3], "label 3 is outside [0, num_classes=3)"),
    ([-1, 0], "label -1 is outside"),
    ([0.5, 1.0], "integer"),
    ([0, 1, 2], "3 entries for 2 samples"),
])
def test_sample_model_rejects_bad_labels(sched, labels, needle):
    with pytest.raises(ConfigError) as error:
        sample_model(label_model, sched, _tiny_config(), (2, 2), key=jax.random.key(0),
                     labels=labels)
    assert needle in str(error.value), str(error.value)


def test_sample_model_guidance_needs_a_conditional_model_and_labels(sched):
    call = functools.partial(sample_model, label_model, sched, key=jax.random.key(0), shape=(2, 2))
    with pytest.raises(ConfigError, match="class-conditional model"):
        call(config=_tiny_config(num_classes=0), guidance_scale=3.0)
    with pytest.raises(ConfigError, match="unconditional"):
        call(config=_tiny_config(num_classes=0), labels=[0, 1])
    with pytest.raises(ConfigError, match="without labels"):
        call(config=_tiny_config(), guidance_scale=3.0)
    # labels, the config's guidance scale and the null class reach the sampler. Bit for bit
    # against the same guided program; s = 0 giving the null class is checked above (the
    # unguided program on half the batch may round differently, and abar_29 = 1e-6 amplifies
    # that ~1000x in the first x0 estimate)
    guided = call(config=_tiny_config(guidance_scale=0.0), labels=[0, 2])
    direct = jaxdiff.ddim_sample(label_model, sched, key=jax.random.key(0), shape=(2, 2),
                                 num_steps=3, clip_x0=False, cond={"labels": jnp.array([0, 2])},
                                 guidance_scale=0.0, null_cond={"labels": NULL})
    np.testing.assert_array_equal(guided, direct)


@pytest.mark.parametrize("fields,needle", [
    ({"sample.guidance_scale": 3.0}, "needs a class-conditional model"),
    ({"eval.guidance_scales": (0.0, 2.0)}, "needs a class-conditional model"),
    ({"model.cond_drop_prob": 0.1}, "label dropout needs a class-conditional model"),
], ids=["scale", "sweep", "dropout"])
def test_validate_config_rejects_guidance_on_an_unconditional_model(fields, needle):
    import digits_cond

    config = digits_cond.get_config()
    config.model.num_classes = 0
    config.model.cond_drop_prob = 0.0
    config.sample.guidance_scale = 1.0
    config.eval.guidance_scales = ()
    for field, value in fields.items():
        section, name = field.split(".")
        config[section][name] = value
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert needle in str(error.value), str(error.value)


@pytest.mark.parametrize("field,value,needle", [
    ("model.cond_drop_prob", 1.5, "config.model.cond_drop_prob=1.5"),
    ("train.cond_drop_schedule", "cosine", "config.train.cond_drop_schedule='cosine'"),
    ("sample.guidance_scale", -1.0, "config.sample.guidance_scale=-1.0"),
    ("sample.guidance_rescale", 2.0, "config.sample.guidance_rescale=2.0"),
    ("eval.guidance_scales", (1.0, -2.0), "config.eval.guidance_scales"),
])
def test_validate_config_rejects_bad_guidance_fields(field, value, needle):
    import digits_cond

    config = digits_cond.get_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert needle in str(error.value), str(error.value)


def test_guidance_without_label_dropout_is_rejected():
    import digits_cond

    config = digits_cond.get_config()
    config.model.cond_drop_prob = 0.0
    with pytest.raises(ConfigError, match="never learned"):
        validate_config(config)


# --- sample.py ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A run directory holding an (untrained) tiny class-conditional digits U-Net."""
    import json

    import digits_cond
    from jaxdiff.checkpoint import Checkpointer
    from jaxdiff.workdir import write_json

    workdir = str(tmp_path_factory.mktemp("cond") / "run")
    config = digits_cond.get_config()
    config.model.dim = 8
    config.model.dim_mults = (1,)
    config.diffusion.timesteps = 10
    config.sample.steps = 2
    model, optimizer = build_model(config), build_optimizer(config)
    state = init_train_state(config, model, optimizer, (8, 8, 1))
    os.makedirs(workdir)
    write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
    write_json(os.path.join(workdir, "run.json"), {"data_shape": [8, 8, 1], "data_name": "digits",
                                                   "num_classes": 10, "standardizer": None})
    checkpointer = Checkpointer(workdir)
    checkpointer.save(1, state)
    checkpointer.wait()
    checkpointer.close()
    return workdir


def run_sample_script(*args):
    return subprocess.run([sys.executable, "sample.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_sample_script_writes_one_row_per_class_and_one_column_per_scale(conditional_run, tmp_path):
    from PIL import Image

    out = str(tmp_path / "guided.npz")
    result = run_sample_script("--workdir", conditional_run, "--labels", "0,1,2",
                               "--guidance_scale", "0,1,3", "--num_samples", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    with np.load(out) as saved:
        assert saved["samples"].shape == (18, 8, 8, 1) and saved["samples"].dtype == np.uint8
        np.testing.assert_array_equal(saved["labels"], np.repeat([0, 1, 2], 6))
        np.testing.assert_array_equal(saved["guidance_scale"], np.tile([0, 0, 1, 1, 3, 3], 3))
    with Image.open(str(tmp_path / "guided.png")) as grid:  # 3 rows x (3 scales x 2) columns
        width, height = grid.size  # (6 * 9 + 1, 3 * 9 + 1) pixels, maybe zoomed for display
        assert width * (3 * 9 + 1) == height * (6 * 9 + 1)


@pytest.mark.slow
@pytest.mark.parametrize("flags,needle", [
    (["--labels", "0,12"], "--labels=0,12 is invalid: label 12 is outside [0, num_classes=10)"),
    (["--labels", "a,b"], "--labels='a,b' is invalid"),
    (["--guidance_scale", "3"], "--guidance_scale=3 is invalid without --labels"),
    (["--labels", "1", "--guidance_scale", "-2"], "--guidance_scale=-2 is invalid"),
], ids=["label_range", "label_text", "scale_without_labels", "negative_scale"])
def test_sample_script_rejects_bad_guidance_flags(conditional_run, tmp_path, flags, needle):
    result = run_sample_script("--workdir", conditional_run, "--out", str(tmp_path / "x.npz"),
                               *flags)
    assert result.returncode == 2 and needle in result.stderr, result.stderr
