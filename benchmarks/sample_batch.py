"""Sampler throughput against batch size, compile time excluded: is one big batch the fastest way
to draw the evaluation's samples?

    PYTHONPATH=. python benchmarks/sample_batch.py --model mlp --batches 500,1000,2500,5000
    PYTHONPATH=. python benchmarks/sample_batch.py --model unet --batches 16,64,256 --steps 50

mlp: the default toy2d denoiser (MLPDenoiser hidden 128, depth 3, time_dim 64) under the
DDPM sampler with T = 1000 (the default job's evaluation: 5,000 points x 1,000 steps); unet:
the digits U-Net (dim 32, dim_mults 1,2, 8x8x1) under DDIM with --steps steps. Random
parameters (speed does not depend on them). Prints one JSON line per batch: sample
image-steps/s (median of --repeats calls), compile seconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp

import jaxdiff
from jaxdiff.compilation import jit
from jaxdiff.models import MLPDenoiser, Unet


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("mlp", "unet"), default="mlp")
    parser.add_argument("--batches", default="500,1000,2500,5000")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (unet)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.model == "mlp":
        model, shape1 = MLPDenoiser(hidden=128, depth=3, time_dim=64), (2,)
    else:
        model, shape1 = Unet(dim=32, dim_mults=(1, 2), channels=1), (8, 8, 1)
    params = model.init(jax.random.key(0), jnp.zeros((1,) + shape1), jnp.zeros((1,), jnp.int32))
    schedule = jaxdiff.make_schedule("cosine", 1000)
    for batch in (int(b) for b in args.batches.split(",")):
        shape = (batch,) + shape1

        @jit
        def sample(params, key):
            model_fn = functools.partial(model.apply, params)
            if args.model == "mlp":
                return jaxdiff.ddpm_sample(model_fn, schedule, key=key, shape=shape,
                                           clip_x0=False)
            return jaxdiff.ddim_sample(model_fn, schedule, key=key, shape=shape,
                                       num_steps=args.steps)

        key = jax.random.key(1)
        start = time.perf_counter()
        compiled = sample.lower(params, key).compile()
        compile_s = time.perf_counter() - start
        jax.block_until_ready(compiled(params, key))
        steps = 1000 if args.model == "mlp" else args.steps
        rates = []
        for r in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(params, jax.random.fold_in(key, r)))
            rates.append(batch * steps / (time.perf_counter() - start))
        print(json.dumps({"model": args.model, "batch": batch, "steps": steps,
                          "img_steps_per_s": round(statistics.median(rates), 1),
                          "runs": [round(r, 1) for r in rates],
                          "compile_s": round(compile_s, 2),
                          "device": jax.devices()[0].device_kind}),
              flush=True)


if __name__ == "__main__":
    main()
