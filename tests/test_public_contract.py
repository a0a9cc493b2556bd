"""The calls of shared/DESIGN.md's "Public contract", exactly as written there.

```python
import jaxdiff
s = jaxdiff.make_schedule(kind, timesteps=1000, **kwargs)
x_t = jaxdiff.q_sample(s, x0, t, noise)
x0 = jaxdiff.ddpm_sample(model_fn, s, *, key, shape, objective="pred_noise", clip_x0=True,
                         variance="fixed_small", x_T=None, return_trajectory=False)
x0 = jaxdiff.ddim_sample(model_fn, s, *, key, shape, num_steps=50, eta=0.0,
                         objective="pred_noise", clip_x0=True, timestep_spacing="trailing",
                         x_T=None, return_trajectory=False)
```
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff

import oracles

ATTRIBUTES = ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
              "sqrt_one_minus_alphas_cumprod", "posterior_variance",
              "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")


def zero_model(x_t, t):
    return jnp.zeros_like(x_t)


@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
def test_make_schedule(kind):
    s = jaxdiff.make_schedule(kind, timesteps=1000)
    assert s.timesteps == 1000
    for name in ATTRIBUTES:
        table = getattr(s, name)
        assert table.dtype == np.float32 and table.shape == (1000,), name
    assert jaxdiff.make_schedule(kind).timesteps == 1000  # timesteps defaults to 1000
    small = jaxdiff.make_schedule(kind, timesteps=40)
    assert small.timesteps == 40 and small.betas.shape == (40,)
    # s is a pytree usable inside jit
    value = jax.jit(lambda sched: sched.alphas_cumprod[-1] * sched.timesteps)(small)
    np.testing.assert_allclose(value, np.asarray(small.alphas_cumprod)[-1] * 40, rtol=1e-6)
    # posterior_log_variance_clipped = log(max(var, 1e-20))
    np.testing.assert_allclose(s.posterior_log_variance_clipped,
                               np.log(np.maximum(np.asarray(s.posterior_variance, np.float64), 1e-20)),
                               rtol=1e-5)


def test_make_schedule_kwargs_named_in_the_contract():
    """cosine s = 0.008 and sigmoid start = -3, end = 3, tau = 1 are the defaults."""
    pairs = [(jaxdiff.make_schedule("cosine", timesteps=100, s=0.008),
              jaxdiff.make_schedule("cosine", timesteps=100)),
             (jaxdiff.make_schedule("sigmoid", timesteps=100, start=-3, end=3, tau=1),
              jaxdiff.make_schedule("sigmoid", timesteps=100))]
    for given, default in pairs:
        np.testing.assert_allclose(given.alphas_cumprod, default.alphas_cumprod, rtol=1e-6)
    other = jaxdiff.make_schedule("cosine", timesteps=100, s=0.05)
    assert np.abs(np.asarray(other.alphas_cumprod) - np.asarray(pairs[0][1].alphas_cumprod)).max() > 1e-3


def test_q_sample():
    s = jaxdiff.make_schedule("linear", timesteps=1000)
    x0 = jnp.ones((2, 4, 4, 1))
    noise = jnp.full((2, 4, 4, 1), 2.0)
    t = jnp.array([0, 999], jnp.int32)
    x_t = jaxdiff.q_sample(s, x0, t, noise)
    assert x_t.shape == x0.shape
    abar = oracles.alphas_cumprod("linear", 1000)[[0, 999]]
    np.testing.assert_allclose(x_t[:, 0, 0, 0], np.sqrt(abar) + 2 * np.sqrt(1 - abar), rtol=1e-6)


def test_sampler_signatures():
    ddpm = inspect.signature(jaxdiff.ddpm_sample).parameters
    ddim = inspect.signature(jaxdiff.ddim_sample).parameters
    assert list(ddpm)[:2] == ["model_fn", "s"] and list(ddim)[:2] == ["model_fn", "s"]
    expected_ddpm = dict(objective="pred_noise", clip_x0=True, variance="fixed_small", x_T=None,
                         return_trajectory=False)
    expected_ddim = dict(num_steps=50, eta=0.0, objective="pred_noise", clip_x0=True,
                         timestep_spacing="trailing", x_T=None, return_trajectory=False)
    for params, expected in ((ddpm, expected_ddpm), (ddim, expected_ddim)):
        for name in ("key", "shape"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
            assert params[name].default is inspect.Parameter.empty
        for name, default in expected.items():
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
            assert params[name].default == default, name


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_ddpm_sample(objective):
    s = jaxdiff.make_schedule("cosine", timesteps=40)
    key = jax.random.key(0)
    x0 = jaxdiff.ddpm_sample(zero_model, s, key=key, shape=(2, 4, 4, 1), objective=objective,
                             clip_x0=True, variance="fixed_small", x_T=None,
                             return_trajectory=False)
    assert x0.shape == (2, 4, 4, 1) and np.isfinite(np.asarray(x0)).all()
    x_T = jnp.ones((2, 3))
    x0, trajectory = jaxdiff.ddpm_sample(zero_model, s, key=key, shape=(2, 3), objective=objective,
                                         clip_x0=False, variance="fixed_large", x_T=x_T,
                                         return_trajectory=True)
    assert x0.shape == (2, 3) and trajectory.shape == (41, 2, 3)
    np.testing.assert_array_equal(trajectory[0], x_T)
    np.testing.assert_array_equal(trajectory[-1], x0)


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_ddim_sample(spacing):
    s = jaxdiff.make_schedule("sigmoid", timesteps=100)
    key = jax.random.key(0)
    objectives = ("pred_noise", "pred_x0", "pred_v") if spacing == "trailing" else ("pred_v",)
    for objective in objectives:
        x0 = jaxdiff.ddim_sample(zero_model, s, key=key, shape=(3, 2), num_steps=10, eta=1.0,
                                 objective=objective, clip_x0=True, timestep_spacing=spacing,
                                 x_T=None, return_trajectory=False)
        assert x0.shape == (3, 2) and np.isfinite(np.asarray(x0)).all()
    x_T = jax.random.normal(jax.random.key(1), (3, 2))
    x0, trajectory = jaxdiff.ddim_sample(zero_model, s, key=key, shape=(3, 2), num_steps=50,
                                         eta=0.0, objective="pred_noise", clip_x0=True,
                                         timestep_spacing=spacing, x_T=x_T, return_trajectory=True)
    assert x0.shape == (3, 2) and trajectory.shape == (51, 3, 2)
    np.testing.assert_array_equal(trajectory[0], x_T)
    np.testing.assert_array_equal(trajectory[-1], x0)


def test_defaults_are_the_documented_values():
    """A call with only key and shape equals one with every documented default spelt out."""
    s = jaxdiff.make_schedule("linear", timesteps=100)
    model = lambda x_t, t: 3.0 * x_t  # noqa: E731  (x0 outside [-1, 1]: clip_x0 matters)
    key = jax.random.key(4)
    ddpm_default = jaxdiff.ddpm_sample(model, s, key=key, shape=(4, 2))
    ddpm_explicit = jaxdiff.ddpm_sample(model, s, key=key, shape=(4, 2), objective="pred_noise",
                                        clip_x0=True, variance="fixed_small", x_T=None,
                                        return_trajectory=False)
    np.testing.assert_array_equal(ddpm_default, ddpm_explicit)
    ddim_default = jaxdiff.ddim_sample(model, s, key=key, shape=(4, 2))
    ddim_explicit = jaxdiff.ddim_sample(model, s, key=key, shape=(4, 2), num_steps=50, eta=0.0,
                                        objective="pred_noise", clip_x0=True,
                                        timestep_spacing="trailing", x_T=None,
                                        return_trajectory=False)
    np.testing.assert_array_equal(ddim_default, ddim_explicit)
    assert np.abs(np.asarray(ddim_default)).max() <= 1.0  # clip_x0=True by default


def test_ddim_eta0_all_steps_is_deterministic():
    s = jaxdiff.make_schedule("linear", timesteps=30)
    model = lambda x_t, t: 0.5 * x_t  # noqa: E731
    x_T = jax.random.normal(jax.random.key(0), (5, 2))
    outs = [jaxdiff.ddim_sample(model, s, key=jax.random.key(k), shape=(5, 2), num_steps=30,
                                eta=0.0, clip_x0=False, timestep_spacing="trailing", x_T=x_T)
            for k in (1, 2)]
    np.testing.assert_array_equal(outs[0], outs[1])
    outs = [jaxdiff.ddim_sample(model, s, key=jax.random.key(k), shape=(5, 2), num_steps=30,
                                eta=1.0, clip_x0=False, timestep_spacing="trailing", x_T=x_T)
            for k in (1, 2)]
    assert not np.allclose(outs[0], outs[1])


def test_the_maths_imports_only_jax_and_numpy():
    """The maths modules (and what they import from jaxdiff) never import Flax, Orbax, TFDS or
    the training code: read from their source, so a lazy import inside a function counts too."""
    import ast
    import pathlib
    import sys

    maths = {"schedules", "diffusion", "losses", "samplers", "ode_samplers", "editing",
             "sampling", "guidance", "compilation", "gaussians", "likelihood"}
    root = pathlib.Path(jaxdiff.__file__).parent
    # diffrax: JAX's ODE library (the likelihood's adaptive solver), itself JAX only
    allowed = {"jax", "numpy", "jaxdiff", "tqdm", "diffrax"} | set(sys.stdlib_module_names)
    for name in sorted(maths):
        tree = ast.parse((root / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top in allowed, f"{name}.py imports {module}"
                if top == "jaxdiff":
                    assert module.split(".")[1] in maths, f"{name}.py imports {module}"
