"""Compile time and optimised-HLO size of the library's train step (no timing of the step).

    PYTHONPATH=. python benchmarks/compile_time.py --dim 32 --dim_mults 1,2,2 --image_size 28 \
        --channels 1 --batch 64

takes throughput.py's model flags and prints one JSON line: parameter leaves, seconds to lower
and to compile `make_train_step` (clipped AdamW, EMA, non-finite skip guard), and the
instruction and line counts of the compiled HLO. Run it against another checkout by putting
that checkout first on PYTHONPATH (benchmarks/RESULTS.md, "Train-step compile time").
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp

import jaxdiff
from jaxdiff.training import LinenApply, create_train_state, make_optimizer, make_train_step

from throughput import build_model, parse_args, random_batch


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = build_model(args)
    x = jnp.zeros((1, args.image_size, args.image_size, args.channels), jnp.float32)
    params = jax.jit(model.init)(jax.random.key(args.seed), x, jnp.zeros((1,), jnp.int32))
    optimizer = make_optimizer(1e-4, grad_clip=1.0)
    step = make_train_step(LinenApply(model), optimizer, jaxdiff.make_schedule("cosine", 1000),
                           loss_kwargs=dict(objective=args.objective), takes_key=True)
    state = create_train_state(params, optimizer, jax.random.key(args.seed + 1))
    batch = random_batch(args, jax.random.key(args.seed + 2))
    start = time.perf_counter()
    lowered = step.lower(state, batch)
    lowered_at = time.perf_counter()
    text = lowered.compile().as_text()
    compiled_at = time.perf_counter()
    result = {
        "jaxdiff": jaxdiff.__file__, "jax": jax.__version__, "model": args.model,
        "dim": args.dim, "dim_mults": list(args.dim_mults), "image_size": args.image_size,
        "channels": args.channels, "batch": args.batch, "dtype": args.dtype,
        "parameter_leaves": len(jax.tree.leaves(params)),
        "lower_s": round(lowered_at - start, 2), "compile_s": round(compiled_at - lowered_at, 2),
        "hlo_instructions": sum(1 for line in text.splitlines() if " = " in line),
        "hlo_lines": text.count("\n"), "platform": jax.default_backend(),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
