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
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxdiff import evaluation, experiment, plotting, sharding
from jaxdiff.checkpoint import Checkpointer, read_json, write_json
from jaxdiff.data import make_point_source
from jaxdiff.data.images import (make_folder_source, make_tfds_source, prefetch_batches,
                                 to_uint8)
from jaxdiff.diffusion import q_sample
from jaxdiff.training import make_train_step

log = logging.getLogger("jaxdiff")


def _main_only(function):
    """`function` on process 0; a no-op returning None on the other processes of a multi-host
    run (they compute and sample alongside, but only process 0 writes files)."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        return function(*args, **kwargs) if sharding.is_main_process() else None
    return call


class _MainOnly:
    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return _main_only(getattr(self._module, name))


_write_json, _savez, _makedirs = _main_only(write_json), _main_only(np.savez), _main_only(os.makedirs)
_plots = _MainOnly(plotting)


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
    size = getattr(source, "length", None)
    if size is None and getattr(source, "array", None) is not None:
        size = len(source.array)
    if size is not None and size < config.train.batch_size:
        where = f"data.path={config.data.path!r}" if config.data.path else f"data.name={config.data.name!r}"
        raise experiment.ConfigError(
            f"config.train.batch_size={config.train.batch_size} is invalid: {where} holds only "
            f"{size} examples, fewer than one batch")
    return source


def data_shape(source) -> tuple[int, ...]:
    return tuple(source.shape) if hasattr(source, "shape") else (source.dim,)


# Fields that may change between a run and its resumption: how long to train (to train on; with
# optim.decay="cosine" the learning-rate schedule follows the new length), and fields that do not
# affect the training trajectory (how often to log, save or sample, how to evaluate at the end).
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.checkpoint_every",
                     "train.keep_checkpoints", "train.max_skipped_steps", "sample.", "eval.")


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(old: dict, new: dict) -> list[str]:
    """'field: old -> new' for every field whose value differs (training-relevant ones only)."""
    old, new = _flatten(old), _flatten(new)
    changes = []
    for field in sorted(set(old) | set(new)):
        if field.startswith(RESUMABLE_CHANGES) or old.get(field) == new.get(field):
            continue
        changes.append(f"{field}: {old.get(field, '(absent)')!r} -> {new.get(field, '(absent)')!r}")
    return changes


def _write_run_files(config, workdir: str, source, force: bool = False) -> None:
    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, "config.json")
    payload = json.loads(config.to_json())
    if os.path.exists(config_path):
        changes = config_changes(read_json(config_path), payload)
        if changes and not force:
            shown = "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")
            raise experiment.ConfigError(
                f"workdir={workdir!r} holds a run with a different config ({shown}); use another "
                f"--workdir, or --force to continue it with the new config")
        if changes:
            log.warning("workdir %s held a run with a different config (%s); continuing with the "
                        "new one (--force)", workdir, "; ".join(changes))
    standardizer = getattr(source, "standardizer", None)
    _write_json(config_path, payload)
    _write_json(os.path.join(workdir, "run.json"), {
        "data_shape": list(data_shape(source)),
        "data_name": source.name,
        "num_classes": int(getattr(source, "num_classes", 0)),
        "standardizer": standardizer.to_dict() if standardizer is not None else None,
    })


class _MetricWriter:
    """TensorBoard event files in the workdir (tensorboardX: no TensorFlow needed)."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(workdir) if sharding.is_main_process() else None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def image(self, step: int, name: str, grid: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.add_image(name, grid, step, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _training_batches(source, start: int, total: int, config):
    """The batches of steps start..total-1, read ahead by a bounded background thread."""
    for batch in prefetch_batches(source, range(start, total), config.train.batch_size):
        yield _model_batch(batch, config)


def _model_batch(batch, config) -> dict[str, np.ndarray]:
    if not isinstance(batch, dict):  # point data: the global batch; keep this process's slice
        part = len(batch) // jax.process_count()
        batch = {"x": batch[jax.process_index() * part:(jax.process_index() + 1) * part]}
    if not config.model.num_classes:
        batch.pop("labels", None)
    return batch


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       force: bool = False) -> dict:
    """Train (or resume) the run in `workdir`; return the final evaluation report.

    A workdir holding a run of a different config (beyond RESUMABLE_CHANGES) is refused unless
    `force`."""
    source = prepare(config)
    _write_run_files(config, workdir, source, force=force)
    model = experiment.build_model(config)
    schedule = experiment.build_schedule(config)
    optimizer = experiment.build_optimizer(config)
    state = experiment.init_state(config, model, optimizer, data_shape(source))

    mesh = sharding.make_mesh(config.train.get("num_devices", 0) or None)
    try:
        sharding.check_batch_size(config.train.batch_size, mesh)
    except ValueError as error:
        raise experiment.ConfigError(str(error)) from None
    state = sharding.put_replicated(state, mesh)

    checkpointer = Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
    restored = checkpointer.restore_newest_good(state)  # onto the replicated layout
    if restored is not None:
        state = restored[0]
        print(f"resuming {workdir} from step {int(state.step)}", flush=True)
    per_call = config.train.get("steps_per_call", 1)
    step_fns = {n: make_train_step(
        model.apply, optimizer, schedule, loss_kwargs=experiment.loss_kwargs(config),
        ema_decay=config.ema.decay, ema_warmup=config.ema.warmup, mesh=mesh, steps_per_call=n,
    ) for n in sorted({1, per_call})}
    writer = _MetricWriter(workdir)
    sample_every = config.eval.get("sample_every", 0)
    start, total = int(state.step), config.train.steps
    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=None if sharding.is_main_process() else True)
    window_start, window_steps = time.perf_counter(), 0
    max_streak = config.train.get("max_skipped_steps", 20)

    def crossed(every: int, before: int, after: int) -> bool:
        return bool(every) and after // every > before // every

    with _SignalCatcher() as signals:
        batches = _training_batches(source, start, total, config)
        step = start
        while step < total:
            # k steps per dispatch on k-aligned chunks; single steps for a ragged start or end.
            count = per_call if step % per_call == 0 and total - step >= per_call else 1
            chunk = [next(batches) for _ in range(count)]
            batch = chunk[0] if count == 1 else {name: np.stack([b[name] for b in chunk])
                                                 for name in chunk[0]}
            state, metrics = step_fns[count](
                state, sharding.global_batch(batch, mesh, stacked=count > 1))
            window_steps += count
            before, step = step, step + count
            done = step
            if crossed(config.train.log_every, before, done) or done == total:
                streak = int(state.skip_streak)
                if streak >= max_streak:
                    checkpointer.wait()
                    checkpointer.close()
                    raise TrainingDiverged(
                        f"step {done}: the last {streak} steps had a non-finite loss or gradient "
                        f"(train.max_skipped_steps={max_streak}); stopped without saving, the "
                        f"newest checkpoint in {checkpointer.directory} is the last good state")
                window_start, window_steps = _log(
                    done, total, metrics, writer, bar, window_start, window_steps)
            if crossed(sample_every, before, done) and done != total:
                grid = _sample_grid(config, model, schedule, state, source, workdir, done)
                writer.image(done, "samples", grid)
            saved = crossed(config.train.checkpoint_every, before, done) or done == total
            if saved:
                checkpointer.save(done, state)
            bar.update(count)
            if signals.received is not None and done != total:
                if not saved:
                    checkpointer.save(done, state)
                checkpointer.wait()
                checkpointer.close()
                bar.close()
                raise TrainingInterrupted(
                    signals.received, f"{signal.Signals(signals.received).name} at step {done}: "
                    f"saved {checkpointer.path(done)}; run the same command to resume")
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


def _log(done, total, metrics, writer, bar, window_start, window_steps):
    metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
    elapsed = time.perf_counter() - window_start
    metrics["steps_per_s"] = window_steps / max(elapsed, 1e-9)
    writer.scalars(done, metrics)
    bar.set_postfix(loss=f"{metrics['loss']:.4f}", steps_per_s=f"{metrics['steps_per_s']:.1f}")
    if bar.disable:  # no terminal (a log file, a cluster job): one line per log interval
        skipped = f", {int(metrics['skipped'])} non-finite steps skipped" if metrics.get(
            "skipped") else ""
        print(f"step {done}/{total}: loss {metrics['loss']:.4f}, "
              f"{metrics['steps_per_s']:.1f} steps/s{skipped}", flush=True)
    elif metrics.get("skipped"):
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", skipped=int(metrics["skipped"]))
    return time.perf_counter(), 0


class TrainingInterrupted(Exception):
    """SIGTERM / SIGINT during training: a checkpoint was saved; `signum` says which."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class _SignalCatcher:
    """Within the block, SIGTERM and SIGINT (a preemption notice, Ctrl-C) only set `received`;
    the training loop then saves a checkpoint and stops. The previous handlers come back after."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self):
        self.received, self._previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:  # a second signal: stop at once
            signal.default_int_handler(signum, frame)
        self.received = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


def _sample(config, model, schedule, state, shape, *, seed=1, **kwargs):
    """EMA samples in model space (numpy), split over every device in one compiled call."""
    mesh = sharding.make_mesh(config.train.get("num_devices", 0) or None)
    model_fn = functools.partial(model.apply, state.ema_params)
    return experiment.sample_sharded(model_fn, schedule, config, shape,
                                     key=jax.random.key(config.seed + seed), mesh=mesh, **kwargs)


def _grid_labels(config, count: int):
    if not config.model.num_classes:
        return None
    return np.arange(count) % config.model.num_classes


def _sample_grid(config, model, schedule, state, source, workdir, step) -> np.ndarray:
    """A 10x10 grid of EMA samples (one column per class when conditional), saved as PNG."""
    count = 100
    images = to_uint8(_sample(config, model, schedule, state, (count,) + data_shape(source),
                              labels=_grid_labels(config, count)))
    _makedirs(os.path.join(workdir, "grids"), exist_ok=True)
    _plots.save_image_grid(images, os.path.join(workdir, "grids", f"step_{step:07d}.png"),
                             nrow=10)
    return _plots.image_grid(images, nrow=10)


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
    _write_json(os.path.join(workdir, "eval.json"), report)
    _savez(os.path.join(workdir, "eval_samples.npz"), samples=samples)
    if config.eval.plots:
        _plots.plot_samples_vs_data(samples, fresh_a, os.path.join(workdir, "samples.png"),
                                      title=f"{source.name}: step {int(state.step)}")
        traj = source.standardizer.inverse(np.asarray(trajectory)[:, :2000])
        _plots.plot_trajectory(traj, os.path.join(workdir, "trajectory.png"))
        x0 = source.standardizer.transform(fresh_a[:2000])
        ts = np.linspace(0, schedule.timesteps - 1, 6).astype(np.int32)
        noise = np.random.default_rng(config.seed).standard_normal(x0.shape).astype(np.float32)
        forward = {int(t): source.standardizer.inverse(np.asarray(
            q_sample(schedule, x0, np.full(len(x0), t, np.int32), noise))) for t in ts}
        _plots.plot_forward_process(forward, os.path.join(workdir, "forward.png"))
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
    _savez(os.path.join(workdir, "eval_samples.npz"), samples=images,
             **({"labels": labels} if labels is not None else {}))
    _plots.save_image_grid(images[:100], os.path.join(workdir, "samples.png"), nrow=10)
    if config.eval.plots:
        frames = np.linspace(0, len(trajectory) - 1, 10).round().astype(int)
        strip = to_uint8(np.asarray(trajectory)[frames, :10])  # [10 frames, 10 images, ...]
        _plots.save_image_grid(strip.transpose(1, 0, 2, 3, 4).reshape((-1,) + images.shape[1:]),
                                 os.path.join(workdir, "trajectory.png"), nrow=len(frames))
    if config.data.name == "digits":
        report.update(evaluation_digits(images, labels))
    if config.eval.get("inception_path"):
        report.update(evaluation_fid(images, source, config))
    if labels is not None and len(config.eval.get("guidance_scales", ())):
        report["guidance_sweep"] = guidance_sweep(config, workdir, model, schedule, state, source,
                                                  labels)
    _write_json(os.path.join(workdir, "eval.json"), report)
    return report


def guidance_sweep(config, workdir, model, schedule, state, source, labels) -> list[dict]:
    """Sample the same labels from the same noise at each of `config.eval.guidance_scales`
    (one compiled sampler: the scale is traced); for the digits report the classifier's accuracy
    on the requested classes and the digits Fréchet distance per scale. Writes guidance.png:
    one row per class, one column per scale."""
    shape = (len(labels),) + data_shape(source)
    rows, sweep = [], []
    for scale in config.eval.guidance_scales:
        start = time.perf_counter()
        # an array scale keeps s = 1 on the guided path too, so every scale shares one compile
        images = to_uint8(_sample(config, model, schedule, state, shape, labels=labels,
                                  guidance_scale=np.full(len(labels), scale, np.float32)))
        entry = {"guidance_scale": float(scale), "sample_seconds": time.perf_counter() - start}
        if config.data.name == "digits":
            metrics = evaluation_digits(images, labels)
            entry.update(class_accuracy=metrics["class_accuracy"], digits_fd=metrics["digits_fd"])
        log.info("guidance scale %s: %s", scale, entry)
        sweep.append(entry)
        rows.append(images[:config.model.num_classes])
    grid = np.stack(rows, axis=1)  # [classes, scales, H, W, C]
    _plots.save_image_grid(grid.reshape((-1,) + grid.shape[2:]),
                             os.path.join(workdir, "guidance.png"), nrow=len(rows))
    return sweep


def evaluation_fid(images: np.ndarray, source, config) -> dict:
    """FID (pytorch-fid's Inception-v3 weights) of the samples against as many training images
    drawn without replacement."""
    from jaxdiff.fid import frechet_distance_from_features, inception_features

    real, _ = source.fresh(len(images), seed=config.seed + 10_000)
    path = config.eval.inception_path
    return {"fid": frechet_distance_from_features(inception_features(images, path),
                                                  inception_features(real, path)),
            "fid_num_images": float(len(images))}


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
