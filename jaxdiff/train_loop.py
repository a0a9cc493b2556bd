"""`train_and_evaluate(config, workdir)`: the whole training job, top to bottom.

Validate and open the data (everything that can fail on bad input happens before compilation),
build the model, schedule and optimiser, restore the newest checkpoint if the workdir has one,
train with periodic logging, sample grids and checkpoints, then sample with the EMA parameters
and report sample quality against held-out data.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxdiff import evaluation, experiment, plotting
from jaxdiff.checkpoint import Checkpointer, read_json, write_json
from jaxdiff.data import make_point_source
from jaxdiff.data.images import make_folder_source, make_tfds_source, to_uint8
from jaxdiff.diffusion import q_sample
from jaxdiff.training import make_train_step

log = logging.getLogger("jaxdiff")


def open_source(config: ml_collections.ConfigDict):
    """The data source of `config.data` (points or images); ConfigError on bad input."""
    data = config.data
    try:
        if not experiment.is_image_config(config):
            noise = None if data.noise < 0 else float(data.noise)
            return make_point_source(data.name, path=data.path or None, noise=noise,
                                     seed=config.seed)
        common = dict(image_size=data.image_size, channels=data.channels, seed=config.seed,
                      random_flip=data.random_flip, process_index=jax.process_index(),
                      process_count=jax.process_count())
        if data.name == "folder":
            return make_folder_source(data.path, strict=data.get("strict", False), **common)
        return make_tfds_source(data.name, split=data.get("split", "train"),
                                data_dir=data.get("data_dir") or None, **common)
    except ValueError as error:
        raise experiment.ConfigError(str(error)) from None


def prepare(config: ml_collections.ConfigDict):
    """Validate the config and open its data: the checks that run before any compilation."""
    experiment.validate_config(config)
    source = open_source(config)
    num_classes = config.model.num_classes
    if num_classes and getattr(source, "num_classes", 0) == 0:
        raise experiment.ConfigError(
            f"config.model.num_classes={num_classes} is invalid: data.name={config.data.name!r} "
            f"has no class labels")
    if num_classes and num_classes < source.num_classes:
        raise experiment.ConfigError(
            f"config.model.num_classes={num_classes} is invalid: data.name={config.data.name!r} "
            f"has {source.num_classes} classes")
    return source


def data_shape(source) -> tuple[int, ...]:
    return tuple(source.shape) if hasattr(source, "shape") else (source.dim,)


def _write_run_files(config, workdir: str, source) -> None:
    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, "config.json")
    payload = json.loads(config.to_json())
    if os.path.exists(config_path) and read_json(config_path) != payload:
        log.warning("workdir %s held a run with a different config; overwriting config.json",
                    workdir)
    standardizer = getattr(source, "standardizer", None)
    write_json(config_path, payload)
    write_json(os.path.join(workdir, "run.json"), {
        "data_shape": list(data_shape(source)),
        "data_name": source.name,
        "num_classes": int(getattr(source, "num_classes", 0)),
        "standardizer": standardizer.to_dict() if standardizer is not None else None,
    })


class _MetricWriter:
    """TensorBoard event files in the workdir (tensorboardX: no TensorFlow needed)."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(workdir)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def image(self, step: int, name: str, grid: np.ndarray) -> None:
        self._writer.add_image(name, grid, step, dataformats="HWC")

    def close(self) -> None:
        self._writer.close()


def _training_batch(source, step: int, config) -> dict[str, np.ndarray]:
    batch = source.batch(step, config.train.batch_size)
    if not isinstance(batch, dict):
        batch = {"x": batch}
    if not config.model.num_classes:
        batch.pop("labels", None)
    return batch


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train (or resume) the run in `workdir`; return the final evaluation report."""
    source = prepare(config)
    _write_run_files(config, workdir, source)
    model = experiment.build_model(config)
    schedule = experiment.build_schedule(config)
    optimizer = experiment.build_optimizer(config)
    state = experiment.init_state(config, model, optimizer, data_shape(source))

    checkpointer = Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(state)
        print(f"resuming {workdir} from step {int(state.step)}", flush=True)
    train_step = make_train_step(
        model.apply, optimizer, schedule, loss_kwargs=experiment.loss_kwargs(config),
        ema_decay=config.ema.decay, ema_warmup=config.ema.warmup,
    )
    writer = _MetricWriter(workdir)
    sample_every = config.eval.get("sample_every", 0)
    start, total = int(state.step), config.train.steps
    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=None)
    window_start, window_steps = time.perf_counter(), 0
    for step in range(start, total):
        state, metrics = train_step(state, _training_batch(source, step, config))
        window_steps += 1
        done = step + 1
        if done % config.train.log_every == 0 or done == total:
            metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
            elapsed = time.perf_counter() - window_start
            metrics["steps_per_s"] = window_steps / max(elapsed, 1e-9)
            writer.scalars(done, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", steps_per_s=f"{metrics['steps_per_s']:.1f}")
            window_start, window_steps = time.perf_counter(), 0
        if sample_every and done % sample_every == 0 and done != total:
            grid = _sample_grid(config, model, schedule, state, source, workdir, done)
            writer.image(done, "samples", grid)
        if done % config.train.checkpoint_every == 0 or done == total:
            checkpointer.save(done, state)
        bar.update(1)
    bar.close()
    checkpointer.wait()
    checkpointer.close()

    if experiment.is_image_config(config):
        report = evaluate_images(config, workdir, model, schedule, state, source)
    else:
        report = evaluate_points(config, workdir, model, schedule, state, source)
    writer.scalars(total, {f"eval/{name}": value for name, value in report.items()
                           if isinstance(value, float)})
    writer.close()
    return report


def _sample(config, model, schedule, state, shape, *, labels=None, seed=1, **kwargs):
    model_fn = functools.partial(model.apply, state.ema_params)
    return experiment.sample_model(model_fn, schedule, config, shape,
                                   key=jax.random.key(config.seed + seed), labels=labels, **kwargs)


def _grid_labels(config, count: int):
    if not config.model.num_classes:
        return None
    return np.arange(count) % config.model.num_classes


def _sample_grid(config, model, schedule, state, source, workdir, step) -> np.ndarray:
    """A 10x10 grid of EMA samples (one column per class when conditional), saved as PNG."""
    count = 100
    images = to_uint8(_sample(config, model, schedule, state, (count,) + data_shape(source),
                              labels=_grid_labels(config, count)))
    os.makedirs(os.path.join(workdir, "grids"), exist_ok=True)
    plotting.save_image_grid(images, os.path.join(workdir, "grids", f"step_{step:07d}.png"),
                             nrow=10)
    return plotting.image_grid(images, nrow=10)


def evaluate_points(config, workdir, model, schedule, state, source) -> dict:
    """Sample with the EMA parameters and compare with fresh data; write eval.json and plots."""
    num = config.eval.num_samples
    start = time.perf_counter()
    out = _sample(config, model, schedule, state, (num, source.dim),
                  return_trajectory=config.eval.plots)
    samples, trajectory = out if config.eval.plots else (out, None)
    samples = source.standardizer.inverse(np.asarray(samples))
    sample_seconds = time.perf_counter() - start
    fresh_a = source.fresh(num, seed=config.seed + 10_000)
    fresh_b = source.fresh(num, seed=config.seed + 20_000)
    report = evaluation.point_quality_report(samples, fresh_a, fresh_b, seed=config.seed)
    report = {name: float(value) for name, value in report.items()}
    report.update(step=int(state.step), num_samples=num, sample_seconds=sample_seconds,
                  sampler=config.sample.sampler)
    write_json(os.path.join(workdir, "eval.json"), report)
    np.savez(os.path.join(workdir, "eval_samples.npz"), samples=samples)
    if config.eval.plots:
        plotting.plot_samples_vs_data(samples, fresh_a, os.path.join(workdir, "samples.png"),
                                      title=f"{source.name}: step {int(state.step)}")
        traj = source.standardizer.inverse(np.asarray(trajectory)[:, :2000])
        plotting.plot_trajectory(traj, os.path.join(workdir, "trajectory.png"))
        x0 = source.standardizer.transform(fresh_a[:2000])
        ts = np.linspace(0, schedule.timesteps - 1, 6).astype(np.int32)
        noise = np.random.default_rng(config.seed).standard_normal(x0.shape).astype(np.float32)
        forward = {int(t): source.standardizer.inverse(np.asarray(
            q_sample(schedule, x0, np.full(len(x0), t, np.int32), noise))) for t in ts}
        plotting.plot_forward_process(forward, os.path.join(workdir, "forward.png"))
    return report


def evaluate_images(config, workdir, model, schedule, state, source) -> dict:
    """EMA samples as a grid and .npz; for the offline digits also the digits-classifier
    Fréchet distance (next to the train-vs-test floor) and, for conditional models, the
    classifier's accuracy on the requested classes."""
    num = config.eval.num_samples
    labels = _grid_labels(config, num)
    start = time.perf_counter()
    out = _sample(config, model, schedule, state, (num,) + data_shape(source), labels=labels,
                  return_trajectory=config.eval.plots)
    samples, trajectory = out if config.eval.plots else (out, None)
    images = to_uint8(samples)
    report = {"step": int(state.step), "num_samples": num, "sampler": config.sample.sampler,
              "sample_seconds": time.perf_counter() - start}
    np.savez(os.path.join(workdir, "eval_samples.npz"), samples=images,
             **({"labels": labels} if labels is not None else {}))
    plotting.save_image_grid(images[:100], os.path.join(workdir, "samples.png"), nrow=10)
    if config.eval.plots:
        frames = np.linspace(0, len(trajectory) - 1, 10).round().astype(int)
        strip = to_uint8(np.asarray(trajectory)[frames, :10])  # [10 frames, 10 images, ...]
        plotting.save_image_grid(strip.transpose(1, 0, 2, 3, 4).reshape((-1,) + images.shape[1:]),
                                 os.path.join(workdir, "trajectory.png"), nrow=len(frames))
    if config.data.name == "digits":
        report.update(evaluation_digits(images, labels))
    write_json(os.path.join(workdir, "eval.json"), report)
    return report


def evaluation_digits(images: np.ndarray, labels) -> dict:
    from jaxdiff import classifier
    from jaxdiff.fid import frechet_distance_from_features

    params = classifier.load_classifier()
    test_images, _ = classifier.test_split()
    train_images, _ = classifier.train_split()
    test_features = classifier.features(params, test_images)
    report = {
        "digits_fd": frechet_distance_from_features(classifier.features(params, images),
                                                    test_features),
        "digits_fd_floor": frechet_distance_from_features(classifier.features(params, train_images),
                                                          test_features),
    }
    if labels is not None:
        report["class_accuracy"] = float((classifier.predict(params, images) == labels).mean())
    return {name: float(value) for name, value in report.items()}
