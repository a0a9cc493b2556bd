"""Sample quality against the number of model calls (NFE) for jaxdiff's samplers, on two
trained runs, and (with --pictures) the digits editing pictures.

    python train.py --workdir runs/toy                                   # toy2d, minutes
    python train.py --config digits --workdir runs/digits                # offline digits
    PYTHONPATH=. python benchmarks/sampler_nfe.py --toy_workdir runs/toy \
        --digits_workdir runs/digits --out benchmarks/sampler_nfe.jsonl      # ~9 + ~35 min
    PYTHONPATH=. python benchmarks/sampler_nfe.py --tables benchmarks/sampler_nfe.jsonl
    PYTHONPATH=. python benchmarks/sampler_nfe.py --pictures --digits_workdir runs/digits \
        --out benchmarks/sampler_nfe.jsonl                                   # ~20 min

(times on 2 shared CPU cores; `--data points` or `--data digits` runs one half.)

Samplers (all from one x_T per seed, in model space, with the run's objective and clip_x0):
  ddim        jaxdiff.ddim_sample, eta 0, trailing spacing          NFE = steps
  dpm2m       jaxdiff.dpm_solver_sample, order 2 (DPM-Solver++ 2M)  NFE = steps
  dpm3m       jaxdiff.dpm_solver_sample, order 3 (DPM-Solver++ 3M)  NFE = steps
  euler       jaxdiff.karras_sample, solver "euler", no churn       NFE = steps
  heun        jaxdiff.karras_sample, solver "heun", no churn        NFE = 2 steps - 1
  ddpm        jaxdiff.ddpm_sample, all T steps (reference)          NFE = T
For Heun the step count is the largest whose NFE does not exceed the target; rows record the
actual NFE.

Quality:
  points  sliced Wasserstein distance of the samples to fresh data next to the fresh-vs-fresh
          floor, with the reference draws, metric seed and functions of the training
          evaluation (jaxdiff.evaluate._point_quality, jaxdiff.metrics.points), plus its energy
          distance and precision / recall (MMD left out: the slowest);
  digits  the digits-classifier Fréchet distance to the test split next to the train-vs-test
          floor (jaxdiff.evaluate.digits_quality).

Each (data set, sampler, NFE) is one jit compilation; its first call's wall time includes the
compile (`seconds`), later seeds reuse it. Output: one JSON object per line (`--out`, appended),
and with `--tables FILE` the markdown tables of a JSON lines file. `--pictures` writes
docs/sdedit_digits.png and docs/inpainting_digits.png (needs x_start / t_start and known / mask
in the samplers) and appends the classifier's accuracy on inpainted test digits to `--out`; the
digits NFE pass writes docs/samplers_digits.png. Results: benchmarks/sampler_nfe.md.
"""

from __future__ import annotations

import argparse
import datetime
import functools
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

SAMPLERS = ("ddim", "dpm2m", "dpm3m", "euler", "heun")
LABELS = {"ddim": "DDIM (eta 0)", "dpm2m": "DPM-Solver++ 2M", "dpm3m": "DPM-Solver++ 3M",
          "euler": "Karras Euler", "heun": "Karras Heun", "ddpm": "DDPM (ancestral)"}
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def steps_for(sampler: str, nfe: int) -> int:
    """The step count whose model calls come closest to `nfe` without exceeding it."""
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def model_calls(sampler: str, steps: int, timesteps: int) -> int:
    if sampler == "ddpm":
        return timesteps
    return 2 * steps - 1 if sampler == "heun" else steps


def run_sampler(run, sampler: str, steps: int, x_T, key):
    """One sampler from x_T (model space), with the run's objective and clip_x0; model space
    samples as numpy."""
    config = run.config
    common = dict(key=key, shape=tuple(x_T.shape), x_T=x_T, objective=config.diffusion.objective,
                  clip_x0=bool(config.sample.clip_x0))
    if sampler == "ddpm":
        out = jaxdiff.ddpm_sample(run.model_fn, run.schedule, variance=config.sample.variance,
                                  **common)
    elif sampler == "ddim":
        out = jaxdiff.ddim_sample(run.model_fn, run.schedule, num_steps=steps, eta=0.0, **common)
    elif sampler in ("dpm2m", "dpm3m"):
        out = jaxdiff.dpm_solver_sample(run.model_fn, run.schedule, num_steps=steps,
                                        order=2 if sampler == "dpm2m" else 3, **common)
    else:
        out = jaxdiff.karras_sample(run.model_fn, run.schedule, num_steps=steps, solver=sampler,
                                    **common)
    return np.asarray(jax.block_until_ready(out))


def noise(run, count: int, seed: int):
    """(x_T, the samplers' key) for a seed: the same x_T for every sampler."""
    key = jax.random.key(seed)
    return jax.random.normal(key, (count,) + tuple(run.data_shape), jax.numpy.float32), \
        jax.random.fold_in(key, 1)


def commit() -> str | None:
    """HEAD of the repository, with "+dirty" when jaxdiff/ has uncommitted changes."""
    import subprocess

    root = os.path.dirname(DOCS)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "jaxdiff"], cwd=root, check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> dict:
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "jax": jax.__version__, "device": str(jax.devices()[0].device_kind),
            "backend": jax.default_backend()}


def point_evaluator(run):
    """samples (data space) -> metrics, as jaxdiff.evaluate._point_quality computes them: fresh
    draws at seeds config.seed + 10,000 / + 20,000 (as many as samples), the metric seed
    config.seed. The floors come from one `point_quality_report` call per sample count; each
    sample set then gets the report's sliced Wasserstein, energy distance and precision / recall
    (the same functions and arguments; MMD, the slowest, is left out)."""
    from jaxdiff.data.sources import open_source
    from jaxdiff.metrics.points import (energy_distance, point_quality_report, precision_recall,
                                        sliced_wasserstein)

    config = run.config
    source = open_source(config)
    cache = {}

    def evaluate(samples):
        count = len(samples)
        if count not in cache:
            fresh_a = source.fresh(count, seed=config.seed + 10_000)["x"]
            fresh_b = source.fresh(count, seed=config.seed + 20_000)["x"]
            report = point_quality_report(fresh_b[:4], fresh_a, fresh_b, seed=config.seed)
            cache[count] = fresh_a, {k: v for k, v in report.items() if k.endswith("_floor")
                                     and not k.startswith("mmd")}
        fresh_a, floors = cache[count]
        if not np.isfinite(samples).all():
            return dict(floors, swd=np.nan, energy=np.nan, precision=np.nan, recall=np.nan)
        precision, recall = precision_recall(samples, fresh_a)
        return dict(floors, swd=sliced_wasserstein(samples, fresh_a, seed=config.seed),
                    energy=energy_distance(samples, fresh_a), precision=precision,
                    recall=recall)

    return evaluate


def digits_evaluator(run):
    from jaxdiff.evaluate import digits_quality

    del run
    return lambda images: digits_quality(images, None)


def measure(kind: str, workdir: str, nfes, seeds, count: int, out_path: str,
            samplers=SAMPLERS, with_ddpm: bool = True, grid_path: str | None = None,
            ddpm_seeds=None) -> list[dict]:
    run = load_run(workdir)
    evaluate = point_evaluator(run) if kind == "points" else digits_evaluator(run)
    timesteps = run.schedule.timesteps
    cells = [(sampler, steps_for(sampler, nfe), nfe) for nfe in nfes for sampler in samplers]
    if with_ddpm:
        cells.append(("ddpm", timesteps, timesteps))
    base = {"data": kind, "workdir": workdir, "step": run.step, "num_samples": count,
            "objective": run.config.diffusion.objective, "clip_x0": bool(run.config.sample.clip_x0),
            "schedule": run.config.diffusion.schedule, "timesteps": timesteps,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "commit": commit()}
    rows, grid = [], {}
    ddpm_seeds = seeds if ddpm_seeds is None else ddpm_seeds
    for seed in seeds:
        x_T, key = noise(run, count, seed)
        for sampler, steps, target in cells:
            if sampler == "ddpm" and seed not in ddpm_seeds:
                continue
            busy, cpu = cpu_busy_seconds(), time.process_time()
            start = time.perf_counter()
            x = run_sampler(run, sampler, steps, x_T, key)
            seconds = time.perf_counter() - start
            share = others_cpu_share(busy, cpu_busy_seconds(), time.process_time() - cpu, seconds)
            bad = int((~np.isfinite(x.reshape(len(x), -1)).all(axis=1)).sum())
            start = time.perf_counter()
            if bad:  # a diverged sampler: recorded, not fatal
                data, metrics = None, {"nonfinite_samples": bad}
            else:
                data = run.to_data_space(x)
                metrics = evaluate(data)
            row = dict(base, seed=seed, sampler=sampler, label=LABELS[sampler], steps=steps,
                       nfe_target=target, nfe=model_calls(sampler, steps, timesteps),
                       seconds=round(seconds, 3),
                       metric_seconds=round(time.perf_counter() - start, 3),
                       others_cpu_share=None if share is None else round(share, 3),
                       load_average=os.getloadavg()[0],
                       **{name: float(value) for name, value in metrics.items()})
            rows.append(row)
            with open(out_path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            shown = {k: round(v, 4) for k, v in metrics.items() if not k.endswith("_floor")}
            print(f"{kind} seed {seed} {sampler:5s} steps {steps:4d} NFE {row['nfe']:4d}: "
                  f"{shown} ({seconds:.1f} s)", flush=True)
            if grid_path and seed == seeds[0] and data is not None:
                grid[(sampler, row["nfe"])] = data[:12]
    if grid_path and grid:
        samplers_picture(grid, grid_path)
    return rows


def samplers_picture(grid: dict, path: str, targets=(10, 20), count: int = 12) -> None:
    """One row per sampler, the same 12 x_T at NFE ~10 (left) and ~20 (right); DDPM at T below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxdiff.plotting import image_grid

    rows = [s for s in SAMPLERS if any(k[0] == s for k in grid)]
    ddpm = [k for k in grid if k[0] == "ddpm"]
    fig, axes = plt.subplots(len(rows) + bool(ddpm), len(targets),
                             figsize=(5.0 * len(targets), 0.75 * (len(rows) + bool(ddpm)) + 0.2),
                             squeeze=False)
    for i, sampler in enumerate(rows):
        for j, target in enumerate(targets):
            nfe = max(nfe for s, nfe in grid if s == sampler and nfe <= target)
            ax = axes[i, j]
            ax.imshow(image_grid(grid[(sampler, nfe)][:count], nrow=count)[..., 0], cmap="gray",
                      vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"{LABELS[sampler]}, NFE {nfe}", fontsize=8, pad=2)
            ax.axis("off")
    if ddpm:
        axes[-1, 0].imshow(image_grid(grid[ddpm[0]][:count], nrow=count)[..., 0], cmap="gray",
                           vmin=0, vmax=255, interpolation="nearest")
        axes[-1, 0].set_title(f"{LABELS['ddpm']}, NFE {ddpm[0][1]}", fontsize=8, pad=2)
        for ax in axes[-1]:
            ax.axis("off")
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


# ---------------------------------------------------------------------------------- tables


def tables(path: str) -> str:
    with open(path) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    parts = []
    for kind, metric, floor_name, name in (("points", "swd", "swd_floor", "sliced Wasserstein"),
                                           ("digits", "digits_fd", "digits_fd_floor",
                                            "digits-classifier Fréchet distance")):
        chosen = [r for r in rows if r["data"] == kind]
        if not chosen:
            continue
        seeds = sorted({r["seed"] for r in chosen})
        targets = sorted({r["nfe_target"] for r in chosen if r["sampler"] != "ddpm"})
        floor = chosen[0][floor_name]
        spread = len(seeds) > 1
        header = "| sampler | " + " | ".join(f"NFE {t}" for t in targets) + " |"
        lines = [f"**{kind}** ({chosen[0]['workdir']}, step {chosen[0]['step']}, "
                 f"{chosen[0]['num_samples']} samples, seed(s) {', '.join(map(str, seeds))}): "
                 f"{name}" + (" mean ± std over seeds" if spread else "")
                 + f"; floor {floor:.4g}", "", header,
                 "|---|" + "---:|" * len(targets)]
        samplers = [s for s in SAMPLERS if any(r["sampler"] == s for r in chosen)]
        for sampler in samplers:
            cells = []
            for target in targets:
                found = [r for r in chosen if r["sampler"] == sampler and r["nfe_target"] == target]
                if not found:
                    cells.append("")
                    continue
                values = np.array([r[metric] for r in found])
                text = (f"{values.mean():.4g} ± {values.std(ddof=1):.2g}" if len(values) > 1
                        else f"{values[0]:.4g}")
                if found[0]["nfe"] != target:
                    text += f" (NFE {found[0]['nfe']})"
                cells.append(text)
            lines.append(f"| {LABELS[sampler]} | " + " | ".join(cells) + " |")
        ddpm = [r for r in chosen if r["sampler"] == "ddpm"]
        if ddpm:
            values = np.array([r[metric] for r in ddpm])
            text = (f"{values.mean():.4g} ± {values.std(ddof=1):.2g}" if len(values) > 1
                    else f"{values[0]:.4g}")
            lines.append("")
            lines.append(f"{LABELS['ddpm']}, NFE {ddpm[0]['nfe']}: {text}; floor {floor:.4g}.")
        parts.append("\n".join(lines))
        if kind == "points" and "precision" in chosen[0]:
            parts.append(_precision_recall_table(chosen, samplers, targets))
    return "\n\n".join(parts) + "\n"


def _precision_recall_table(chosen, samplers, targets) -> str:
    """Precision / recall (k = 3) of the point samples, means over seeds."""
    first = chosen[0]
    lines = [f"**points**, precision / recall (k = 3; floor {first['precision_floor']:.3f} / "
             f"{first['recall_floor']:.3f}), mean over seeds", "",
             "| sampler | " + " | ".join(f"NFE {t}" for t in targets) + " |",
             "|---|" + "---:|" * len(targets)]
    mean = lambda found, name: float(np.mean([r[name] for r in found]))  # noqa: E731
    for sampler in samplers:
        cells = []
        for target in targets:
            found = [r for r in chosen if r["sampler"] == sampler and r["nfe_target"] == target]
            cells.append(f"{mean(found, 'precision'):.3f} / {mean(found, 'recall'):.3f}"
                         if found else "")
        lines.append(f"| {LABELS[sampler]} | " + " | ".join(cells) + " |")
    ddpm = [r for r in chosen if r["sampler"] == "ddpm"]
    if ddpm:
        lines += ["", f"{LABELS['ddpm']}, NFE {ddpm[0]['nfe']}: {mean(ddpm, 'precision'):.3f} / "
                      f"{mean(ddpm, 'recall'):.3f}."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy_workdir", default="runs/toy")
    parser.add_argument("--digits_workdir", default="runs/digits")
    parser.add_argument("--data", default="points,digits", help="which of points,digits")
    parser.add_argument("--nfe", default="5,10,20,50", help="target model calls")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--no_ddpm", action="store_true", help="skip the DDPM (T calls) row")
    parser.add_argument("--toy_seeds", default="0,1,2")
    parser.add_argument("--digits_seeds", default="0,1",
                        help="x_T seeds for the digits; DDPM (T calls) runs for the first only")
    parser.add_argument("--toy_samples", type=int, default=0,
                        help="0: the run's eval.num_samples (5,000 for toy2d)")
    parser.add_argument("--digits_samples", type=int, default=0,
                        help="0: the run's eval.num_samples (1,000 for digits)")
    parser.add_argument("--out", default="benchmarks/sampler_nfe.jsonl")
    parser.add_argument("--grid", default=os.path.join(DOCS, "samplers_digits.png"),
                        help="digits grid per sampler ('' for none)")
    parser.add_argument("--tables", metavar="JSONL", help="print the markdown tables and exit")
    parser.add_argument("--pictures", action="store_true",
                        help="the SDEdit and inpainting pictures (digits) and exit")
    parser.add_argument("--repaint", type=int, default=3,
                        help="--pictures: RePaint resamples for the third inpainting row")
    parser.add_argument("--picture_images", type=int, default=100,
                        help="--pictures: inpaint the first N test digits (0: all 360)")
    args = parser.parse_args(argv)
    if args.tables:
        print(tables(args.tables), end="")
        return
    if args.pictures:
        pictures(args.digits_workdir, args.out, repaint=args.repaint,
                 num_images=args.picture_images)
        return
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    samplers = tuple(s for s in args.samplers.split(",") if s)
    unknown = set(samplers) - set(SAMPLERS)
    if unknown:
        parser.error(f"unknown samplers {sorted(unknown)}; choose from {', '.join(SAMPLERS)}")
    for kind in args.data.split(","):
        start = time.perf_counter()
        if kind == "points":
            count = args.toy_samples or load_run(args.toy_workdir).config.eval.num_samples
            measure("points", args.toy_workdir, ints(args.nfe), ints(args.toy_seeds), count,
                    args.out, samplers, not args.no_ddpm)
        elif kind == "digits":
            count = args.digits_samples or load_run(args.digits_workdir).config.eval.num_samples
            measure("digits", args.digits_workdir, ints(args.nfe), ints(args.digits_seeds), count,
                    args.out, samplers, not args.no_ddpm, grid_path=args.grid or None,
                    ddpm_seeds=ints(args.digits_seeds)[:1])
        else:
            parser.error(f"unknown data {kind!r}: points or digits")
        print(f"{kind}: {time.perf_counter() - start:.0f} s in all", flush=True)


# ---------------------------------------------------------------------------------- pictures


def labelled_rows(rows, path: str, title: str | None = None, column_titles=None) -> None:
    """A picture with one row per (label, images) pair: images uint8 [N, H, W, 1], or a list of
    such arrays, one per column (with `column_titles`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxdiff.plotting import image_grid

    rows = [(label, images if isinstance(images, list) else [images]) for label, images in rows]
    columns = len(rows[0][1])
    count = max(len(images) for _, blocks in rows for images in blocks)
    width, height = 0.42 * count * columns + 0.3 * (columns - 1) + 1.8, 0.5 * len(rows) + 0.5
    fig, axes = plt.subplots(len(rows), columns, figsize=(width, height), squeeze=False)
    for i, (label, blocks) in enumerate(rows):
        for j, images in enumerate(blocks):
            ax = axes[i, j]
            ax.imshow(image_grid(images, nrow=count)[..., 0], cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i == 0 and column_titles:
                ax.set_title(column_titles[j], fontsize=9)
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=1.7 / width, right=1 - 0.1 / width, top=1 - 0.45 / height,
                        bottom=0.05 / height, wspace=0.3 / (0.42 * count), hspace=0.15)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / height)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def _check_editing_arguments() -> None:
    import inspect

    for fn, names in ((jaxdiff.ddim_sample, ("x_start", "t_start", "known", "mask")),
                      (jaxdiff.ddpm_sample, ("x_start", "t_start", "known", "mask"))):
        missing = [n for n in names if n not in inspect.signature(fn).parameters]
        if missing:
            raise SystemExit(f"{fn.__name__} lacks {', '.join(missing)}: this jaxdiff has no "
                             f"editing arguments yet")


def pictures(workdir: str, out_path: str | None = None, ddim_steps: int = 50,
             sdedit_times=(100, 300, 500, 700), repaint: int = 3, num_images: int = 100,
             parts=("sdedit", "inpainting")) -> None:
    """docs/sdedit_digits.png and docs/inpainting_digits.png from the digits run, and the
    classifier's accuracy on the inpainted test digits (all 360, or the first `num_images` and
    one of each class) for each method."""
    from jaxdiff.data.digits import digits_split
    from jaxdiff.metrics import digits_classifier

    _check_editing_arguments()
    run = load_run(workdir)
    config = run.config
    common = dict(objective=config.diffusion.objective, clip_x0=bool(config.sample.clip_x0))
    images, labels = digits_split("test")
    if num_images:  # the first num_images test digits (at least one of each class)
        firsts = [np.flatnonzero(labels == c)[0] for c in range(10)]
        keep = np.union1d(np.arange(num_images), firsts)
        images, labels = images[keep], labels[keep]
    # one test digit of each class, in class order: the first of each
    columns = np.array([np.flatnonzero(labels == c)[0] for c in range(10)])
    x = run.codec.encode(images[columns])  # model space [-1, 1], NHWC
    x_T, key = noise(run, len(x), seed=0)
    shape = tuple(x.shape)

    if "sdedit" in parts:  # the same noise for every t_start, DDIM (eta 0) from t_start to 0
        rows = [("test digits", images[columns])]
        for t in sdedit_times:
            start = time.perf_counter()
            out = jaxdiff.ddim_sample(run.model_fn, run.schedule, key=key, shape=shape, x_T=x_T,
                                      num_steps=min(ddim_steps, t + 1), eta=0.0, x_start=x,
                                      t_start=int(t), **common)
            abar = float(np.asarray(run.schedule.alphas_cumprod)[t])
            rows.append((f"from t={t}, abar {abar:.2f}\n(DDIM, {min(ddim_steps, t + 1)} steps)",
                         run.to_data_space(np.asarray(out))))
            print(f"SDEdit t_start={t}: {time.perf_counter() - start:.1f} s", flush=True)
        labelled_rows(rows, os.path.join(DOCS, "sdedit_digits.png"),
                      "SDEdit: test digits noised to t, then DDIM (eta 0) to 0; the same noise in "
                      "every row")

    if "inpainting" not in parts:
        return
    # inpainting: mask = 1 where known; the unknown half shown mid-grey in the input row
    height, width = run.data_shape[:2]
    masks = {"left half unknown": np.ones(run.data_shape, np.float32),
             "bottom half unknown": np.ones(run.data_shape, np.float32)}
    masks["left half unknown"][:, : width // 2] = 0.0
    masks["bottom half unknown"][height // 2:] = 0.0
    methods = [("DDPM (1000 calls)", dict(kind="ddpm")),
               (f"DDPM + RePaint r={repaint}", dict(kind="ddpm", resamples=repaint)),
               (f"DDIM {ddim_steps} steps eta 0", dict(kind="ddim", eta=0.0)),
               (f"DDIM {ddim_steps} steps eta 1", dict(kind="ddim", eta=1.0))]
    import inspect

    if repaint <= 1 or "resamples" not in inspect.signature(jaxdiff.ddpm_sample).parameters:
        methods = [m for m in methods if "resamples" not in m[1]]
    classifier = digits_classifier.load_classifier()
    all_x = run.codec.encode(images)
    all_T, all_key = noise(run, len(all_x), seed=1)
    columns_of = {}  # row label -> one block of digits per mask
    accuracy = []
    for name, mask in masks.items():
        shown = np.where(mask[None] > 0, images[columns], 128).astype(np.uint8)
        columns_of.setdefault("test digits", []).append(images[columns])
        columns_of.setdefault("input (grey:\nunknown)", []).append(shown)
        for label, options in methods:
            options = dict(options)
            kind = options.pop("kind")
            sample = jaxdiff.ddpm_sample if kind == "ddpm" else functools.partial(
                jaxdiff.ddim_sample, num_steps=ddim_steps)
            start = time.perf_counter()
            # every test digit at once (the picture shows the first of each class)
            out = run.to_data_space(np.asarray(sample(
                run.model_fn, run.schedule, key=all_key, shape=tuple(all_x.shape), x_T=all_T,
                known=all_x, mask=mask, **common, **options)))
            seconds = time.perf_counter() - start
            known_err = float(np.abs(out.astype(int) - images.astype(int))[:, mask > 0].max())
            correct = float((digits_classifier.predict(classifier, out) == labels).mean())
            accuracy.append({"data": "inpainting", "mask": name, "method": label,
                             "num_images": len(out), "class_accuracy": correct,
                             "known_max_abs_error_uint8": known_err, "seconds": round(seconds, 2),
                             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                                 timespec="seconds")})
            print(json.dumps(accuracy[-1]), flush=True)
            columns_of.setdefault(label, []).append(out[columns])
    masked_accuracy = {name: float((digits_classifier.predict(
        classifier, np.where(mask[None] > 0, images, 0).astype(np.uint8)) == labels).mean())
        for name, mask in masks.items()}
    print(json.dumps({"data": "inpainting", "method": "masked input (unknown = 0)",
                      "class_accuracy": masked_accuracy}), flush=True)
    labelled_rows(list(columns_of.items()), os.path.join(DOCS, "inpainting_digits.png"),
                  "Inpainting test digits (mask = 1 where known; the same noise in every row)",
                  column_titles=list(masks))
    if out_path:
        with open(out_path, "a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in accuracy)
            handle.write(json.dumps({"data": "inpainting", "method": "masked input (unknown = 0)",
                                     "class_accuracy_by_mask": masked_accuracy}) + "\n")


if __name__ == "__main__":
    main()
