"""Training and sampling throughput of jaxdiff's image U-Nets, compile time excluded.

    python benchmarks/throughput.py --dim 32 --dim_mults 1,2,2 --image_size 28 --channels 1 \
        --batch 64 --steps 20 --warmup 3 --sample_steps 10

prints one JSON line: parameter count, training images/s (the library's jitted train step: loss,
gradients, clipped AdamW, EMA), sampling image-steps/s (`jaxdiff.ddim_sample`, one network
evaluation per image and step), compile times, and the train step's FLOPs from XLA's cost
analysis with the TFLOP/s they imply. Each timing is the median of `--repeats` timed runs.

Inputs are random images already on the device, so the numbers are the model's speed, not the
data pipeline's. With several devices the batch is split over the mesh of `jaxdiff.sharding` and
the train state is replicated (data parallelism, as train_loop runs it); the batch must divide
evenly.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff
from jaxdiff import sharding
from jaxdiff.compilation import compiler_options, jit
from jaxdiff.models import DDPMUnet, Unet
from jaxdiff.training import LinenApply, create_train_state, make_optimizer, make_train_step

from bench_common import (add_shared_args, cpu_busy_seconds, cpu_model, others_cpu_share,
                          parse)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_args(parser, dtype_help="compute dtype; parameters stay float32")
    parser.add_argument("--model", choices=("unet", "ddpm_unet"), default="unet")
    parser.add_argument("--resnet_block_groups", type=int, default=8,
                        help="Unet Block norm: GroupNorm groups, or 0 for the RMSNorm of "
                             "denoising-diffusion-pytorch 2.x")
    parser.add_argument("--num_classes", type=int, default=0,
                        help="> 0 adds a label embedding and feeds labels")
    parser.add_argument("--remat", action="store_true",
                        help="rematerialise the ResNet blocks (model.remat)")
    return parse(parser, argv)


def build_model(args):
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    if args.model == "ddpm_unet":
        return DDPMUnet(ch=args.dim, ch_mult=args.dim_mults, channels=args.channels,
                        num_classes=args.num_classes, dtype=dtype, param_dtype=jnp.float32,
                        remat=args.remat)
    return Unet(dim=args.dim, dim_mults=args.dim_mults, channels=args.channels,
                resnet_block_groups=args.resnet_block_groups or None,
                num_classes=args.num_classes, dtype=dtype, param_dtype=jnp.float32,
                remat=args.remat)


def random_batch(args, key) -> dict[str, jax.Array]:
    """A training batch as train_loop feeds it: x in [-1, 1] [B, H, W, C], labels int32 [B]."""
    key_x, key_labels = jax.random.split(key)
    shape = (args.batch, args.image_size, args.image_size, args.channels)
    batch = {"x": jax.random.uniform(key_x, shape, jnp.float32, -1.0, 1.0)}
    if args.num_classes:
        batch["labels"] = jax.random.randint(key_labels, (args.batch,), 0, args.num_classes,
                                             jnp.int32)
    return batch


def flops_of(compiled) -> float | None:
    """FLOPs of one call from XLA's cost analysis (a dict, or a one-element list in older JAX)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _jaxpr_matmul_flops(jaxpr) -> float:
    """2 x multiply-adds of every dot_general and conv_general_dilated in a jaxpr, descending
    into sub-jaxprs (jit, remat, custom_vjp, scan bodies times their length)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            contracted = np.prod([lhs_shape[d] for d in lhs_contract]) if lhs_contract else 1
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * contracted
        elif name == "conv_general_dilated":
            rhs_shape = eqn.invars[1].aval.shape
            out_features = rhs_shape[eqn.params["dimension_numbers"].rhs_spec[0]]
            # each output element: one multiply-add per kernel tap and input feature of its group
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod(rhs_shape) / out_features
        else:
            multiplier = eqn.params.get("length", 1) if name == "scan" else 1
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        total += multiplier * _jaxpr_matmul_flops(inner)
    return total


def model_flops(fn, *args) -> float:
    """Matmul and convolution FLOPs of one call of `fn(*args)`, counted from its jaxpr, so the
    same on every backend (XLA's cost analysis of a GPU executable omits cuDNN convolutions).
    The MFU convention: a training step is 3x the forward pass, recomputation not counted."""
    return float(_jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr))


def temp_bytes_of(compiled) -> int | None:
    """XLA's temporary buffer bytes of one call (activations kept for the backward pass, ...)."""
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def timed(compile_fn):
    start = time.perf_counter()
    result = compile_fn()
    return result, time.perf_counter() - start


def benchmark_train(args, model, params, mesh):
    """(train img/s per repeat, median CPU seconds per step, other processes' CPU share per
    repeat, compile seconds, FLOPs per step)."""
    optimizer = make_optimizer(1e-4, grad_clip=1.0)
    schedule = jaxdiff.make_schedule("cosine", 1000)
    train_step = make_train_step(
        LinenApply(model), optimizer, schedule,
        loss_kwargs=dict(objective=args.objective), ema_decay=0.9999, takes_key=True, mesh=mesh,
    )
    # A copy: the step donates the state, and the sampler benchmark still needs `params`.
    params = jax.tree.map(jnp.copy, params)
    state = sharding.put_replicated(
        create_train_state(params, optimizer, jax.random.key(args.seed + 1)), mesh)
    batches = [jax.device_put(random_batch(args, jax.random.key(args.seed + 2 + i)),
                              sharding.batch_sharding(mesh)) for i in range(2)]
    compiled, compile_s = timed(lambda: train_step.lower(state, batches[0]).compile())

    for i in range(args.warmup):
        state, metrics = compiled(state, batches[i % 2])
    jax.block_until_ready((state, metrics) if args.warmup else state)
    rates, cpu_s, others = [], [], []
    for _ in range(args.repeats):
        start, start_cpu, start_busy = time.perf_counter(), time.process_time(), cpu_busy_seconds()
        for i in range(args.steps):
            # Steps are chained through `state`, so blocking on the last one waits for all.
            state, metrics = compiled(state, batches[i % 2])
        jax.block_until_ready((state, metrics))
        wall, own = time.perf_counter() - start, time.process_time() - start_cpu
        rates.append(args.steps * args.batch / wall)
        cpu_s.append(own / args.steps)
        others.append(others_cpu_share(start_busy, cpu_busy_seconds(), own, wall))
    if not np.isfinite(float(metrics["loss"])):
        raise FloatingPointError(f"train loss is {float(metrics['loss'])}")
    return (rates, statistics.median(cpu_s), others, compile_s, flops_of(compiled),
            temp_bytes_of(compiled))


def benchmark_sample(args, model, params, mesh):
    """(sample image-steps/s per repeat, other processes' CPU share per repeat, compile seconds,
    FLOPs per step).

    XLA's cost analysis counts a while loop's body once, so for the sampler's `lax.scan` it
    gives the FLOPs of one step (one network evaluation of the batch plus the update)."""
    schedule = jaxdiff.make_schedule("cosine", 1000)
    shape = (args.batch, args.image_size, args.image_size, args.channels)
    cond = {"labels": jnp.zeros((args.batch,), jnp.int32)} if args.num_classes else None

    @jit
    def sample(params, key, x_T):
        return jaxdiff.ddim_sample(
            functools.partial(model.apply, params), schedule, key=key, shape=shape,
            num_steps=args.sample_steps, objective=args.objective, x_T=x_T, cond=cond,
        )

    params = sharding.put_replicated(params, mesh)
    key = jax.random.key(args.seed + 10)
    x_T = sharding.batch_noise(key, shape, mesh)
    compiled, compile_s = timed(lambda: sample.lower(params, key, x_T).compile())
    jax.block_until_ready(compiled(params, key, x_T))
    # Made before timing: an eager fold_in compiles on first use.
    keys = jax.block_until_ready([jax.random.fold_in(key, i) for i in range(args.sample_calls)])
    rates, others = [], []
    for _ in range(args.repeats):
        start, start_cpu, start_busy = time.perf_counter(), time.process_time(), cpu_busy_seconds()
        # Independent calls: block on every output, not only the last.
        samples = [compiled(params, k, x_T) for k in keys]
        jax.block_until_ready(samples)
        wall = time.perf_counter() - start
        rates.append(args.sample_calls * args.batch * args.sample_steps / wall)
        others.append(others_cpu_share(start_busy, cpu_busy_seconds(),
                                       time.process_time() - start_cpu, wall))
    if not np.all(np.isfinite(np.asarray(samples[-1]))):
        raise FloatingPointError("samples are not finite")
    return rates, others, compile_s, flops_of(compiled)


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = build_model(args)
    mesh = sharding.make_mesh()
    if args.batch % sharding.num_batch_shards(mesh):
        raise SystemExit(f"--batch={args.batch} is invalid: it must be divisible by the "
                         f"{sharding.num_batch_shards(mesh)} devices the batch is split over")
    x = jnp.zeros((1, args.image_size, args.image_size, args.channels), jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(args.seed), x, t)
    num_params = int(sum(leaf.size for leaf in jax.tree.leaves(params)))
    forward_flops = model_flops(model.apply, params, x, t)  # per image
    load_before = os.getloadavg()[0]

    (train_rates, train_cpu_s, train_others, train_compile_s, xla_train_flops,
     train_temp_bytes) = benchmark_train(args, model, params, mesh)
    sample_rates, sample_others, sample_compile_s, xla_sample_flops = benchmark_sample(
        args, model, params, mesh)
    # Model FLOPs (the MFU convention; torch_reference.py counts with FlopCounterMode).
    train_flops, sample_flops = 3.0 * forward_flops * args.batch, forward_flops * args.batch

    train_img_per_s = statistics.median(train_rates)
    step_s = args.batch / train_img_per_s
    result = {
        "framework": "jaxdiff", "jax": jax.__version__,
        "model": args.model, "dim": args.dim, "dim_mults": list(args.dim_mults),
        "image_size": args.image_size, "channels": args.channels, "batch": args.batch,
        "dtype": args.dtype,
        "block_norm": ("GroupNorm(32)" if args.model == "ddpm_unet" else
                       f"GroupNorm({args.resnet_block_groups})" if args.resnet_block_groups
                       else "RMSNorm"),
        "num_classes": args.num_classes, "objective": args.objective, "remat": args.remat,
        "train_temp_bytes": train_temp_bytes,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "sample_steps": args.sample_steps, "sample_calls": args.sample_calls,
        "params": num_params,
        "train_img_per_s": round(train_img_per_s, 2),
        "train_img_per_s_runs": [round(r, 2) for r in train_rates],
        "train_step_ms": round(1e3 * step_s, 2),
        # Process CPU time (all threads) per step: less sensitive than wall time to other jobs
        # sharing the CPU, though spinning worker threads count too.
        "train_cpu_s_per_step": round(train_cpu_s, 3),
        "train_others_cpu_share_runs": [None if o is None else round(o, 2) for o in train_others],
        "sample_img_steps_per_s": round(statistics.median(sample_rates), 2),
        "sample_img_steps_per_s_runs": [round(r, 2) for r in sample_rates],
        "sample_others_cpu_share_runs": [None if o is None else round(o, 2) for o in sample_others],
        "compile_s": round(train_compile_s, 2),
        "sample_compile_s": round(sample_compile_s, 2),
        "train_flops_per_step": train_flops,
        "train_tflop_per_s": round(train_flops / step_s / 1e12, 4),
        "sample_flops_per_step": sample_flops,
        "sample_tflop_per_s": round(
            sample_flops * statistics.median(sample_rates) / args.batch / 1e12, 4),
        "xla_train_flops_per_step": xla_train_flops, "xla_sample_flops_per_step": xla_sample_flops,
        "device_kind": jax.devices()[0].device_kind, "platform": jax.default_backend(),
        "device_count": jax.device_count(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compiler_options": compiler_options(),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
