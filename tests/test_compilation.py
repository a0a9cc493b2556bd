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
