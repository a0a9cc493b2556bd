"""What a run reports: EMA samples compared with held-out data, and the pictures of them.

`evaluate` (end of training) draws `config.eval.num_samples` EMA samples in one compiled sharded
call, writes them (eval_samples.npz, in data space) with eval.json and pictures, and reports
  points  sliced Wasserstein, energy distance, MMD, precision / recall, each next to its
          fresh-vs-fresh floor (jaxdiff.metrics.points);
  images  for the offline digits the digits-classifier Fréchet distance next to the
          train-vs-test floor (and class accuracy for conditional models), FID with pytorch-fid's
          Inception weights when `eval.inception_path` is set, and a guidance sweep
          (`eval.guidance_scales`) for class-conditional models.
`sample_picture` is the picture of EMA samples logged during training (`sample_grid`, a 10x10
grid, for images; samples beside data for points). Every process samples its share; only
process 0 writes files and shows progress.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable

import jax
import numpy as np

from jaxdiff import plotting, sharding
from jaxdiff.diffusion import q_sample
from jaxdiff.errors import NonFiniteError
from jaxdiff.run import decode_finite, num_model_calls, sample_sharded
from jaxdiff.workdir import EVAL_FILE, write_json

log = logging.getLogger("jaxdiff")


def sample_ema(config, model, schedule, state, shape, *, seed: int = 1, progress=False,
               **kwargs) -> np.ndarray:
    """EMA samples in model space (numpy), split over the training devices in one compiled
    call; `progress` and `kwargs` go to `run.sample_model` (labels, guidance,
    return_trajectory)."""
    mesh = sharding.make_mesh(config.train.get("num_devices", 0) or None)
    model_fn = functools.partial(model.apply, state.ema_params)
    return sample_sharded(model_fn, schedule, config, shape,
                          key=jax.random.key(config.seed + seed), mesh=mesh, progress=progress,
                          **kwargs)


def sampling_progress(config, schedule, count: int, progress=None, what: str = ""):
    """The samplers' `progress` argument for sampling `count` samples: `progress` as is when
    not None; else (automatic) a progress bar when stderr is a terminal (tqdm's `disable=None`
    rule) in a single-process job, otherwise a plain line on the main process, "sampling N
    samples with SAMPLER (K model calls)...". (A bar compiles the sampler with a host callback:
    in a multi-process job every process must compile the same program, so none gets one.)"""
    if progress is not None:
        return progress
    if jax.process_count() == 1 and sys.stderr.isatty():
        return True
    if sharding.is_main_process():
        print(f"sampling {count} samples with {config.sample.sampler} "
              f"({num_model_calls(config, schedule)} model calls){what}...", flush=True)
    return False


def grid_labels(config, count: int) -> np.ndarray | None:
    """Labels 0, 1, ..., num_classes - 1, 0, 1, ... for a conditional model (one column per
    class in a 10-wide grid); None for an unconditional one."""
    if not config.model.num_classes:
        return None
    return np.arange(count) % config.model.num_classes


def sample_picture(config, model, schedule, state, source, workdir: str,
                   step: int) -> np.ndarray:
    """The picture of EMA samples logged during training, RGB or grey [H, W, C] uint8: for
    images `sample_grid`; for points 1,000 samples beside as many fresh data points (the
    samples.png of the evaluation), not saved as a file."""
    if len(source.shape) > 1:
        return sample_grid(config, model, schedule, state, source, workdir, step)
    count = 1000
    samples = decode_finite(source.codec, sample_ema(config, model, schedule, state,
                                                     (count,) + tuple(source.shape)))
    data = source.fresh(count, seed=config.seed + 10_000)["x"]
    return plotting.samples_vs_data_image(samples, data, title=f"step {step}")


def sample_grid(config, model, schedule, state, source, workdir: str, step: int) -> np.ndarray:
    """A 10x10 grid of EMA images (one column per class when conditional), saved as
    grids/step_<step>.png; returns the grid [H, W, C] uint8."""
    count = 100
    images = source.codec.decode(sample_ema(config, model, schedule, state,
                                            (count,) + tuple(source.shape),
                                            labels=grid_labels(config, count)))
    if sharding.is_main_process():
        os.makedirs(os.path.join(workdir, "grids"), exist_ok=True)
        plotting.save_image_grid(images, os.path.join(workdir, "grids", f"step_{step:07d}.png"),
                                 nrow=10)
    return plotting.image_grid(images, nrow=10)


def evaluate(config, workdir: str, model, schedule, state, source, *, progress=None,
             log_image: Callable[[str, np.ndarray], None] | None = None) -> dict:
    """Sample with the EMA parameters, compare with held-out data, write eval.json,
    eval_samples.npz and pictures; return the report.

    progress: for the samplers (see `sampling_progress`): None (default) a progress bar on a
    terminal, else a line naming what is sampled; False nothing; True a bar; or a callable
    `progress(done, total)`. log_image: called on the main process as
    `log_image("samples", picture)` with the samples' picture [H, W, C] uint8 (points: samples
    beside fresh data; images: a 10x10 grid), e.g. to put it in TensorBoard."""
    num = config.eval.num_samples
    labels = grid_labels(config, num)
    start = time.perf_counter()
    out = sample_ema(config, model, schedule, state, (num,) + tuple(source.shape), labels=labels,
                     return_trajectory=config.eval.plots,
                     progress=sampling_progress(config, schedule, num, progress))
    samples, trajectory = out if config.eval.plots else (out, None)
    samples = decode_finite(source.codec, samples)
    report = {"step": int(state.step), "num_samples": num, "sampler": config.sample.sampler,
              "sample_seconds": time.perf_counter() - start}
    main = sharding.is_main_process()
    if main:
        np.savez(os.path.join(workdir, "eval_samples.npz"), samples=samples,
                 **({"labels": labels} if labels is not None else {}))
    if len(source.shape) == 1:
        report.update(_point_quality(config, workdir, schedule, source, samples, trajectory,
                                     step=report["step"], log_image=log_image if main else None))
    else:
        report.update(_image_quality(config, workdir, source, samples, labels, trajectory))
        if main and log_image is not None:
            log_image("samples", plotting.image_grid(samples[:100], nrow=10))
        if labels is not None and len(config.eval.get("guidance_scales", ())):
            report["guidance_sweep"] = guidance_sweep(config, workdir, model, schedule, state,
                                                      source, labels, progress=progress)
    if config.eval.get("likelihood", False):
        data, data_labels, which = held_out_data(config, source,
                                                 config.eval.get("likelihood_examples", 500))
        report.update(likelihood_report(config, _ema_model_fn(model, state), schedule,
                                        source.codec, data, data_labels, seed=config.seed))
        report["likelihood_data"] = which
    bad = [name for name, value in report.items()
           if isinstance(value, float) and not np.isfinite(value)]
    if bad:
        raise NonFiniteError(f"the evaluation at step {report['step']} gave non-finite "
                             f"{', '.join(bad)}; {EVAL_FILE} was not written")
    if main:
        write_json(os.path.join(workdir, EVAL_FILE), report)
    return report


def held_out_data(config, source, count: int, seed: int | None = None):
    """(data-space examples, labels or None, what they are) for likelihood evaluation: the
    digits' test split, fresh draws of a 2-D toy set (the held-out rows of an array), and for
    other image sets a sample of the training data (said so in the third element)."""
    seed = config.seed + 30_000 if seed is None else seed
    if config.data.name == "digits":
        from jaxdiff.data.digits import digits_split

        images, labels = digits_split("test")
        return images[:count], labels[:count], "digits test split"
    fresh = source.fresh(count, seed=seed)
    if len(source.shape) == 1:
        return fresh["x"], None, "held-out points"
    return fresh["x"], fresh.get("labels"), "training images (no held-out split used)"


def _ema_model_fn(model, state):
    return functools.partial(model.apply, state.ema_params)


def likelihood_report(config, model_fn, schedule, codec, data, labels=None, *,
                      seed: int = 0) -> dict:
    """Held-out likelihood of data-space `data` (uint8 images or points), with its variational
    bound and the probability-flow ODE (jaxdiff.likelihood), in one sampler-independent report:

      images  vlb_bits_per_dim (discretised decoder), ode_bits_per_dim (uniform dequantisation,
              Hutchinson's trace with one probe beyond 16 dimensions, exact below; solver
              tolerance 1e-3);
      points  vlb_nats_per_dim (Gaussian decoder) and ode_nats_per_dim, of the density in data
              space (the standardiser's log-determinant included).
    The VLB uses config.sample.variance (fixed_small / fixed_large), or the learned variances of
    a `model.learned_variance` model; class-conditional models are given the data's labels."""
    from jaxdiff.likelihood import bits_per_dim, dequantize, ode_log_likelihood, vlb

    start = time.perf_counter()
    key = jax.random.key(seed + 40_000)
    images = np.asarray(data).dtype == np.uint8
    dims = int(np.prod(np.shape(data)[1:]))
    learned = bool(config.model.get("learned_variance", False))
    variance = "learned_range" if learned else config.sample.variance
    cond = {"labels": np.asarray(labels, np.int32)} if (
        config.model.num_classes and labels is not None) else {}
    objective = config.diffusion.objective
    x0 = np.asarray(codec.encode(data), np.float32)
    bound = vlb(model_fn, schedule, x0, key=key, objective=objective, variance=variance,
                decoder="discretized" if images else "gaussian", cond=cond)["total"]
    trace = "exact" if dims <= 16 else "hutchinson"
    ode_input = dequantize(jax.random.fold_in(key, 1), data) if images else x0
    # images: tolerance 1e-3 (41 adaptive steps on the digits; 1e-5 takes 167 and moves the
    # bits/dim by 0.025); points: 1e-5
    tolerance = 1e-3 if images else 1e-5
    report = {"likelihood_examples": int(len(x0)),
              "likelihood_variance": variance}
    try:
        log_p = ode_log_likelihood(model_fn, schedule, ode_input, key=jax.random.fold_in(key, 2),
                                   objective=objective, trace=trace, cond=cond,
                                   learned_variance=learned, rtol=tolerance, atol=tolerance)
    except RuntimeError as error:  # the adaptive solver gave up (e.g. an untrained model)
        log.warning("no probability-flow likelihood: %s", error)
        report["ode_failed"], log_p = str(error), None
    if images:
        report["vlb_bits_per_dim"] = float(np.mean(bits_per_dim(bound, dims)))
        if log_p is not None:
            report["ode_bits_per_dim"] = float(np.mean(bits_per_dim(-log_p, dims,
                                                                    dequantized=True)))
    else:  # model space z = (x - mean) / std: log p_x = log p_z - sum log std
        log_std = float(np.sum(np.log(codec.std)))
        report["vlb_nats_per_dim"] = float(np.mean(bound) + log_std) / dims
        if log_p is not None:
            report["ode_nats_per_dim"] = float(-np.mean(log_p) + log_std) / dims
    report["likelihood_seconds"] = time.perf_counter() - start
    return report


def _point_quality(config, workdir, schedule, source, samples, trajectory, *,
                   step: int, log_image=None) -> dict:
    """Point metrics against two fresh draws (their distance is the floor), and the pictures:
    samples beside data, the reverse trajectory, the forward process."""
    from jaxdiff.metrics.points import point_quality_report

    fresh_a = source.fresh(len(samples), seed=config.seed + 10_000)["x"]
    fresh_b = source.fresh(len(samples), seed=config.seed + 20_000)["x"]
    report = point_quality_report(samples, fresh_a, fresh_b, seed=config.seed)
    if log_image is not None:
        log_image("samples", plotting.samples_vs_data_image(
            samples, fresh_a, title=f"{source.name}: step {step}"))
    if config.eval.plots and sharding.is_main_process():
        plotting.plot_samples_vs_data(samples, fresh_a, os.path.join(workdir, "samples.png"),
                                      title=f"{source.name}: step {step}")
        plotting.plot_trajectory(source.codec.decode(np.asarray(trajectory)[:, :2000]),
                                 os.path.join(workdir, "trajectory.png"))
        x0 = source.codec.encode(fresh_a[:2000])
        times = np.linspace(0, schedule.timesteps - 1, 6).astype(np.int32)
        noise = np.random.default_rng(config.seed).standard_normal(x0.shape).astype(np.float32)
        forward = {int(t): source.codec.decode(np.asarray(
            q_sample(schedule, x0, np.full(len(x0), t, np.int32), noise))) for t in times}
        plotting.plot_forward_process(forward, os.path.join(workdir, "forward.png"))
    return {name: float(value) for name, value in report.items()}


def _image_quality(config, workdir, source, images, labels, trajectory) -> dict:
    """The sample grid and trajectory strip; digits-FD (and class accuracy) for the digits, FID
    when `eval.inception_path` is set."""
    if sharding.is_main_process():
        plotting.save_image_grid(images[:100], os.path.join(workdir, "samples.png"), nrow=10)
        if config.eval.plots:
            plotting.save_trajectory_strip(source.codec.decode(np.asarray(trajectory)[:, :10]),
                                           os.path.join(workdir, "trajectory.png"))
    report = {}
    if config.data.name == "digits":
        report.update(digits_quality(images, labels))
    if config.eval.get("inception_path"):
        report.update(fid(images, source, config))
    return report


def guidance_sweep(config, workdir, model, schedule, state, source, labels, *,
                   progress=None) -> list[dict]:
    """Sample the same labels from the same noise at each of `config.eval.guidance_scales`
    (one compiled sampler: the scale is traced); for the digits report the classifier's accuracy
    on the requested classes and the digits Fréchet distance per scale. Writes guidance.png:
    one row per class, one column per scale. `progress` as in `evaluate`, per scale."""
    shape = (len(labels),) + tuple(source.shape)
    rows, sweep = [], []
    for scale in config.eval.guidance_scales:
        start = time.perf_counter()
        # an array scale keeps s = 1 on the guided path too, so every scale shares one compile
        images = decode_finite(source.codec, sample_ema(
            config, model, schedule, state, shape, labels=labels,
            guidance_scale=np.full(len(labels), scale, np.float32),
            progress=sampling_progress(config, schedule, len(labels), progress,
                                       f" at guidance scale {scale}")))
        entry = {"guidance_scale": float(scale), "sample_seconds": time.perf_counter() - start}
        if config.data.name == "digits":
            metrics = digits_quality(images, labels)
            entry.update(class_accuracy=metrics["class_accuracy"], digits_fd=metrics["digits_fd"])
        log.info("guidance scale %s: %s", scale, entry)
        sweep.append(entry)
        rows.append(images[:config.model.num_classes])
    if sharding.is_main_process():
        grid = np.stack(rows, axis=1)  # [classes, scales, H, W, C]
        plotting.save_image_grid(grid.reshape((-1,) + grid.shape[2:]),
                                 os.path.join(workdir, "guidance.png"), nrow=len(rows))
    return sweep


def fid(images: np.ndarray, source, config) -> dict:
    """FID (pytorch-fid's Inception-v3 weights) of the samples against as many training images
    drawn without replacement."""
    from jaxdiff.metrics.frechet import frechet_distance_from_features
    from jaxdiff.metrics.inception import inception_features

    real = source.fresh(len(images), seed=config.seed + 10_000)["x"]
    path = config.eval.inception_path
    return {"fid": frechet_distance_from_features(inception_features(images, path),
                                                  inception_features(real, path)),
            "fid_num_images": float(len(images))}


def digits_quality(images: np.ndarray, labels) -> dict:
    """The digits-classifier Fréchet distance of uint8 digits to the test split, next to the
    train-vs-test floor, and (given labels) the classifier's accuracy on them."""
    from jaxdiff.data.digits import digits_split
    from jaxdiff.metrics import digits_classifier
    from jaxdiff.metrics.frechet import frechet_distance_from_features

    params = digits_classifier.load_classifier()
    features = lambda x: digits_classifier.features(params, x)  # noqa: E731
    test_features = features(digits_split("test")[0])
    report = {
        "digits_fd": frechet_distance_from_features(features(images), test_features),
        "digits_fd_floor": frechet_distance_from_features(features(digits_split("train")[0]),
                                                          test_features),
    }
    if labels is not None:
        report["class_accuracy"] = float((digits_classifier.predict(params, images) == labels).mean())
    return {name: float(value) for name, value in report.items()}
