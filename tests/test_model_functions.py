"""Every kind of model function gives the current weights' samples, compiled once per shape.

The reference for each case is the same sampler on `Partial(apply, params)` with the new weights
passed explicitly (the path where the weights are plainly traced arguments)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdiff
from jaxdiff import samplers

SHAPE = (5, 2)  # unique to this file, so other tests' compilations do not count here


@pytest.fixture(scope="module")
def sched():
    return jaxdiff.make_schedule("linear", timesteps=12)


def apply(params, x, t):
    return jnp.tanh(x @ params["w"] + params["b"][None]) + 1e-3 * t[:, None].astype(jnp.float32)


def make_params(seed):
    key_w, key_b = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(key_w, (2, 2)), "b": jax.random.normal(key_b, (2,))}


def ddim(model_fn, sched, shape=SHAPE, **kwargs):
    return jaxdiff.ddim_sample(model_fn, sched, key=jax.random.key(1), shape=shape, num_steps=4,
                               eta=0.5, clip_x0=False, **kwargs)


def reference(params, sched, shape=SHAPE):
    return ddim(jax.tree_util.Partial(apply, params), sched, shape)


def check_new_weights_used(sched, model_fn, set_params):
    """Sample, change the weights the function sees, sample again: each result equals the
    reference for the weights current at its call; the second call compiles nothing."""
    cache = samplers._ddim_loop._cache_size
    set_params(make_params(0))
    first = ddim(model_fn, sched)
    size = cache()
    set_params(make_params(1))
    second = ddim(model_fn, sched)
    assert cache() == size  # one compile per shape
    np.testing.assert_array_equal(first, reference(make_params(0), sched))
    np.testing.assert_array_equal(second, reference(make_params(1), sched))
    assert not np.allclose(first, second)


def test_closure_over_a_rebound_variable(sched):
    box = {}

    def set_params(params):
        box["params"] = params

    params_cell = [None]

    def outer():
        def model_fn(x, t):
            return apply(params_cell[0], x, t)
        return model_fn

    model_fn = outer()
    check_new_weights_used(sched, model_fn,
                           lambda params: params_cell.__setitem__(0, params))


WEIGHTS = {}


def global_model(x, t):
    return apply(WEIGHTS["params"], x, t)


def test_function_using_global_weights(sched):
    check_new_weights_used(sched, global_model, lambda params: WEIGHTS.update(params=params))


class Denoiser:
    def __init__(self):
        self.params = None

    def __call__(self, x, t):
        return apply(self.params, x, t)

    def predict(self, x, t):
        return apply(self.params, x, t)


def test_bound_method_and_callable_object(sched):
    denoiser = Denoiser()
    check_new_weights_used(sched, denoiser.predict,
                           lambda params: setattr(denoiser, "params", params))
    check_new_weights_used(sched, denoiser, lambda params: setattr(denoiser, "params", params))


class NNXDenoiser(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(2, 2, rngs=rngs)

    def __call__(self, x, t):
        return jnp.tanh(self.linear(x)) + 1e-3 * t[:, None].astype(jnp.float32)


def test_nnx_module_updated_in_place(sched):
    module = NNXDenoiser(nnx.Rngs(0))

    def set_params(params):
        module.linear.kernel[...] = params["w"]
        module.linear.bias[...] = params["b"]

    check_new_weights_used(sched, module, set_params)


def test_a_fresh_lambda_per_call_compiles_once(sched):
    cache = samplers._ddim_loop._cache_size
    outputs, sizes = [], []
    for seed in (0, 1, 2):
        params = make_params(seed)
        outputs.append(ddim(lambda x, t: apply(params, x, t), sched, shape=(6, 2)))  # noqa: B023
        sizes.append(cache())
        np.testing.assert_array_equal(outputs[-1], reference(params, sched, (6, 2)))
    assert sizes[1] == sizes[2] and sizes[1] <= sizes[0] + 1


def test_captured_numpy_weights_changed_in_place_recompile(sched):
    """NumPy arrays become compiled-in constants; their contents are part of the cache key."""
    weights = {"w": np.array(make_params(0)["w"]), "b": np.array(make_params(0)["b"])}

    def model_fn(x, t):
        return apply(weights, x, t)

    first = ddim(model_fn, sched, shape=(7, 2))
    weights["w"][...] = np.asarray(make_params(1)["w"])
    weights["b"][...] = np.asarray(make_params(1)["b"])
    second = ddim(model_fn, sched, shape=(7, 2))
    np.testing.assert_allclose(first, reference(make_params(0), sched, (7, 2)), atol=1e-6)
    np.testing.assert_allclose(second, reference(make_params(1), sched, (7, 2)), atol=1e-6)


def test_closure_over_traced_weights_under_grad(sched):
    """A closure over the user's traced parameters inside jax.grad: the gradient is the one of
    the explicit-parameter path."""
    def loss(params, closure):
        fn = (lambda x, t: apply(params, x, t)) if closure else jax.tree_util.Partial(apply, params)
        return jnp.sum(ddim(fn, sched) ** 2)

    params = make_params(3)
    closure = jax.grad(functools.partial(loss, closure=True))(params)
    explicit = jax.grad(functools.partial(loss, closure=False))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 closure, explicit)


def test_guided_closure_sees_new_weights(sched):
    params_cell = [make_params(0)]
    labels = jnp.array([0, 1, 0, 1, 1])

    def model_fn(x, t, labels):
        return apply(params_cell[0], x, t) * (1.0 + labels[:, None])

    def guided(fn):
        return ddim(fn, sched, cond={"labels": labels}, guidance_scale=2.0,
                    null_cond={"labels": 0})

    first = guided(model_fn)
    params_cell[0] = make_params(1)
    second = guided(model_fn)
    params = make_params(1)
    explicit = guided(jax.tree_util.Partial(
        lambda p, x, t, labels: apply(p, x, t) * (1.0 + labels[:, None]), params))
    np.testing.assert_array_equal(second, explicit)
    assert not np.allclose(first, second)


# --- contract checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_wrong_output_shape_is_refused(sched, sampler):
    def model_fn(x, t):
        return x[:, :1]

    call = jaxdiff.ddpm_sample if sampler == "ddpm" else functools.partial(jaxdiff.ddim_sample,
                                                                          num_steps=3)
    with pytest.raises(ValueError, match=r"model_fn returned an output of shape \(3, 1\) for "
                                         r"x_t of shape \(3, 2\)"):
        call(model_fn, sched, key=jax.random.key(0), shape=(3, 2))


def test_wrong_output_shape_in_the_loss(sched):
    with pytest.raises(ValueError, match=r"output of shape \(4, 1\)"):
        jaxdiff.diffusion_loss(lambda x, t: x[:, :1], sched, jnp.zeros((4, 2)), jax.random.key(0))


@pytest.mark.parametrize("t", [[-1, 0], [0, 12], [3, 40]])
def test_out_of_range_t_is_refused(sched, t):
    x0 = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T=12\)"):
        jaxdiff.q_sample(sched, x0, jnp.asarray(t), jnp.zeros_like(x0))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T=12\)"):
        jaxdiff.diffusion_loss(lambda x, tt: x, sched, x0, jax.random.key(0), t=jnp.asarray(t))


def test_eta_gradient_is_finite_and_matches_finite_differences():
    sched = jaxdiff.make_schedule("cosine", timesteps=40)
    params = make_params(4)
    x_T = jax.random.normal(jax.random.key(9), SHAPE)

    def total(eta):
        return jnp.sum(jaxdiff.ddim_sample(jax.tree_util.Partial(apply, params), sched,
                                           key=jax.random.key(2), shape=SHAPE, num_steps=4,
                                           eta=eta, clip_x0=False, x_T=x_T))

    for eta in (0.0, 0.3, 0.6, 1.0):
        assert np.isfinite(float(jax.grad(total)(jnp.float32(eta))))
    # central differences (float32 sums: 10% agreement) away from eta = 1, where
    # sqrt(1 - abar_next - sigma^2) reaches 0
    h = 0.05
    for eta in (0.3, 0.6):
        numeric = (float(total(jnp.float32(eta + h))) - float(total(jnp.float32(eta - h)))) / (2 * h)
        np.testing.assert_allclose(float(jax.grad(total)(jnp.float32(eta))), numeric, rtol=0.1)


def test_progress_reports_every_step_block_and_keeps_the_samples(sched):
    params = make_params(5)
    fn = jax.tree_util.Partial(apply, params)
    plain = jaxdiff.ddpm_sample(fn, sched, key=jax.random.key(0), shape=SHAPE, clip_x0=False)
    reports = []
    reported = jaxdiff.ddpm_sample(fn, sched, key=jax.random.key(0), shape=SHAPE, clip_x0=False,
                                   progress=lambda done, total: reports.append((done, total)))
    np.testing.assert_array_equal(plain, reported)
    assert sorted(reports) == [(done, 12) for done in range(1, 13)]
    # a new handler does not recompile the loop
    cache = samplers._ddpm_loop._cache_size()
    more = []
    jaxdiff.ddpm_sample(fn, sched, key=jax.random.key(0), shape=SHAPE, clip_x0=False,
                        progress=lambda done, total: more.append(done))
    assert samplers._ddpm_loop._cache_size() == cache and max(more) == 12
    ddim_reports = []
    ddim(fn, sched, progress=lambda done, total: ddim_reports.append((done, total)))
    assert max(ddim_reports) == (4, 4)
