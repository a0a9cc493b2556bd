"""Schedule tables against float64 NumPy written from the papers."""

import jax
import numpy as np
import pytest

import jaxdiff


def reference_betas(kind, T):
    if kind == "linear":  # Ho et al. 2020, scaled by 1000 / T
        return np.clip(np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T), 0, 0.999)
    t = np.linspace(0, T, T + 1) / T
    if kind == "cosine":  # Nichol & Dhariwal 2021, eq. 17
        f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    else:  # Jabri et al. 2022, start -3, end 3, tau 1
        sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
        f = (sig(3.0) - sig(t * 6.0 - 3.0)) / (sig(3.0) - sig(-3.0))
    abar = f / f[0]
    return np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)


def reference_tables(betas):
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    prev = np.append(1.0, abar[:-1])
    var = betas * (1 - prev) / (1 - abar)
    return {
        "betas": betas, "alphas": alphas, "alphas_cumprod": abar, "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": np.sqrt(abar), "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - abar),
        "log_one_minus_alphas_cumprod": np.log(1 - abar),
        "sqrt_recip_alphas_cumprod": 1 / np.sqrt(abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / abar - 1),
        "posterior_variance": var,
        "posterior_log_variance_clipped": np.log(np.maximum(var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(prev) / (1 - abar),
        "posterior_mean_coef2": (1 - prev) * np.sqrt(alphas) / (1 - abar),
        "snr": abar / (1 - abar),
    }


@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("T", [1, 10, 37, 1000])
def test_tables_match_float64_reference(kind, T):
    s = jaxdiff.make_schedule(kind, timesteps=T)
    assert s.timesteps == T
    expected = reference_tables(reference_betas(kind, T))
    for name, value in expected.items():
        table = getattr(s, name)
        assert table.dtype == np.float32 and table.shape == (T,), name
        # float32 storage of float64 values: relative error ~6e-8; tables spanning many orders
        # of magnitude (snr, log variance) are compared relatively too.
        np.testing.assert_allclose(table, value.astype(np.float32), rtol=2e-6, atol=1e-30,
                                   err_msg=name)


def test_linear_endpoints_scale_with_T():
    s = jaxdiff.make_schedule("linear", timesteps=250)
    np.testing.assert_allclose(s.betas[[0, -1]], [4e-4, 0.08], rtol=1e-6)
    assert jaxdiff.make_schedule("linear", timesteps=10).betas.max() == np.float32(0.999)


@pytest.mark.parametrize("kind", ["cosine", "sigmoid"])
def test_betas_are_clipped(kind):
    assert jaxdiff.make_schedule(kind, timesteps=1000).betas.max() <= np.float32(0.999)


def test_user_betas():
    betas = np.array([0.1, 0.2, 0.3])
    s = jaxdiff.make_schedule(betas)
    assert s.timesteps == 3
    np.testing.assert_allclose(s.alphas_cumprod, [0.9, 0.72, 0.504], rtol=1e-6)
    with pytest.raises(ValueError, match="timesteps=4"):
        jaxdiff.make_schedule(betas, timesteps=4)


def test_schedule_is_a_pytree_usable_in_jit():
    s = jaxdiff.make_schedule("cosine", timesteps=50)
    value = jax.jit(lambda sched: sched.alphas_cumprod[10] * sched.timesteps)(s)
    np.testing.assert_allclose(value, s.alphas_cumprod[10] * 50, rtol=1e-6)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(kind="quadratic"), "quadratic"),
    (dict(kind="linear", timesteps=0), "timesteps=0"),
    (dict(kind="linear", timesteps=-5), "timesteps=-5"),
    (dict(kind="cosine", timesteps=2.5), "timesteps=2.5"),
    (dict(kind=np.array([0.1, 0.0])), "betas[1]=0.0"),
    (dict(kind=np.array([0.1, 1.0])), "betas[1]=1.0"),
    (dict(kind=np.array([-0.1])), "betas[0]=-0.1"),
    (dict(kind=np.array([0.1, np.nan])), "betas[1]=nan"),
])
def test_bad_arguments_name_the_value(kwargs, needle):
    with pytest.raises(ValueError) as error:
        jaxdiff.make_schedule(**kwargs)
    assert needle in str(error.value)
