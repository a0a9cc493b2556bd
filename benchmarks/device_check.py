"""The first-accelerator check: train and sample throughput, MFU, compile time, memory, bf16 loss.

    bash benchmarks/device_check.sh            # on a GPU / TPU: writes $OUT/device_check.json, .md
    bash benchmarks/device_check.sh --tiny     # the same code at toy sizes (CPU, CI)

Needs only jax, flax, optax and numpy (no TFDS, matplotlib, scikit-learn, ml_collections, diffrax:
the jaxdiff modules it imports do not import them). For each case — DDPMUnet (Ho et al.'s
CIFAR-10 net, 35.7M) at batch 128 and 256 on 32x32x3, and the dim-64 Unet (1,2,4,8) on 64x64x3,
each in bfloat16 compute (float32 parameters) and float32, then DDPMUnet at 256 in bf16 with
`remat` (its memory and speed against the plain step), at 512 in bf16, and at 256 in bf16 with
the optimiser under `optax.flatten` (one vector instead of per-leaf kernels) — it measures,
compile time excluded:

  train_img_per_s        the library's jitted train step (loss, grads, clipped AdamW, EMA;
                         state donated), median of `repeats` timed runs of `steps` steps
  sample_img_steps_per_s `jaxdiff.ddim_sample` (one network call per image and step)
  train_mfu, sample_mfu  model FLOP/s over the card's dense peak for the compute dtype
                         (PEAK_TFLOPS, by device_kind; float32 matmuls on GPUs run as TF32 by
                         default, so its peak is used). Model FLOPs are the matmul and conv
                         FLOPs of the forward pass counted from its jaxpr (throughput.model_flops:
                         12.44 GFLOP per 32x32 image for DDPMUnet, Ho et al.'s count), 3x that per
                         training image. XLA's own cost analysis is kept as
                         xla_train_flops_per_step; on GPUs it omits the cuDNN convolutions (on
                         the H200 it counted 1/30 of DDPMUnet's work).
  compile_s              ahead-of-time compile of the train step and the sampler
  memory                 XLA's memory analysis of the compiled train step (arguments, outputs,
                         temporaries), and the device's peak bytes in use so far (GPU / TPU)
  train_hlo              fusion instructions and elementwise instructions left unfused in the
                         optimised HLO of the train step (norm + activation + residual chains
                         should all sit inside fusions), with a few examples
  loss_vs_float32        bf16 cases: |loss_bf16 - loss_f32| / loss_f32 of the training loss on
                         the same batch, noise and times with the same "probe" parameters (the
                         initial ones with near-zero-initialised kernels, DDPMUnet's last convs,
                         redrawn at LeCun scale, so that every layer shapes the output); must stay
                         below LOSS_TOLERANCE

Cases run in priority order and stop when `--budget_s` is spent (the rest are marked skipped), so
the script fits in a few minutes of device time. One compile per case and shape: the timed calls
reuse the compiled executables.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdiff
from jaxdiff import sharding
from jaxdiff.compilation import jit
from jaxdiff.models import DDPMUnet, Unet
from jaxdiff.training import LinenApply, create_train_state, make_optimizer, make_train_step

from throughput import flops_of, model_flops, timed  # (benchmarks/ is the script's directory)

LOSS_TOLERANCE = 3e-2  # bf16 compute vs float32, relative, on the first step's loss

# Dense peak TFLOP/s per chip: (bfloat16, float32 as the matmul unit runs it by default).
PEAK_TFLOPS = {
    "H200": (989.0, 494.5), "H100": (989.0, 494.5), "H800": (989.0, 494.5),
    "A100": (312.0, 156.0), "L4": (121.0, 60.0), "A10G": (70.0, 35.0),
    "TPU v4": (275.0, 275.0), "TPU v5 lite": (197.0, 197.0), "TPU v5e": (197.0, 197.0),
    "TPU v5p": (459.0, 459.0), "TPU v6 lite": (918.0, 918.0), "TPU v6e": (918.0, 918.0),
}

PLAIN, REMAT, FLAT = {}, {"remat": True}, {"flatten_optimizer": True}
FULL_CASES = [  # (name, model, batch, image size, dtypes, run_case options), in priority order
    ("ddpm_unet_b128", "ddpm_unet", 128, 32, ("float32", "bfloat16"), PLAIN),
    ("unet64_64px_b64", "unet", 64, 64, ("float32", "bfloat16"), PLAIN),
    ("ddpm_unet_b256", "ddpm_unet", 256, 32, ("float32", "bfloat16"), PLAIN),
    ("ddpm_unet_b256_remat", "ddpm_unet", 256, 32, ("bfloat16",), REMAT),
    ("ddpm_unet_b512", "ddpm_unet", 512, 32, ("bfloat16",), PLAIN),  # the fixed cost per step
    # optax.flatten: clipping and AdamW on one concatenated vector instead of per leaf; A/B
    # against ddpm_unet_b256_bfloat16 for the per-leaf optimiser kernels' share of that cost
    ("ddpm_unet_b256_flat", "ddpm_unet", 256, 32, ("bfloat16",), FLAT),
]
TINY_CASES = [
    ("ddpm_unet_tiny", "ddpm_unet", 4, 4, ("float32", "bfloat16"), PLAIN),
    ("unet_tiny", "unet", 4, 4, ("float32", "bfloat16"), PLAIN),
    ("ddpm_unet_tiny_flat", "ddpm_unet", 4, 4, ("bfloat16",), FLAT),
]


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    for key, (bf16, f32) in PEAK_TFLOPS.items():
        if key.lower() in device_kind.lower():
            return bf16 if dtype == "bfloat16" else f32
    return None


def build(model_name: str, dtype: str, tiny: bool, remat: bool = False):
    kwargs = dict(dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32,
                  param_dtype=jnp.float32, remat=remat)
    if model_name == "ddpm_unet":
        if tiny:
            return DDPMUnet(ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(4,),
                            dropout=0.1, **kwargs)
        return DDPMUnet(**kwargs)
    if tiny:
        return Unet(dim=8, dim_mults=(1,), **kwargs)
    return Unet(dim=64, dim_mults=(1, 2, 4, 8), **kwargs)


def memory_of(compiled) -> dict | None:
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if analysis is None:
        return None
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
              "generated_code_size_in_bytes")
    return {f: int(getattr(analysis, f)) for f in fields if hasattr(analysis, f)}


_ELEMENTWISE = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "exponential",
                "log", "tanh", "rsqrt", "sqrt", "negate", "convert", "select", "compare",
                "logistic", "power", "abs", "exponential-minus-one", "log-plus-one"}


def hlo_fusion_report(hlo_text: str) -> dict:
    """Counts in the optimised HLO of a compiled step: fusion instructions, and elementwise
    instructions left outside any fusion (each one a separate kernel reading and writing memory,
    what a fused norm + activation + residual chain should not produce). Computations that are a
    fusion's body or a reducer (`calls=`, `to_apply=`) are not counted; loop bodies are."""
    called = set(re.findall(r"(?:calls|to_apply)=(%[\w.\-]+)", hlo_text))
    fusions = unfused = copies = 0
    examples: list[str] = []
    current = None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY\s+)?(%[\w.\-]+)\s.*\{\s*$", line)
        if header:
            current = header.group(1)
            continue
        if line.startswith("}"):
            current = None
            continue
        # the result type is an array type or, for multi-output fusions, a tuple of them
        op = re.search(r"=\s*(?:\([^=]*?\)|[\w\[\]{},:]+)\s+([a-z][\w\-]*)\(", line)
        if current is None or current in called or not op:
            continue
        if op.group(1) == "fusion":
            fusions += 1
        elif op.group(1) == "copy":  # a materialised layout change (transpose)
            copies += 1
        elif op.group(1) in _ELEMENTWISE:
            unfused += 1
            if len(examples) < 5:
                examples.append(line.strip()[:160])
    return {"fusions": fusions, "unfused_elementwise": unfused, "copies": copies,
            "unfused_examples": examples}


def device_peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def probe_params(params, key):
    """`params` with every (near-)zero-initialised kernel redrawn N(0, 1 / fan_in): at
    initialisation DDPMUnet's last convs start at scale 1e-10, so its output is ~0 whatever the
    dtype, which would make a loss comparison vacuous."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for leaf, k in zip(leaves, keys):
        fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim >= 2 else 1
        if leaf.ndim >= 2 and float(jnp.std(leaf)) * np.sqrt(fan_in) < 1e-3:
            leaf = jax.random.normal(k, leaf.shape, leaf.dtype) / np.sqrt(fan_in)
        out.append(leaf)
    return jax.tree.unflatten(treedef, out)


def run_case(name, model_name, batch, size, dtype, args, mesh, reference_loss=None,
             remat=False, flatten_optimizer=False) -> dict:
    """Measure one (model, batch, dtype) case; returns its row."""
    model = build(model_name, dtype, args.tiny, remat)
    schedule = jaxdiff.make_schedule("cosine", 1000)
    shape = (batch, size, size, 3)
    x0 = jax.random.uniform(jax.random.key(1), shape, jnp.float32, -1.0, 1.0)
    params = jax.jit(model.init)(jax.random.key(0), x0[:1], jnp.zeros((1,), jnp.int32))
    optimizer = make_optimizer(1e-4, grad_clip=1.0)
    if flatten_optimizer:
        optimizer = optax.flatten(optimizer)
    step = make_train_step(LinenApply(model), optimizer, schedule,
                           loss_kwargs=dict(objective="pred_noise"), takes_key=True, mesh=mesh)
    state = sharding.put_replicated(
        create_train_state(jax.tree.map(jnp.copy, params), optimizer, jax.random.key(2)), mesh)
    batches = [jax.device_put({"x": jax.random.uniform(jax.random.key(3 + i), shape,
                                                       jnp.float32, -1.0, 1.0)},
                              sharding.batch_sharding(mesh)) for i in range(2)]
    compiled, train_compile_s = timed(lambda: step.lower(state, batches[0]).compile())
    def probe_loss_of(net):
        return float(jax.jit(lambda p, x: jaxdiff.diffusion_loss(
            functools.partial(net.apply, p), schedule, x, jax.random.key(5))[0])(
                probe_params(params, jax.random.key(6)), batches[0]["x"]))

    probe_loss = probe_loss_of(model)
    if dtype != "float32" and reference_loss is None:  # a bf16 case run without its f32 row
        reference_loss = probe_loss_of(build(model_name, "float32", args.tiny, remat))
    forward_flops = model_flops(model.apply, params, x0, jnp.zeros((batch,), jnp.int32))
    for i in range(args.warmup):
        state, metrics = compiled(state, batches[i % 2])
    jax.block_until_ready(state)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(args.steps):
            state, metrics = compiled(state, batches[i % 2])
        jax.block_until_ready((state, metrics))
        rates.append(args.steps * batch / (time.perf_counter() - start))
    if not np.isfinite(float(metrics["loss"])):
        raise FloatingPointError(f"{name} {dtype}: train loss {float(metrics['loss'])}")
    xla_train_flops = flops_of(compiled)
    train_flops = 3.0 * forward_flops
    train_memory = memory_of(compiled)
    train_hlo = hlo_fusion_report(compiled.as_text())
    if args.hlo_case == f"{name}_{dtype}":
        with open(os.path.join(args.out, f"{name}_{dtype}.hlo.txt"), "w") as handle:
            handle.write(compiled.as_text())
    state = compiled = None  # free the train state before the sampler's compile

    @jit
    def sample(params, key, x_T):
        return jaxdiff.ddim_sample(functools.partial(model.apply, params), schedule, key=key,
                                   shape=shape, num_steps=args.sample_steps, x_T=x_T)

    params = sharding.put_replicated(params, mesh)
    key = jax.random.key(4)
    x_T = sharding.batch_noise(key, shape, mesh)
    sampler, sample_compile_s = timed(lambda: sample.lower(params, key, x_T).compile())
    jax.block_until_ready(sampler(params, key, x_T))
    sample_rates = []
    for r in range(args.repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(sampler(params, jax.random.fold_in(key, r), x_T))
        sample_rates.append(batch * args.sample_steps / (time.perf_counter() - start))
    if not np.all(np.isfinite(np.asarray(out))):
        raise FloatingPointError(f"{name} {dtype}: samples are not finite")
    sample_flops = forward_flops  # per step: one network call of the batch

    kind = jax.devices()[0].device_kind
    peak = peak_tflops(kind, dtype)
    train_rate, sample_rate = statistics.median(rates), statistics.median(sample_rates)
    train_tflops = None if train_flops is None else train_flops * train_rate / batch / 1e12
    sample_tflops = None if sample_flops is None else sample_flops * sample_rate / batch / 1e12
    row = {
        "case": name, "model": model_name, "dtype": dtype, "batch": batch, "remat": remat,
        "flatten_optimizer": flatten_optimizer,
        "image_size": size, "params": int(sum(p.size for p in jax.tree.leaves(params))),
        "train_img_per_s": round(train_rate, 2),
        "train_img_per_s_runs": [round(r, 2) for r in rates],
        "sample_img_steps_per_s": round(sample_rate, 2),
        "train_flops_per_step": train_flops, "xla_train_flops_per_step": xla_train_flops,
        "train_tflop_per_s": train_tflops and round(train_tflops, 3),
        "sample_tflop_per_s": sample_tflops and round(sample_tflops, 3),
        "peak_tflop_per_s": peak,
        "train_mfu": (None if peak is None or train_tflops is None
                      else round(train_tflops / peak, 4)),
        "sample_mfu": (None if peak is None or sample_tflops is None
                       else round(sample_tflops / peak, 4)),
        "compile_s": round(train_compile_s, 2), "sample_compile_s": round(sample_compile_s, 2),
        "train_memory": train_memory, "device_peak_bytes_so_far": device_peak_bytes(),
        "train_hlo": train_hlo,
        "probe_loss": probe_loss,
    }
    if reference_loss is not None:
        row["loss_vs_float32"] = abs(probe_loss - reference_loss) / abs(reference_loss)
        row["loss_matches_float32"] = row["loss_vs_float32"] < LOSS_TOLERANCE
    return row


def table(rows: list[dict], header: dict) -> str:
    lines = [f"# device check: {header['device_kind']} x{header['device_count']}, jax "
             f"{header['jax']}, {header['date']}", "",
             "| case | dtype | train img/s | train MFU | sample img-steps/s | sample MFU | "
             "compile s (train / sample) | train temp MiB | fusions / unfused elementwise | "
             "loss vs f32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['case']} | {row['dtype']} | skipped: {row['skipped']} |"
                         " | | | | | | |")
            continue
        mfu = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        memory = row["train_memory"] or {}
        temp = memory.get("temp_size_in_bytes")
        loss = row.get("loss_vs_float32")
        lines.append(
            f"| {row['case']} | {row['dtype']} | {row['train_img_per_s']:,.0f} | "
            f"{mfu(row['train_mfu'])} | {row['sample_img_steps_per_s']:,.0f} | "
            f"{mfu(row['sample_mfu'])} | {row['compile_s']} / {row['sample_compile_s']} | "
            f"{'n/a' if temp is None else f'{temp / 2**20:,.0f}'} | "
            f"{row['train_hlo']['fusions']} / {row['train_hlo']['unfused_elementwise']} | "
            f"{'' if loss is None else f'{loss:.2e}'} |")
    return "\n".join(lines) + "\n"


def write_report(out: str, header: dict, rows: list[dict], failures: list[str],
                 start: float) -> str:
    header["seconds"] = round(time.perf_counter() - start, 1)
    header["failures"] = failures
    with open(os.path.join(out, "device_check.json"), "w") as handle:
        json.dump({"header": header, "rows": rows}, handle, indent=1)
    text = table(rows, header)
    with open(os.path.join(out, "device_check.md"), "w") as handle:
        handle.write(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes (CPU, CI)")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="output folder")
    parser.add_argument("--budget_s", type=float, default=None,
                        help="stop starting cases after this many seconds (default 300; tiny 600)")
    parser.add_argument("--cases", default=None,
                        help="comma-separated CASE or CASE_DTYPE names to run (default: all)")
    parser.add_argument("--hlo_case", default="ddpm_unet_b128_bfloat16",
                        help="write this case's optimised train-step HLO (CASE_DTYPE) to --out")
    args = parser.parse_args(argv)
    known = {name for name, *_ in TINY_CASES + FULL_CASES} | {
        f"{name}_{dtype}" for name, _, _, _, dtypes, _ in TINY_CASES + FULL_CASES
        for dtype in dtypes}
    unknown = sorted(set(args.cases.split(",")) - known) if args.cases else []
    if unknown:
        parser.error(f"--cases={args.cases} is invalid: unknown {unknown}; known: {sorted(known)}")
    args.steps, args.warmup, args.repeats = (2, 1, 2) if args.tiny else (10, 2, 3)
    args.sample_steps = 3 if args.tiny else 20
    budget = args.budget_s or (600.0 if args.tiny else 300.0)
    os.makedirs(args.out, exist_ok=True)
    mesh = sharding.make_mesh()
    start = time.perf_counter()
    header = {"device_kind": jax.devices()[0].device_kind, "platform": jax.default_backend(),
              "device_count": jax.device_count(), "jax": jax.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "tiny": args.tiny,
              "loss_tolerance": LOSS_TOLERANCE, "xla_flags": os.environ.get("XLA_FLAGS", "")}
    rows, failures = [], []
    for name, model_name, batch, size, dtypes, options in (TINY_CASES if args.tiny
                                                           else FULL_CASES):
        reference = None
        for dtype in dtypes:
            if args.cases and not {name, f"{name}_{dtype}"} & set(args.cases.split(",")):
                continue
            if time.perf_counter() - start > budget:
                rows.append({"case": name, "dtype": dtype, "skipped": "time budget"})
                continue
            try:
                row = run_case(name, model_name, batch, size, dtype, args, mesh, reference,
                               **options)
            except Exception as error:  # noqa: BLE001 - recorded, the other cases still run
                failures.append(f"{name} {dtype}: {type(error).__name__}: {error}")
                rows.append({"case": name, "dtype": dtype,
                             "skipped": f"failed ({type(error).__name__})"})
                continue
            reference = row["probe_loss"] if dtype == "float32" else reference
            rows.append(row)
            print(json.dumps(row), flush=True)
            text = write_report(args.out, header, rows, failures, start)  # kept if cut short
    text = write_report(args.out, header, rows, failures, start)
    print(text)
    bad = [r["case"] for r in rows if r.get("loss_matches_float32") is False]
    for message in failures:
        print(f"FAILED {message}", file=sys.stderr)
    if bad:
        print(f"FAILED bf16 loss differs from float32 by more than {LOSS_TOLERANCE} in {bad}",
              file=sys.stderr)
    return 1 if failures or bad else 0


if __name__ == "__main__":
    sys.exit(main())
