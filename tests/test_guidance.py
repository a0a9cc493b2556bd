"""Classifier-free guidance (jaxdiff.guidance): the guided model wrapper, the rescaling, guided
sampling and its argument checks.

References are independent of the code under test: guidance and rescaling are recomputed in
NumPy float64 from their papers' formulas (Ho & Salimans 2022, eq. 6, in diffusers' convention;
Lin et al. 2024, eqs. 15-16), and sampler runs are compared with runs of the same sampler on a
model whose conditional / unconditional prediction is known in closed form.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import ode_samplers, samplers
from jaxdiff.guidance import classifier_free_guidance, guide
from jaxdiff.models import MLPDenoiser

import oracles
from helpers import NULL, label_model


def sample(sampler, sched, model_fn, labels, shape, **kwargs):
    """Samples of a bounded x0 predictor (so that no step amplifies rounding)."""
    common = dict(key=jax.random.key(7), shape=shape, cond={"labels": jnp.asarray(labels)},
                  clip_x0=False, objective="pred_x0", **kwargs)
    if sampler == "ddim":
        return jaxdiff.ddim_sample(model_fn, sched, num_steps=6, eta=0.5, **common)
    if sampler == "dpm_solver":
        return jaxdiff.dpm_solver_sample(model_fn, sched, num_steps=6, order=3, **common)
    if sampler == "karras":  # real-valued t, a stochastic (churn) Heun
        return jaxdiff.karras_sample(model_fn, sched, num_steps=4, churn=1.0, **common)
    return jaxdiff.ddpm_sample(model_fn, sched, **common)


# --- the guided prediction ----------------------------------------------------------------------

def _guided_and_reference(sampler, labels, reference_labels, shape, scale, **kwargs):
    """(guided, reference) samples, op by op (exact arithmetic of the formulas) and compiled,
    on a short schedule (op by op is slow)."""
    # 10 steps (op by op is slow); the Karras sampler's VE form needs a schedule whose
    # sigma_max (2.6e8 at T = 10) leaves float32 some digits: T = 30, sigma_max = 939
    sched = jaxdiff.make_schedule("linear", timesteps=30 if sampler == "karras" else 10)

    def both():
        guided = sample(sampler, sched, label_model, labels, shape, guidance_scale=scale,
                        null_cond={"labels": NULL}, **kwargs)
        return np.asarray(guided), np.asarray(sample(sampler, sched, label_model,
                                                     reference_labels, shape, **kwargs))

    with jax.disable_jit():
        eager = both()
    return eager, both()


@pytest.mark.parametrize("sampler,self_condition", [
    ("ddpm", False), ("ddpm", True), ("ddim", False), ("ddim", True), ("dpm_solver", False),
    ("dpm_solver", True), ("karras", False), ("karras", True)])
def test_scale_one_is_plain_conditional_sampling_exactly(sampler, self_condition):
    """Bit for bit when run op by op. Compiled, the two programs differ (one model call on a
    doubled batch, then a slice) and XLA may fuse multiply-adds differently: equal to rounding."""
    labels = np.array([0, 1, 2, 1])
    (guided, plain), (guided_jit, plain_jit) = _guided_and_reference(
        sampler, labels, labels, (4, 3, 2, 1), 1.0, self_condition=self_condition)
    np.testing.assert_array_equal(guided, plain)
    # the Karras sampler's state starts at sigma_max = 939 times the noise: its rounding (ulp
    # 6e-5) shrinks with sigma, to ~6e-6 at the end (measured); the others' stays at 1e-7
    atol = 2e-5 if sampler == "karras" else 1e-6
    np.testing.assert_allclose(guided_jit, plain_jit, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(guided_jit, plain, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm_solver", "karras"])
def test_scale_zero_is_the_null_label_prediction(sampler):
    labels = np.array([0, 1, 2])
    (guided, unconditional), (guided_jit, unconditional_jit) = _guided_and_reference(
        sampler, labels, np.full(3, NULL), (3, 5), 0.0)
    np.testing.assert_array_equal(guided, unconditional)
    atol = 2e-5 if sampler == "karras" else 1e-6  # see the test above
    np.testing.assert_allclose(guided_jit, unconditional_jit, rtol=1e-6, atol=atol)
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


def _eps_pair(x, t, labels):
    """Closed-form eps predictions (conditional and null) of a label-dependent Gaussian model,
    on the 30-step linear schedule."""
    abar = oracles.alphas_cumprod("linear", 30)[np.asarray(t)][:, None]
    mean = 0.4 * (np.asarray(labels, np.float64)[:, None] - 1.0)
    x = np.asarray(x, np.float64)
    eps_cond = (x - np.sqrt(abar) * mean) / np.sqrt(1 - abar) * 0.7
    eps_uncond = x / np.sqrt(1 - abar) * 0.7
    return abar, x, eps_cond, eps_uncond


@pytest.mark.parametrize("objective", ["pred_x0", "pred_v"])
def test_guiding_x0_or_v_outputs_is_guiding_eps(linear30, objective):
    """eps, x0 and v are affine in the output with weights summing to one: guiding the raw x0 or
    v output and converting gives exactly the guided eps."""
    x = jax.random.normal(jax.random.key(3), (5, 2))
    t = jnp.array([0, 3, 11, 20, 29])
    labels = np.array([0, 1, 2, 0, 1])
    abar, x64, eps_cond, eps_uncond = _eps_pair(x, t, labels)

    def as_objective(eps):  # float64 conversions, from x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
        x0 = (x64 - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
        return oracles.target(objective, x0, eps, abar)

    outputs = {lab: as_objective(_eps_pair(x, t, np.full(5, lab))[2]) for lab in range(3)}
    outputs[NULL] = as_objective(eps_uncond)

    table = jnp.asarray(np.stack([outputs[k] for k in range(4)]), jnp.float32)  # [label, B, D]

    def model(x, t, labels):  # row i of the doubled batch is row i % 5 of x
        return table[labels, jnp.arange(labels.shape[0]) % 5]

    for scale in (0.0, 1.0, 3.0):
        guided = classifier_free_guidance(model, scale, {"labels": NULL})
        out = guided(x, t, labels=jnp.asarray(labels))
        eps = jaxdiff.model_predictions(linear30, out, x, t, objective).eps
        expected = eps_uncond + scale * (eps_cond - eps_uncond)
        np.testing.assert_allclose(eps, expected, rtol=2e-4, atol=2e-4 * max(scale, 1.0))


def test_the_three_objectives_give_the_same_guided_samples(linear30):
    """Whole DDIM runs: an eps model, and the same model expressed as x0 and as v."""
    shape = (4, 2)
    labels = jnp.array([0, 1, 2, 2])

    def eps_model(x, t, labels):
        mean = 0.4 * (labels.astype(jnp.float32)[:, None] - 1.0) * (labels != NULL)[:, None]
        abar = jnp.asarray(linear30.alphas_cumprod)[t][:, None]
        return 0.7 * (x - jnp.sqrt(abar) * mean) / jnp.sqrt(1 - abar)

    def converted(objective):
        def model(x, t, labels):
            eps = eps_model(x, t, labels)
            x0 = jaxdiff.predict_x0_from_eps(linear30, x, t, eps)
            return x0 if objective == "pred_x0" else jaxdiff.predict_v(linear30, x0, t, eps)
        return model

    runs = {objective: jaxdiff.ddim_sample(
        eps_model if objective == "pred_noise" else converted(objective), linear30,
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


def test_guidance_with_a_flax_model_and_self_conditioning(linear30):
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
        guided = sample("ddim", linear30, fn, labels, (5, 2), guidance_scale=scale, **kwargs)
        plain = sample("ddim", linear30, fn, reference, (5, 2), self_condition=True)
        np.testing.assert_allclose(guided, plain, rtol=1e-5, atol=1e-5)


# --- compile once ---------------------------------------------------------------------------------

TRACES = {"model": 0}


def counted_model(params, x, t, labels):
    TRACES["model"] += 1  # runs only while tracing
    return label_model(x, t, labels) * params["w"]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm_solver", "karras"])
def test_guided_sampler_compiles_once(linear30, sampler):
    """New keys, scales, rescales, null labels, parameters (and eta, churn, rho, SDEdit's x_start,
    inpainting's known values and mask) reuse the compiled guided loop."""
    shape = (6, 3)  # unique to this test
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    loops = {"ddpm": samplers._ddpm_loop, "ddim": samplers._ddim_loop,
             "dpm_solver": ode_samplers._dpm_loop, "karras": ode_samplers._karras_loop}
    cache = loops[sampler]._cache_size
    calls = {"ddpm": jaxdiff.ddpm_sample, "ddim": functools.partial(jaxdiff.ddim_sample,
                                                                       num_steps=5),
             "dpm_solver": functools.partial(jaxdiff.dpm_solver_sample, num_steps=5),
             "karras": functools.partial(jaxdiff.karras_sample, num_steps=5)}
    runs = iter(range(100))

    def run(scale, rescale, w):
        fn = functools.partial(counted_model, {"w": jnp.float32(w)})
        i = next(runs)
        edit = {"x_start": jnp.full(shape, 0.1 * i), "t_start": 20}
        if sampler == "ddim":
            edit.update(eta=0.1 * i, known=jnp.full(shape, 0.2 * i), mask=(jnp.arange(3) < i % 3))
        if sampler == "ddpm":
            edit.update(known=jnp.full(shape, 0.2 * i), mask=(jnp.arange(3) < i % 3))
        if sampler == "karras":
            edit.update(churn=0.5 * i, rho=7.0 - i)
        return calls[sampler](fn, linear30, key=jax.random.key(i), shape=shape,
                              cond={"labels": labels}, guidance_scale=scale,
                              guidance_rescale=rescale, null_cond={"labels": NULL}, **edit)

    first = run(0.0, 0.0, 1.0)
    traced, size = TRACES["model"], cache()
    assert traced >= 1
    outs = [run(s, r, w) for s, r, w in ((1.0, 0.0, 1.0), (3.0, 0.5, 1.0), (7.5, 0.7, 1.2))]
    # one trace per call finds the captured arrays; nothing compiles again
    assert TRACES["model"] == traced + len(outs) and cache() == size
    assert all(not np.allclose(a, first) for a in outs)  # the new values were really used
    # per-example scales are a new shape: one more compile, then none
    run(np.linspace(0, 3, 6), 0.0, 1.0)
    assert cache() == size + 1
    run(np.linspace(1, 5, 6), 0.3, 0.9)
    assert cache() == size + 1


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
def test_bad_guidance_arguments_raise_naming_the_value(linear30, kwargs, needle):
    with pytest.raises(ValueError) as error:
        _ddim(linear30, **kwargs)
    assert needle in str(error.value), str(error.value)


