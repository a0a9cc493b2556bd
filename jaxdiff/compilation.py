"""`jit`: `jax.jit` plus the XLA compiler options jaxdiff's train step and samplers compile with.

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
import os
from typing import Any, Callable

import jax
import numpy as np

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


def _top_level(args, kwargs) -> bool:
    """Whether a call happens outside any JAX trace (only a top-level jit takes options)."""
    try:
        from jax._src.core import trace_state_clean
    except ImportError:  # fall back on the inputs: any tracer means an enclosing trace
        leaves = jax.tree.leaves((args, kwargs))
        return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)
    return trace_state_clean()


class _LazyJit:
    """A `jax.jit` of `fun` created at first use with `compiler_options()` for top-level calls,
    and a plain one for calls inside another jit or transformation (which compiles with the
    enclosing function's options)."""

    def __init__(self, fun: Callable, kwargs: dict[str, Any]):
        self._fun, self._kwargs, self._jitted, self._nested = fun, kwargs, None, None
        functools.update_wrapper(self, fun)

    @property
    def jitted(self):
        if self._jitted is None:
            self._jitted = jax.jit(self._fun, compiler_options=compiler_options(), **self._kwargs)
        return self._jitted

    def __call__(self, *args, **kwargs):
        if _top_level(args, kwargs):
            return self.jitted(*args, **kwargs)
        if self._nested is None:
            self._nested = jax.jit(self._fun, **self._kwargs)
        return self._nested(*args, **kwargs)

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
