"""Compiling once: `jit` (jax.jit plus jaxdiff's XLA options) and `as_pytree_fn` (a model as a
pytree whose arrays are traced, so new parameters reuse the compiled function).

`jit` is `jax.jit` plus the XLA compiler options jaxdiff's train step and samplers compile with.

On the CPU backend, XLA's YNNPACK fusions (on by default in jax 0.10) slow the U-Net down: with
them switched off the train step of the benchmark U-Net (dim 32, 28x28x1, batch 64) runs
1.1-1.2x faster and its DDIM sampler 1.1-1.3x faster on 2 cores (benchmarks/RESULTS.md).
They are switched off per compiled function through jit's `compiler_options`, never
process-wide through XLA_FLAGS, so user code keeps XLA's defaults. The options are chosen at
the first call, not at import (which must not start a JAX backend before
`jax.distributed.initialize`): none on GPU / TPU, none when the installed XLA does not know
them, and none when JAXDIFF_XLA_OPTIONS=0.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable

import jax
import numpy as np
from jax import Array

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def compiler_options() -> dict[str, Any] | None:
    """The options for this process's default backend (None: XLA's defaults)."""
    if os.environ.get("JAXDIFF_XLA_OPTIONS", "1") == "0" or jax.default_backend() != "cpu":
        return None
    try:  # an XLA without the option rejects it at compile time
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS)(np.float32(0))
    except Exception:  # noqa: BLE001 - any rejection means: keep the defaults
        return None
    return dict(CPU_OPTIONS)


def _has_tracer(tree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _is_nested_jit_error(error: ValueError) -> bool:
    """JAX's refusal of `compiler_options` on a jit staged into an enclosing trace."""
    message = str(error)
    return "compiler_options" in message and "top-level" in message


class _LazyJit:
    """A `jax.jit` of `fun` created at first use with `compiler_options()` for top-level calls,
    and a plain one for calls inside another jit or transformation (which compiles with the
    enclosing function's options).

    Only public JAX decides which: `jax.core.Tracer` arguments, else JAX's own refusal of
    `compiler_options` on a nested jit (a `ValueError` raised while staging, after `fun` was
    traced once: a nested call without tracer arguments traces `fun` twice, once per jit)."""

    def __init__(self, fun: Callable, kwargs: dict[str, Any]):
        self._fun, self._kwargs, self._jitted, self._nested = fun, kwargs, None, None
        functools.update_wrapper(self, fun)

    @property
    def jitted(self):
        if self._jitted is None:
            self._jitted = jax.jit(self._fun, compiler_options=compiler_options(), **self._kwargs)
        return self._jitted

    @property
    def nested(self):
        if self._nested is None:
            self._nested = jax.jit(self._fun, **self._kwargs)
        return self._nested

    def __call__(self, *args, **kwargs):
        # A tracer among the arguments means an enclosing jit, grad or vmap: compile plainly.
        # Without one the call may still be inside a trace (a closure over a tracer, or constant
        # arguments inside a user's jit, scan or eval_shape); JAX then refuses the options when
        # it stages the call, before compiling anything, and the plain jit takes over.
        if _has_tracer((args, kwargs)):
            return self.nested(*args, **kwargs)
        try:
            return self.jitted(*args, **kwargs)
        except ValueError as error:
            if not _is_nested_jit_error(error):
                raise
        return self.nested(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self.jitted.lower(*args, **kwargs)

    def _cache_size(self) -> int:
        return self.jitted._cache_size()


def jit(fun: Callable | None = None, **kwargs):
    """`jax.jit(fun, **kwargs)` compiled with `compiler_options()`; usable as a decorator, also
    as `functools.partial(jit, static_argnames=...)`."""
    if fun is None:
        return functools.partial(jit, **kwargs)
    return _LazyJit(fun, kwargs)


class _Method:
    """A bound method compared by the *value* of its object.

    Python compares bound methods by the identity of `__self__`, so `Unet(...).apply` made twice
    would be two jit cache keys; Flax modules compare by their fields, and so does this wrapper.
    """

    def __init__(self, method):
        self.func, self.obj = method.__func__, method.__self__

    def __call__(self, *args, **kwargs):
        return self.func(self.obj, *args, **kwargs)

    def __eq__(self, other):
        return isinstance(other, _Method) and self.func is other.func and self.obj == other.obj

    def __hash__(self):
        return hash((self.func, self.obj))


def _static_callable(func):
    if inspect.ismethod(func):
        try:
            hash(func.__self__)
        except TypeError:
            return func
        return _Method(func)
    return func


def as_pytree_fn(model_fn: Callable[..., Array]) -> jax.tree_util.Partial:
    """`model_fn` as a `jax.tree_util.Partial`, so jit traces its bound arrays instead of baking
    them in as constants (and does not recompile when only those arrays change).

    `functools.partial(model.apply, params)` becomes `Partial(model.apply, params)` with the
    parameters as traced leaves and the (hashable, compared by value) module as static data.
    Raises ValueError when `model_fn` is not callable.
    """
    if isinstance(model_fn, jax.tree_util.Partial):
        return model_fn
    if isinstance(model_fn, functools.partial):
        return jax.tree_util.Partial(
            _static_callable(model_fn.func), *model_fn.args, **model_fn.keywords
        )
    if not callable(model_fn):
        raise ValueError(f"model_fn must be callable, got {type(model_fn).__name__}")
    return jax.tree_util.Partial(_static_callable(model_fn))
