"""Every spatial convolution of a jaxdiff U-Net's forward pass, timed alone: XLA, then PyTorch.

    python benchmarks/conv_census.py --dim 32 --dim_mults 1,2,2 --image_size 28 --channels 1 \
        --batch 64 --out /tmp/convs.json
    /work/torchvenv/bin/python benchmarks/conv_census.py --torch /tmp/convs.json

The first command (jax) takes throughput.py's model flags (`--model ddpm_unet` too), lists the
`conv_general_dilated` calls of the model's forward pass, from its jaxpr, with their input and
kernel shapes, and times each one alone in float32 under jaxdiff's `jit`: forward, and forward
plus backward (input and kernel gradients). The second (torch's venv; it
imports neither jax nor jaxdiff) times the same shapes with `torch.nn.Conv2d` in NCHW. Each
prints one JSON line; the totals say how much of a train step the convolutions take in each
library, which a profile of the whole step does not show (XLA:CPU's trace events for
convolution thunks do not carry their run time; benchmarks/RESULTS.md).

Times are medians of `--calls` calls on random inputs; a forward-plus-backward figure includes
its own forward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _totals(rows: list[dict], prefix: str) -> dict:
    return {f"{prefix}_fwd_ms": round(sum(r[f"{prefix}_fwd_ms"] for r in rows), 1),
            f"{prefix}_fwd_bwd_ms": round(sum(r[f"{prefix}_fwd_bwd_ms"] for r in rows), 1)}


def conv_shapes(model, image_size: int, channels: int, batch: int) -> list[dict]:
    """(input shape NHWC, kernel shape HWIO) of every conv_general_dilated in the forward pass,
    sub-jaxprs (remat, custom_vjp) included, in call order."""
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((batch, image_size, image_size, channels), jnp.float32)
    t = jnp.zeros((batch,), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), x[:1], t[:1])
    jaxpr = jax.make_jaxpr(lambda p: model.apply(p, x, t))(params).jaxpr
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                found.append({"x": list(eqn.invars[0].aval.shape),
                              "w": list(eqn.invars[1].aval.shape)})
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jaxpr)
    return found


def time_xla(rows: list[dict], repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from jaxdiff.compilation import jit

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    forward = jit(conv)
    backward = jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g))
    for row in rows:
        x = jax.random.normal(jax.random.key(0), row["x"], jnp.float32)
        w = 0.1 * jax.random.normal(jax.random.key(1), row["w"], jnp.float32)
        g = jnp.ones(tuple(row["x"][:3]) + (row["w"][3],), jnp.float32)
        fwd = _median_ms(lambda: jax.block_until_ready(forward(x, w)), repeats)
        bwd = _median_ms(lambda: jax.block_until_ready(backward(x, w, g)), repeats)
        row.update(xla_fwd_ms=round(fwd, 2), xla_fwd_bwd_ms=round(fwd + bwd, 2))
    return rows


def time_torch(rows: list[dict], repeats: int, threads: int | None) -> list[dict]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    for row in rows:
        batch, height, width, c_in = row["x"]
        k_h, k_w, _, c_out = row["w"]
        conv = torch.nn.Conv2d(c_in, c_out, (k_h, k_w), padding=(k_h // 2, k_w // 2))
        x = torch.randn(batch, c_in, height, width, requires_grad=True)

        def forward():
            with torch.no_grad():
                conv(x)

        def forward_backward():
            y = conv(x)
            y.backward(torch.ones_like(y))

        row.update(torch_fwd_ms=round(_median_ms(forward, repeats), 2),
                   torch_fwd_bwd_ms=round(_median_ms(forward_backward, repeats), 2))
    return rows


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """This script's own flags, and the rest (throughput.py's model flags, jax mode only)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=15, help="timed calls per convolution")
    parser.add_argument("--out", help="write the per-convolution rows here (jax mode)")
    parser.add_argument("--torch", metavar="JSON",
                        help="torch mode: time the shapes in this file (written by --out)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args, rest = parser.parse_known_args(argv)
    if args.calls < 1:
        parser.error(f"--calls must be >= 1, got {args.calls}")
    if args.torch and rest:
        parser.error(f"--torch takes the shapes from its file, not model flags: {rest}")
    return args, rest


def main(argv=None) -> dict:
    args, model_argv = parse_args(argv)
    if args.torch:
        with open(args.torch) as f:
            rows = json.load(f)
        rows = time_torch(rows, args.calls, args.threads)
        result = {"framework": "torch", "convolutions": len(rows), **_totals(rows, "xla"),
                  **_totals(rows, "torch"), "rows": rows}
    else:
        from throughput import build_model, parse_args as model_args  # imports jax

        model_flags = model_args(model_argv)
        rows = time_xla(conv_shapes(build_model(model_flags), model_flags.image_size,
                                    model_flags.channels, model_flags.batch), args.calls)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f)
        result = {"framework": "jaxdiff", "model": model_flags.model,
                  "convolutions": len(rows), **_totals(rows, "xla"), "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
