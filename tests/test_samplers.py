"""Sampler mechanics: time grids, shapes, trajectories, self-conditioning, one compile, errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import samplers


@pytest.fixture(scope="module")
def s():
    return jaxdiff.make_schedule("linear", timesteps=100)


def test_ddim_timesteps_trailing_matches_denoising_diffusion_pytorch():
    pairs = jaxdiff.ddim_timesteps(1000, 50, "trailing")
    assert pairs[0].tolist() == [999, 979] and pairs[-2].tolist() == [39, 19]
    assert pairs[-1].tolist() == [19, -1] and len(pairs) == 50
    assert jaxdiff.ddim_timesteps(10, 3, "trailing")[:, 0].tolist() == [9, 5, 2]
    assert jaxdiff.ddim_timesteps(10, 10, "trailing")[:, 0].tolist() == list(range(9, -1, -1))


def test_ddim_timesteps_leading_and_linspace_follow_diffusers():
    leading = jaxdiff.ddim_timesteps(1000, 50, "leading")
    assert leading[:, 0].tolist() == list(range(980, -1, -20))
    assert leading[-1].tolist() == [0, -1]
    linspace = jaxdiff.ddim_timesteps(1000, 50, "linspace")
    expected = np.round(np.linspace(0, 999, 50)).astype(int)[::-1]
    assert linspace[:, 0].tolist() == expected.tolist()
    assert linspace[:-1, 1].tolist() == expected[1:].tolist()
    assert jaxdiff.ddim_timesteps(10, 3, "leading")[:, 0].tolist() == [6, 3, 0]
    assert jaxdiff.ddim_timesteps(10, 3, "linspace")[:, 0].tolist() == [9, 4, 0]


@pytest.mark.parametrize("shape", [(3, 5), (2, 8, 8, 3)])
def test_shapes_and_trajectory(s, shape):
    model = lambda x, t: 0.1 * x  # noqa: E731
    x_T = jax.random.normal(jax.random.key(1), shape)
    x, traj = jaxdiff.ddpm_sample(model, s, key=jax.random.key(0), shape=shape, x_T=x_T,
                                  return_trajectory=True)
    assert x.shape == shape and traj.shape == (101,) + shape
    np.testing.assert_array_equal(traj[0], x_T)
    np.testing.assert_array_equal(traj[-1], x)
    x, traj = jaxdiff.ddim_sample(model, s, key=jax.random.key(0), shape=shape, num_steps=7,
                                  x_T=x_T, return_trajectory=True)
    assert traj.shape == (8,) + shape
    np.testing.assert_array_equal(traj[0], x_T)
    np.testing.assert_array_equal(traj[-1], x)


def test_clip_x0_keeps_samples_in_range(s):
    model = lambda x, t: -3.0 * x  # noqa: E731  (eps pointing far outside [-1, 1])
    x = jaxdiff.ddim_sample(model, s, key=jax.random.key(0), shape=(64, 2), num_steps=10)
    assert np.abs(np.asarray(x)).max() <= 1.0
    x = jaxdiff.ddim_sample(model, s, key=jax.random.key(0), shape=(64, 2), num_steps=10,
                            clip_x0=False)
    assert np.abs(np.asarray(x)).max() > 1.0


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_self_conditioning_feeds_back_the_previous_x0(s, sampler):
    """The model returns (as pred_x0) 0.5 * x_self_cond + 1: the first step sees zeros, so its
    x0 is 1; then 1.5, 1.75, ... Recording what it received checks the feedback."""
    received = []

    def model(x, t, x_self_cond):
        jax.debug.callback(lambda c: received.append(float(np.asarray(c).mean())), x_self_cond)
        return 0.5 * x_self_cond + 1.0

    kwargs = dict(key=jax.random.key(0), shape=(2, 3), objective="pred_x0", clip_x0=False,
                  self_condition=True)
    if sampler == "ddpm":
        jax.block_until_ready(jaxdiff.ddpm_sample(model, s, **kwargs))
    else:
        jax.block_until_ready(jaxdiff.ddim_sample(model, s, num_steps=5, **kwargs))
    expected = [2.0 * (1 - 0.5**k) for k in range(len(received))]
    np.testing.assert_allclose(received, expected, rtol=1e-6)
    assert received[0] == 0.0 and len(received) in (100, 5)


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, t):
        TRACES.append(1)
        return nn.Dense(x.shape[-1])(x)


TRACES = []


def module_level_model(params, x, t):
    TRACES.append(1)
    return x * params["w"]


def test_samplers_compile_once(s):
    TRACES.clear()
    for i in range(3):
        model = Tiny()  # a new module object each time: equal by value, same cache entry
        params = model.init(jax.random.key(i), jnp.zeros((1, 3)), jnp.zeros((1,), jnp.int32))
        before = len(TRACES)
        fn = functools.partial(model.apply, params)
        jaxdiff.ddim_sample(fn, s, key=jax.random.key(i), shape=(4, 3), num_steps=10,
                            eta=0.1 * i, x_T=jnp.full((4, 3), float(i)))
        jaxdiff.ddpm_sample(fn, s, key=jax.random.key(i), shape=(4, 3))
        traced = len(TRACES) - before
        assert traced == (2 if i == 0 else 0), (i, traced)
        jaxdiff.ddim_sample(functools.partial(module_level_model, {"w": jnp.float32(i)}), s,
                            key=jax.random.key(i), shape=(4, 3), num_steps=10)
    cache = samplers._ddim_loop._cache_size()
    count = len(TRACES)
    jaxdiff.ddim_sample(functools.partial(module_level_model, {"w": 1.0}), s,
                        key=jax.random.key(0), shape=(4, 3), num_steps=11)
    jaxdiff.ddim_sample(functools.partial(module_level_model, {"w": 1.0}), s,
                        key=jax.random.key(0), shape=(5, 3), num_steps=10)
    assert len(TRACES) == count + 2  # a new step count or shape does compile again
    assert samplers._ddim_loop._cache_size() == cache + 2


@pytest.mark.parametrize("call,needle", [
    (lambda s: jaxdiff.ddim_sample(lambda x, t: x, s, key=jax.random.key(0), shape=(2, 2),
                                   num_steps=0), "num_steps=0"),
    (lambda s: jaxdiff.ddim_sample(lambda x, t: x, s, key=jax.random.key(0), shape=(2, 2),
                                   num_steps=101), "num_steps=101"),
    (lambda s: jaxdiff.ddpm_sample(lambda x, t: x, s, key=jax.random.key(0), shape=(2, 2),
                                   variance="learned"), "learned"),
    (lambda s: jaxdiff.ddim_sample(lambda x, t: x, s, key=jax.random.key(0), shape=(2, 2),
                                   timestep_spacing="uniform"), "uniform"),
    (lambda s: jaxdiff.ddpm_sample(lambda x, t: x, s, key=jax.random.key(0), shape=(2, 2),
                                   objective="pred_eps"), "pred_eps"),
    (lambda s: jaxdiff.ddim_sample(lambda x, t: x, s, key=jax.random.key(0), shape=(2, 2),
                                   eta=-0.5), "eta=-0.5"),
    (lambda s: jaxdiff.ddim_sample(lambda x, t: x, s, key=jax.random.key(0), shape=(2, 2),
                                   x_T=jnp.zeros((3, 2))), "(3, 2)"),
])
def test_bad_arguments_name_the_value(s, call, needle):
    with pytest.raises(ValueError) as error:
        call(s)
    assert needle in str(error.value)
