"""The calls of shared/DESIGN.md's "Public contract", exactly as written there."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff

ATTRIBUTES = ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
              "sqrt_one_minus_alphas_cumprod", "posterior_variance",
              "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")


def test_public_contract():
    for kind in ("linear", "cosine", "sigmoid"):
        s = jaxdiff.make_schedule(kind, timesteps=40)
        assert s.timesteps == 40
        for name in ATTRIBUTES:
            table = getattr(s, name)
            assert table.dtype == np.float32 and table.shape == (40,)
    assert jaxdiff.make_schedule("linear").timesteps == 1000

    x0 = jnp.ones((2, 4, 4, 1))
    t = jnp.array([0, 39], jnp.int32)
    x_t = jaxdiff.q_sample(s, x0, t, jnp.zeros_like(x0))
    assert x_t.shape == x0.shape

    model_fn = lambda x_t, t: jnp.zeros_like(x_t)  # noqa: E731
    key = jax.random.key(0)
    for objective in ("pred_noise", "pred_x0", "pred_v"):
        x = jaxdiff.ddpm_sample(model_fn, s, key=key, shape=(2, 4, 4, 1), objective=objective,
                                clip_x0=True, variance="fixed_small", x_T=None,
                                return_trajectory=False)
        assert x.shape == (2, 4, 4, 1)
        x, trajectory = jaxdiff.ddim_sample(model_fn, s, key=key, shape=(3, 2), num_steps=50 // 5,
                                            eta=0.0, objective=objective, clip_x0=True,
                                            timestep_spacing="trailing", x_T=None,
                                            return_trajectory=True)
        assert x.shape == (3, 2) and trajectory.shape == (11, 3, 2)
    x = jaxdiff.ddpm_sample(model_fn, s, key=key, shape=(2, 3), variance="fixed_large",
                            x_T=jnp.ones((2, 3)), return_trajectory=False)
    assert x.shape == (2, 3)
    for spacing in ("trailing", "leading", "linspace"):
        x = jaxdiff.ddim_sample(model_fn, s, key=key, shape=(2, 3), timestep_spacing=spacing,
                                num_steps=8, eta=1.0)
        assert np.isfinite(np.asarray(x)).all()


def test_ddim_default_num_steps_is_50():
    s = jaxdiff.make_schedule("linear", timesteps=100)
    _, trajectory = jaxdiff.ddim_sample(lambda x, t: x * 0, s, key=jax.random.key(0),
                                        shape=(1, 2), return_trajectory=True)
    assert trajectory.shape[0] == 51
