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
import hashlib
import inspect
import os
import weakref
from typing import Any, Callable

import jax
import numpy as np
from jax import Array
from jax.extend import core as jax_core

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
    would be two jit cache keys; Flax Linen modules compare by their fields, and so does this
    wrapper.
    """

    def __init__(self, method):
        self.func, self.obj = method.__func__, method.__self__

    def __call__(self, *args, **kwargs):
        return self.func(self.obj, *args, **kwargs)

    def __eq__(self, other):
        return isinstance(other, _Method) and self.func is other.func and self.obj == other.obj

    def __hash__(self):
        return hash((self.func, self.obj))


def _is_linen_method(func) -> bool:
    """A bound method of a Flax Linen module (its fields are hyperparameters, never weights:
    `functools.partial(module.apply, params)` passes every array explicitly)."""
    if not inspect.ismethod(func):
        return False
    owner = type(func.__self__)
    return any(cls.__module__.startswith("flax.linen") for cls in owner.__mro__)


def _code_identity(fn) -> Any:
    """What identifies the code of `fn` across re-creations (a lambda made afresh per call shares
    its `__code__`), without the arrays it captures."""
    if isinstance(fn, functools.partial):
        return ("partial", _code_identity(fn.func), tuple(sorted(fn.keywords)))
    if inspect.ismethod(fn):
        return ("method", _code_identity(fn.__func__), type(fn.__self__))
    code = getattr(fn, "__code__", None)
    return code if code is not None else type(fn)


class _Signature:
    """Static part of a `_TracedModel`: equal for equal code with an equal jaxpr (so a new closure
    over new weights reuses the compiled sampler), while it carries the function and the
    identities of its captured arrays for the trace."""

    def __init__(self, fn, key, const_index):
        # jit's cache keeps the first signature of each key; a weak reference keeps it from
        # holding the old weights alive through `fn`.
        try:
            self._fn = weakref.WeakMethod(fn) if inspect.ismethod(fn) else weakref.ref(fn)
        except TypeError:  # an object without weak references
            self._fn = lambda: fn
        self.key, self.const_index = key, const_index

    @property
    def fn(self):
        return self._fn()

    def __eq__(self, other):
        return isinstance(other, _Signature) and self.key == other.key

    def __hash__(self):
        return hash(self.key)


@jax.tree_util.register_pytree_node_class
class _TracedModel:
    """A model function whose captured arrays (closure variables, globals, a bound object's or
    an NNX module's weights, a partial's arguments) are pytree leaves, so jit traces them.

    Called inside a trace, it re-traces `fn` to a jaxpr at the call's shapes and evaluates that
    jaxpr with each captured array replaced by the corresponding leaf (found by identity). NumPy
    arrays it captures are constants whose contents are part of the static signature: a changed
    NumPy array recompiles instead of giving stale results."""

    def __init__(self, consts, signature: _Signature, fn=None):
        self.consts, self.signature = list(consts), signature
        self._fn = fn  # the converted object keeps the function alive; its signature does not

    def tree_flatten(self):
        return (self.consts,), self.signature

    @classmethod
    def tree_unflatten(cls, signature, children):
        return cls(children[0], signature)

    def __call__(self, *args, **kwargs):
        closed, out_shape = jax.make_jaxpr(_uncached(self.signature.fn),
                                           return_shape=True)(*args, **kwargs)
        index = self.signature.const_index
        consts = [self.consts[index[id(c)]] if id(c) in index else c for c in closed.consts]
        flat = jax.tree.leaves((args, kwargs))
        out = jax_core.jaxpr_as_fun(jax_core.ClosedJaxpr(closed.jaxpr, consts))(*flat)
        return jax.tree.unflatten(jax.tree.structure(out_shape), out)


@jax.tree_util.register_pytree_node_class
class _Pending:
    """A model function not yet converted: `trace_captured_arrays` converts it once the shapes of
    its inputs are known. Called directly (in the user's own jit), it is the function itself."""

    def __init__(self, fn):
        self.fn = fn

    def tree_flatten(self):
        return (), self.fn

    @classmethod
    def tree_unflatten(cls, fn, children):
        return cls(fn)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _is_array(value) -> bool:
    return isinstance(value, jax.Array) and not isinstance(value, np.ndarray)


def _uncached(fn):
    """A new function object calling `fn`: `jax.make_jaxpr` caches traces by function identity,
    which would return the arrays `fn` captured at its first trace."""
    return lambda *args, **kwargs: fn(*args, **kwargs)


def _convert(fn, args, kwargs) -> _TracedModel:
    closed = jax.make_jaxpr(_uncached(fn))(*args, **kwargs)
    consts, const_index, frozen = [], {}, []
    for const in closed.consts:
        if _is_array(const):  # a jax.Array or an enclosing trace's tracer: traced from now on
            if id(const) not in const_index:
                const_index[id(const)] = len(consts)
                consts.append(const)
        else:  # a NumPy constant: compiled in, so its contents are part of the key
            array = np.asarray(const)
            frozen.append((array.dtype.str, array.shape,
                           hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()))
    text = hashlib.sha1(str(closed.jaxpr).encode()).hexdigest()
    key = (_code_identity(fn), text, tuple(frozen))
    return _TracedModel(consts, _Signature(fn, key, const_index), fn)


def trace_captured_arrays(model_fn, *args, **kwargs):
    """`model_fn` (a pytree from `as_pytree_fn`) with every pending function converted to a
    `_TracedModel`, traced once on example inputs `args`, `kwargs` (arrays or
    `jax.ShapeDtypeStruct`s of the shapes the model will see; the batch size may differ)."""
    def convert(node):
        return _convert(node.fn, args, kwargs) if isinstance(node, _Pending) else node

    return jax.tree.map(convert, model_fn, is_leaf=lambda node: isinstance(node, _Pending))


def as_pytree_fn(model_fn: Callable[..., Array]):
    """`model_fn` as a pytree whose arrays jit traces instead of baking them in as constants, so
    new weights give new results and do not recompile.

    - `jax.tree_util.Partial`: used as is (its function is static, its arguments traced).
    - `functools.partial(module.apply, params)` of a Flax Linen module: a `Partial` with the
      parameters as traced leaves and the module (hashable, compared by its fields) static.
    - Anything else (a closure, a function using global weights, a bound method, a Flax NNX or
      Equinox module, any other partial): pending until the sampler knows its input shapes
      (`trace_captured_arrays`), then traced once to find the arrays it captures, which become
      leaves. Costs one trace of the model per sampler call, never a recompilation for new
      weights; a lambda made afresh per call also reuses the compiled sampler.

    Raises ValueError when `model_fn` is not callable.
    """
    if isinstance(model_fn, (jax.tree_util.Partial, _TracedModel, _Pending)):
        return model_fn
    if not callable(model_fn):
        raise ValueError(f"model_fn must be callable, got {type(model_fn).__name__}")
    if isinstance(model_fn, functools.partial) and _is_linen_method(model_fn.func):
        return jax.tree_util.Partial(_Method(model_fn.func), *model_fn.args, **model_fn.keywords)
    return _Pending(model_fn)
