"""What `model.remat` saves: the activations JAX keeps for the backward pass (its saved
residuals) and XLA's temporary buffer bytes of the compiled gradient, with and without remat.

    PYTHONPATH=. python benchmarks/remat_memory.py --dim 32 --dim_mults 1,2,2 --image_size 28 \
        --channels 1 --batch 64

Prints one JSON line per setting. (Speed: benchmarks/throughput.py --remat.)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import print_saved_residuals

from jaxdiff.models import DDPMUnet, Unet

_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "f64": 8, "s32": 4, "i32": 4}


def residual_bytes(fn, *args) -> tuple[int, int]:
    """(count, bytes) of the residuals jax.ad_checkpoint.print_saved_residuals lists."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print_saved_residuals(fn, *args)
    count = total = 0
    for line in text.getvalue().splitlines():
        match = re.match(r"(\w+)\[([\d,]*)\]", line.strip())
        if match:
            size = 1
            for dim in filter(None, match.group(2).split(",")):
                size *= int(dim)
            count += 1
            total += size * _BYTES.get(match.group(1), 4)
    return count, total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("unet", "ddpm_unet"), default="unet")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--dim_mults", default="1,2,2")
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    mults = tuple(int(m) for m in args.dim_mults.split(","))
    x = jnp.zeros((args.batch, args.image_size, args.image_size, args.channels))
    t = jnp.zeros((args.batch,), jnp.int32)
    for remat in (False, True):
        if args.model == "unet":
            model = Unet(dim=args.dim, dim_mults=mults, channels=args.channels, remat=remat)
        else:
            model = DDPMUnet(ch=args.dim, ch_mult=mults, channels=args.channels, remat=remat)
        params = model.init(jax.random.key(0), x[:1], t[:1])
        loss = lambda p: jnp.mean(jnp.square(model.apply(p, x, t)))  # noqa: E731
        count, saved = residual_bytes(loss, params)
        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        print(json.dumps({"model": args.model, "dim": args.dim, "dim_mults": list(mults),
                          "image_size": args.image_size, "batch": args.batch, "remat": remat,
                          "saved_residuals": count, "saved_residual_mib": round(saved / 2**20, 1),
                          "xla_temp_mib": round(temp / 2**20, 1),
                          "device": jax.devices()[0].device_kind}), flush=True)


if __name__ == "__main__":
    main()
