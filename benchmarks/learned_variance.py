"""Learned variance (Nichol & Dhariwal 2021) against fixed variance on the 8x8 digits: sample
quality of respaced DDPM / DDIM at few steps, and held-out bits/dim.

    python train.py --config digits --workdir runs/digits                       # fixed_small
    python train.py --config digits --workdir runs/digits_lv \
        --config.model.learned_variance=true --config.sample.variance=learned_range \
        --config.eval.likelihood=false                                           # hybrid loss
    PYTHONPATH=. python benchmarks/learned_variance.py --workdir runs/digits \
        --out benchmarks/learned_variance.jsonl
    PYTHONPATH=. python benchmarks/learned_variance.py --workdir runs/digits_lv \
        --out benchmarks/learned_variance.jsonl
    PYTHONPATH=. python benchmarks/learned_variance.py --workdir runs/digits --only fd \
        --steps 50 --seed 1                   # a second x_T, for the seed-to-seed spread
    PYTHONPATH=. python benchmarks/learned_variance.py --tables benchmarks/learned_variance.jsonl

Rows (one JSON object per line, appended to --out), for a workdir loaded with load_run (EMA
parameters, newest checkpoint):
  kind "fd"          --count samples (default 1,000) from one x_T (seed --seed, the same x_T and
                     sampler key for every row and both runs), by
                       ddpm  jaxdiff.ddpm_sample respaced to K = num_steps steps, variance
                             "learned_range" for a learned-variance run, "fixed_small" and
                             "fixed_large" for a fixed one;
                       ddim  jaxdiff.ddim_sample, eta 0, trailing spacing, K steps
                             (learned_variance=True for a learned run: v is ignored);
                     clip_x0 and objective from the run's config; the digits-classifier Frechet
                     distance to the test split (jaxdiff.evaluate.digits_quality) next to the
                     train-vs-test floor. Non-finite samples are counted ("nonfinite"); when
                     there are any, "digits_fd" is null and "digits_fd_finite" is the distance
                     of the finite ones only.
  kind "likelihood"  jaxdiff.evaluate.likelihood_report on the first --likelihood_examples
                     digits of the test split (360 in all): VLB bits/dim (discretised decoder;
                     the run's learned variances, or config.sample.variance) and probability-
                     flow ODE bits/dim (uniform dequantisation, Hutchinson trace, tolerance
                     1e-3), seed 0.
"seconds" is the row's wall time (a row's first call includes its jit compilation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import cpu_busy_seconds, cpu_model, others_cpu_share  # noqa: E402

import jaxdiff  # noqa: E402
from jaxdiff.run import load_run  # noqa: E402

FIXED_VARIANCES = ("fixed_small", "fixed_large")


def noise(run, count: int, seed: int):
    """(x_T, the samplers' key) for a seed, as benchmarks/sampler_nfe.py draws them."""
    key = jax.random.key(seed)
    return (jax.random.normal(key, (count,) + tuple(run.data_shape), jax.numpy.float32),
            jax.random.fold_in(key, 1))


def learned(run) -> bool:
    return bool(run.config.model.get("learned_variance", False))


def sample(run, sampler: str, variance: str | None, steps: int, x_T, key) -> np.ndarray:
    config = run.config
    common = dict(key=key, shape=tuple(x_T.shape), x_T=x_T, objective=config.diffusion.objective,
                  clip_x0=bool(config.sample.clip_x0), num_steps=int(steps))
    if sampler == "ddpm":
        out = jaxdiff.ddpm_sample(run.model_fn, run.schedule, variance=variance, **common)
    else:
        out = jaxdiff.ddim_sample(run.model_fn, run.schedule, eta=0.0,
                                  learned_variance=learned(run), **common)
    return np.asarray(jax.block_until_ready(out))


def machine() -> dict:
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "jax": jax.__version__, "backend": jax.default_backend()}


def base_row(run, workdir: str) -> dict:
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "workdir": workdir, "step": run.step, "learned_variance": learned(run),
            "objective": run.config.diffusion.objective,
            "timesteps": int(run.schedule.timesteps), **machine()}


def timed(fn):
    busy, own, start = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    return out, wall, others_cpu_share(busy, cpu_busy_seconds(), time.process_time() - own, wall)


def fd_rows(run, workdir: str, steps, count: int, seed: int):
    from jaxdiff.evaluate import digits_quality

    x_T, key = noise(run, count, seed)
    variances = ("learned_range",) if learned(run) else FIXED_VARIANCES
    plan = [(sampler, v, k) for k in steps
            for sampler, v in [("ddpm", v) for v in variances] + [("ddim", None)]]
    for sampler, variance, k in plan:
        x, wall, others = timed(lambda s=sampler, v=variance, k=k: sample(run, s, v, k, x_T, key))
        flat = x.reshape(len(x), -1)
        finite = np.isfinite(flat).all(axis=1)
        row = dict(base_row(run, workdir), kind="fd", sampler=sampler, variance=variance,
                   eta=0.0 if sampler == "ddim" else None, num_steps=int(k), model_calls=int(k),
                   num_samples=count, seed=seed, seconds=wall, others_cpu_share=others,
                   nonfinite=int((~finite).sum()),
                   nonfinite_values=int((~np.isfinite(flat)).sum()),
                   max_abs=float(np.nanmax(np.abs(np.where(np.isfinite(flat), flat, np.nan))))
                   if finite.any() else None)
        if finite.all():
            quality = digits_quality(run.to_data_space(x), None)
            row.update(quality)
        else:
            row["digits_fd"] = None
            if finite.any():
                quality = digits_quality(run.to_data_space(x[finite]), None)
                row["digits_fd_finite"] = quality["digits_fd"]
                row["digits_fd_floor"] = quality["digits_fd_floor"]
        yield row


def likelihood_row(run, workdir: str, examples: int) -> dict:
    from jaxdiff.data.digits import digits_split
    from jaxdiff.evaluate import likelihood_report

    images, labels = digits_split("test")
    images, labels = images[:examples], labels[:examples]
    report, wall, others = timed(lambda: likelihood_report(
        run.config, run.model_fn, run.schedule, run.codec, images, labels, seed=0))
    return dict(base_row(run, workdir), kind="likelihood", split="test", seed=0, seconds=wall,
                others_cpu_share=others, **report)


def tables(path: str) -> str:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    newest = {}
    for r in rows:  # the newest row per measurement
        key = (r["kind"], r["workdir"], r.get("sampler"), r.get("variance"), r.get("num_steps"),
               r.get("seed"))
        newest[key] = r
    every_seed = [r for r in newest.values() if r["kind"] == "fd"]
    seeds = sorted({r["seed"] for r in every_seed})
    rows = [r for r in newest.values() if r["kind"] == "likelihood" or r["seed"] == seeds[0]]

    def name(r):
        return "learned (hybrid loss)" if r["learned_variance"] else "fixed (L_simple)"

    def fmt(v, digits=3):
        return "—" if v is None else f"{v:.{digits}f}"

    out = ["| model | step | test digits | VLB bits/dim | ODE bits/dim | VLB variance | "
           "seconds |", "|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["kind"] == "likelihood"),
                    key=lambda r: r["learned_variance"]):
        out.append(f"| {name(r)} `{r['workdir']}` | {r['step']} | {r['likelihood_examples']} | "
                   f"{fmt(r['vlb_bits_per_dim'])} | {fmt(r['ode_bits_per_dim'])} | "
                   f"{r['likelihood_variance']} | {r['seconds']:.0f} |")
    out.append("")
    steps = sorted({r["num_steps"] for r in rows if r["kind"] == "fd"})
    out.append("| model | sampler | " + " | ".join(f"FD @ {k}" for k in steps) + " | "
               + " | ".join(f"s @ {k}" for k in steps) + " |")
    out.append("|---|---|" + "---|" * (2 * len(steps)))
    groups = {}
    for r in rows:
        if r["kind"] == "fd":
            label = ("DDIM (eta 0)" if r["sampler"] == "ddim"
                     else f"DDPM respaced, {r['variance']}")
            groups.setdefault((r["learned_variance"], r["sampler"] == "ddim", label, name(r)),
                              {})[r["num_steps"]] = r
    for (_, _, label, model), by_k in sorted(groups.items()):
        cells = []
        for k in steps:
            r = by_k.get(k)
            if r is None:
                cells.append("—")
            elif r["nonfinite"]:
                cells.append(f"NaN/inf in {r['nonfinite']}/{r['num_samples']} "
                             f"(finite: {fmt(r.get('digits_fd_finite'), 2)})")
            else:
                cells.append(fmt(r["digits_fd"], 2))
        secs = [fmt(by_k[k]["seconds"], 0) if k in by_k else "—" for k in steps]
        out.append(f"| {model} | {label} | " + " | ".join(cells) + " | " + " | ".join(secs)
                   + " |")
    floors = {round(r["digits_fd_floor"], 2) for r in rows
              if r["kind"] == "fd" and r.get("digits_fd_floor") is not None}
    out.append("")
    out.append(f"Train-vs-test floor: {', '.join(str(f) for f in sorted(floors))}. "
               f"x_T seed {seeds[0]}.")
    if len(seeds) > 1:  # the same rows at other x_T seeds, where measured
        out += ["", "| model | sampler | K | " + " | ".join(f"FD seed {s}" for s in seeds)
                + " |", "|---|---|---|" + "---|" * len(seeds)]
        by = {}
        for r in every_seed:
            label = ("DDIM (eta 0)" if r["sampler"] == "ddim"
                     else f"DDPM respaced, {r['variance']}")
            by.setdefault((r["learned_variance"], r["sampler"] == "ddim", label, name(r),
                           r["num_steps"]), {})[r["seed"]] = r
        for (_, _, label, model, k), by_seed in sorted(by.items()):
            if len(by_seed) < 2:
                continue
            cells = ["—" if s not in by_seed else
                     (f"NaN/inf in {by_seed[s]['nonfinite']}" if by_seed[s]["nonfinite"]
                      else fmt(by_seed[s]["digits_fd"], 2)) for s in seeds]
            out.append(f"| {model} | {label} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir")
    parser.add_argument("--out", default="benchmarks/learned_variance.jsonl")
    parser.add_argument("--steps", default="50,100", help="respaced step counts K")
    parser.add_argument("--count", type=int, default=1000, help="samples per FD row")
    parser.add_argument("--seed", type=int, default=0, help="x_T seed")
    parser.add_argument("--likelihood_examples", type=int, default=360,
                        help="first N test digits for bits/dim (360 = all)")
    parser.add_argument("--only", choices=("fd", "likelihood"), help="one kind of row only")
    parser.add_argument("--tables", metavar="JSONL", help="print the markdown tables and exit")
    args = parser.parse_args(argv)
    if args.tables:
        print(tables(args.tables))
        return
    if not args.workdir:
        parser.error("--workdir is required (or --tables)")
    run = load_run(args.workdir)
    steps = [int(k) for k in args.steps.split(",")]

    def emit(row):
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in row if k not in machine()}), flush=True)

    if args.only in (None, "fd"):
        for row in fd_rows(run, args.workdir, steps, args.count, args.seed):
            emit(row)
    if args.only in (None, "likelihood"):
        emit(likelihood_row(run, args.workdir, args.likelihood_examples))


if __name__ == "__main__":
    main()
