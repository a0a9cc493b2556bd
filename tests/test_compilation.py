"""jaxdiff.compilation.jit: XLA options on top-level CPU compiles only, nested use, opt-out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import compilation


@pytest.fixture
def fresh_options(monkeypatch):
    compilation.compiler_options.cache_clear()
    yield monkeypatch
    compilation.compiler_options.cache_clear()


def test_cpu_gets_the_options_unless_switched_off(fresh_options):
    assert jax.default_backend() == "cpu"
    assert compilation.compiler_options() == compilation.CPU_OPTIONS
    compilation.compiler_options.cache_clear()
    fresh_options.setenv("JAXDIFF_XLA_OPTIONS", "0")
    assert compilation.compiler_options() is None


def test_an_option_xla_does_not_know_falls_back_to_the_defaults(fresh_options):
    fresh_options.setattr(compilation, "CPU_OPTIONS", {"xla_no_such_option_anywhere": ""})
    assert compilation.compiler_options() is None


def test_jit_matches_jax_jit_at_top_level_and_nested():
    calls = []

    def f(x, *, power):
        calls.append(power)
        return jnp.sum(x ** power)

    jitted = compilation.jit(f, static_argnames="power")
    x = jnp.arange(5.0)
    assert float(jitted(x, power=2)) == 30.0
    assert float(jitted(x * 1.0, power=2)) == 30.0 and len(calls) == 1  # cached
    assert jitted._cache_size() == 1
    # inside another jit, grad and vmap the options must not be passed (JAX refuses them there)
    assert float(jax.jit(lambda v: jitted(v, power=2))(x)) == 30.0
    np.testing.assert_allclose(jax.grad(lambda v: jitted(v, power=2))(x), 2 * np.arange(5.0))
    np.testing.assert_allclose(jax.vmap(lambda v: jitted(v, power=1))(x[:, None]), np.arange(5.0))
    assert jax.eval_shape(lambda: jitted(x, power=2)).shape == ()
    assert jitted.lower(x, power=3).compile()(x) == 100.0


def test_nested_calls_without_tracer_arguments_compile_plainly(monkeypatch):
    """Inside a trace, a call whose arguments are all concrete (constants, or a closure over the
    enclosing trace's tracers) must not take the options either: JAX refuses them when it stages
    the call, and the plain jit takes over. The bogus option makes any leak fail loudly."""
    monkeypatch.setattr(compilation, "compiler_options", lambda: {"xla_no_such_option": ""})
    constant = jnp.arange(3.0)
    add_one = compilation.jit(lambda x: x + 1)
    np.testing.assert_allclose(jax.jit(lambda y: add_one(constant) * y)(2.0), [2.0, 4.0, 6.0])
    assert jax.eval_shape(lambda: add_one(constant)).shape == (3,)
    total, _ = jax.lax.scan(lambda carry, _: (carry + add_one(constant), None), constant, None,
                            length=2)
    np.testing.assert_allclose(total, [2.0, 5.0, 8.0])

    def closure(scale):  # the tracer `scale` reaches the jitted function only by closure
        return compilation.jit(lambda x: x * scale)(constant)

    np.testing.assert_allclose(jax.jit(closure)(3.0), [0.0, 3.0, 6.0])
    np.testing.assert_allclose(jax.jit(jax.grad(lambda a: closure(a).sum()))(3.0), 3.0)


def test_eager_transformations_of_a_closure_compile_at_top_level():
    """Eager grad / vmap of a closure run the jitted function as a top-level compile, which
    JAX lets keep the options (here the real ones, which XLA knows)."""
    constant = jnp.arange(3.0)

    def closure(scale):
        return compilation.jit(lambda x: x * scale)(constant)

    np.testing.assert_allclose(jax.grad(lambda a: closure(a).sum())(3.0), 3.0)
    np.testing.assert_allclose(jax.vmap(closure)(jnp.array([1.0, 2.0])),
                               [[0.0, 1.0, 2.0], [0.0, 2.0, 4.0]])


def test_a_sampler_inside_a_user_jit_with_captured_parameters(monkeypatch):
    """The DDPM sampler (a compilation.jit) called inside the user's jit, with the model's
    parameters captured as constants and a concrete key: none of its loop's arguments is a
    tracer, so only JAX's refusal of the options tells that the call is nested."""
    from jaxdiff import ddpm_sample, make_schedule

    refusals = []
    is_refusal = compilation._is_nested_jit_error
    monkeypatch.setattr(compilation, "_is_nested_jit_error",
                        lambda error: refusals.append(error) or is_refusal(error))
    monkeypatch.setattr(compilation, "compiler_options", lambda: {"xla_no_such_option": ""})
    schedule = make_schedule("linear", timesteps=10)
    params = jnp.float32(0.5)
    key = jax.random.key(0)

    def model_fn(x_t, t):
        return params * x_t

    @jax.jit
    def scaled_samples(factor):
        return factor * ddpm_sample(model_fn, schedule, key=key, shape=(2, 3))

    x = scaled_samples(2.0)
    assert x.shape == (2, 3) and bool(jnp.all(jnp.isfinite(x)))

    # The refusal route itself: a compilation.jit called with NumPy (never tracer) arguments
    # inside the user's jit.
    inner = compilation.jit(lambda x: params * x)

    @jax.jit
    def outer(factor):
        return factor * inner(np.ones(3, np.float32))

    np.testing.assert_allclose(outer(2.0), np.full(3, 1.0))
    assert len(refusals) >= 1


def test_decorator_form_keeps_the_name():
    @compilation.jit
    def double(x):
        return 2 * x

    assert double.__name__ == "double" and float(double(jnp.float32(2))) == 4.0
    half = compilation.jit(donate_argnums=0)(lambda x: x / 2)
    assert float(half(jnp.ones(()) * 3)) == 1.5


def test_the_options_reach_top_level_compiles_only(monkeypatch):
    """Wiring: a bogus option makes the top-level compile fail, while the same function called
    inside another jit compiles with that jit's options."""
    monkeypatch.setattr(compilation, "compiler_options", lambda: {"xla_no_such_option": ""})
    jitted = compilation.jit(lambda x: x + 1)
    with pytest.raises(Exception, match="xla_no_such_option"):
        jitted(jnp.float32(1))
    assert float(jax.jit(lambda x: jitted(x) * 2)(jnp.float32(1))) == 4.0


def test_train_step_and_samplers_use_it():
    from jaxdiff import samplers
    from jaxdiff.training import make_optimizer, make_train_step

    step = make_train_step(lambda p, x, t: x, make_optimizer(1e-3), None, loss_kwargs={},
                           ema_decay=0.9)
    assert all(isinstance(f, compilation._LazyJit)
               for f in (step, samplers._ddpm_loop, samplers._ddim_loop))
