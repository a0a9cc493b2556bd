"""Schedule tables against float64 NumPy written from the papers (never from jaxdiff's code).

The references (tests/oracles.py):
  linear   Ho et al. 2020, sec. 4: beta from 1e-4 to 0.02 over T = 1000, both scaled by 1000 / T
           for other T (as denoising-diffusion-pytorch / improved-diffusion), clipped to 0.999.
  cosine   Nichol & Dhariwal 2021, eq. 17: abar(t) = f(t) / f(0), f(t) = cos((t/T + s)/(1 + s) pi/2)^2.
  sigmoid  Jabri et al. 2022 as in denoising-diffusion-pytorch's `sigmoid_beta_schedule`.
  tables   Ho et al. 2020 eqs. 4, 6, 7 (posterior), Kingma et al. 2021 (snr).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff

import oracles

KINDS = ("linear", "cosine", "sigmoid")
MAX_BETA = oracles.MAX_BETA

# DESIGN.md's list plus the extra tables of denoising-diffusion-pytorch.
TABLES = tuple(oracles.tables(np.array([0.1])).keys())


def assert_table_close(table, expected, name):
    """float32 storage of a float64 value: relative error <= 2**-24 ~ 6e-8; rtol 1e-6 leaves room
    for float64 rounding-order differences. atol only covers float32's subnormal range (the
    exact zeros, posterior_variance[0] and posterior_mean_coef2[0], must be exact)."""
    table = np.asarray(table)
    assert table.dtype == np.float32, (name, table.dtype)
    assert table.shape == expected.shape, (name, table.shape)
    np.testing.assert_allclose(table.astype(np.float64), expected, rtol=1e-6, atol=1e-37,
                               err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1, 10, 37, 1000])
def test_tables_match_float64_reference(kind, T):
    s = jaxdiff.make_schedule(kind, timesteps=T)
    assert isinstance(s, jaxdiff.Schedule)
    assert s.timesteps == T
    expected = oracles.schedule(kind, T)
    assert set(TABLES) <= set(s._fields)
    for name in TABLES:
        assert_table_close(getattr(s, name), expected[name], name)


@pytest.mark.parametrize("kind", KINDS)
def test_default_timesteps_is_1000(kind):
    s = jaxdiff.make_schedule(kind)
    assert s.timesteps == 1000
    assert_table_close(s.alphas_cumprod, oracles.alphas_cumprod(kind, 1000), "alphas_cumprod")


def test_posterior_edge_values():
    """abar_{-1} = 1: the first posterior variance is exactly 0, its log is log(1e-20), and the
    posterior mean at t = 0 is x0 itself (coef1 = 1, coef2 = 0)."""
    s = jaxdiff.make_schedule("linear", timesteps=1000)
    assert s.posterior_variance[0] == 0.0
    np.testing.assert_allclose(s.posterior_log_variance_clipped[0], np.log(1e-20), rtol=1e-6)
    np.testing.assert_allclose(s.posterior_mean_coef1[0], 1.0, rtol=1e-6)
    assert s.posterior_mean_coef2[0] == 0.0
    assert s.alphas_cumprod_prev[0] == 1.0
    # alphas_cumprod_prev is alphas_cumprod shifted by one
    np.testing.assert_array_equal(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])


@pytest.mark.parametrize("T", [21, 37, 100, 250, 1000, 4000])
def test_linear_endpoints_scale_with_T(T):
    betas = jaxdiff.make_schedule("linear", timesteps=T).betas
    np.testing.assert_allclose(betas[0], 1e-4 * 1000 / T, rtol=1e-6)
    np.testing.assert_allclose(betas[-1], 0.02 * 1000 / T, rtol=1e-6)
    assert betas.max() < MAX_BETA
    # evenly spaced in between
    np.testing.assert_allclose(np.diff(betas.astype(np.float64)),
                               (0.02 - 1e-4) * 1000 / T / (T - 1), rtol=2e-3 if T > 100 else 1e-4)


@pytest.mark.parametrize("T", [2, 10, 20])
def test_linear_betas_are_clipped_for_small_T(T):
    """For T <= 20 the scaled end 20 / T reaches 1: clipped to 0.999, the rest unchanged."""
    betas = np.asarray(jaxdiff.make_schedule("linear", timesteps=T).betas, np.float64)
    raw = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)
    assert betas[-1] == np.float32(MAX_BETA)
    np.testing.assert_allclose(betas, np.minimum(raw, MAX_BETA), rtol=1e-6)
    np.testing.assert_allclose(betas[0], 0.1 / T, rtol=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "sigmoid"])
@pytest.mark.parametrize("T", [1, 10, 37, 1000])
def test_cosine_and_sigmoid_betas_are_clipped_to_0999(kind, T):
    betas = jaxdiff.make_schedule(kind, timesteps=T).betas
    assert betas.max() <= np.float32(MAX_BETA)
    assert betas.min() >= 0.0
    # the last beta of both is 1 - abar(T)/abar(T-1) ~ 1 (abar(T) ~ 0): the clip is active
    assert betas[-1] == np.float32(MAX_BETA)


@pytest.mark.parametrize("kind,kwargs", [
    ("linear", dict(beta_start=2e-4, beta_end=0.01)),
    ("cosine", dict(s=0.02)),
    ("sigmoid", dict(start=-2.0, end=4.0, tau=0.7)),
])
def test_schedule_parameters_are_used(kind, kwargs):
    s = jaxdiff.make_schedule(kind, timesteps=50, **kwargs)
    expected = oracles.schedule(kind, 50, **kwargs)
    for name in ("betas", "alphas_cumprod", "posterior_variance"):
        assert_table_close(getattr(s, name), expected[name], name)
    default = oracles.alphas_cumprod(kind, 50)
    assert np.abs(expected["alphas_cumprod"] - default).max() > 1e-3  # the kwargs matter


def test_user_given_betas():
    betas = np.array([0.1, 0.2, 0.3, 0.05])
    for given in (betas, list(betas), jnp.asarray(betas)):
        s = jaxdiff.make_schedule(given)
        assert s.timesteps == 4
        expected = oracles.tables(betas if not isinstance(given, jax.Array)
                                  else np.asarray(given, np.float64))
        for name in TABLES:
            assert_table_close(getattr(s, name), expected[name], name)
    # hand values: abar = 0.9, 0.72, 0.504, 0.4788
    np.testing.assert_allclose(jaxdiff.make_schedule(betas).alphas_cumprod,
                               [0.9, 0.72, 0.504, 0.4788], rtol=1e-6)
    assert jaxdiff.make_schedule(betas, timesteps=4).timesteps == 4
    s = jaxdiff.schedule_from_betas(betas)
    assert_table_close(s.snr, oracles.tables(betas)["snr"], "snr")


def test_user_betas_timesteps_mismatch_names_both():
    with pytest.raises(ValueError) as error:
        jaxdiff.make_schedule(np.array([0.1, 0.2, 0.3]), timesteps=5)
    assert "5" in str(error.value) and "3" in str(error.value)


def test_schedule_is_a_pytree_usable_inside_jit():
    s = jaxdiff.make_schedule("cosine", timesteps=50)
    leaves = jax.tree_util.tree_leaves(s)
    assert len(leaves) == len(s._fields)
    assert all(leaf.dtype == np.float32 and leaf.shape == (50,) for leaf in leaves)

    traces = []

    @jax.jit
    def read(sched, t):
        traces.append(1)
        # timesteps is static (from the table shape) so it can size arrays inside jit
        assert sched.timesteps == 50
        ramp = jnp.arange(sched.timesteps, dtype=jnp.float32)
        return sched.alphas_cumprod[t] * sched.timesteps, (ramp * sched.betas).sum()

    for kind in KINDS:  # same shapes: one trace, values from the schedule passed in (not baked in)
        sched = jaxdiff.make_schedule(kind, timesteps=50)
        ref = oracles.schedule(kind, 50)
        value, weighted = read(sched, 10)
        np.testing.assert_allclose(value, ref["alphas_cumprod"][10] * 50, rtol=1e-6)
        np.testing.assert_allclose(weighted, (np.arange(50) * ref["betas"]).sum(), rtol=1e-5)
    assert len(traces) == 1

    doubled = jax.tree_util.tree_map(lambda x: 2 * x, s)
    assert isinstance(doubled, jaxdiff.Schedule) and doubled.timesteps == 50
    np.testing.assert_allclose(doubled.betas, 2 * np.asarray(s.betas))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(kind="quadratic"), "quadratic"),
    (dict(kind="Linear", timesteps=10), "Linear"),
    (dict(kind="linear", timesteps=0), "timesteps=0"),
    (dict(kind="linear", timesteps=-5), "-5"),
    (dict(kind="cosine", timesteps=2.5), "2.5"),
    (dict(kind="sigmoid", timesteps=True), "True"),
    (dict(kind=np.array([0.1, 0.0])), "0.0"),
    (dict(kind=np.array([0.1, 1.0])), "1.0"),
    (dict(kind=np.array([0.1, 0.2, 1.5])), "1.5"),
    (dict(kind=np.array([-0.1, 0.2])), "-0.1"),
    (dict(kind=np.array([0.1, np.nan])), "nan"),
    (dict(kind="linear", timesteps=10, beta_strat=1e-4), "beta_strat"),
    (dict(kind="sigmoid", timesteps=10, start=3.0, end=-3.0), "start=3.0"),
])
def test_bad_arguments_raise_valueerror_naming_the_value(kwargs, needle):
    with pytest.raises(ValueError) as error:
        jaxdiff.make_schedule(**kwargs)
    assert needle in str(error.value), str(error.value)
