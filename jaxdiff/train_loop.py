"""`train_and_evaluate(config, workdir)`: the whole training job, top to bottom.

Validate, build the data source, model, schedule and optimiser, restore the newest checkpoint if
the workdir has one, train with periodic logging and checkpoints, then sample with the EMA
parameters and report sample quality against fresh data.
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
from jaxdiff.diffusion import q_sample
from jaxdiff.training import make_train_step

log = logging.getLogger("jaxdiff")


def prepare(config: ml_collections.ConfigDict):
    """Everything that can fail on bad input, before any compilation: ConfigError on failure."""
    experiment.validate_config(config)
    noise = None if config.data.noise < 0 else float(config.data.noise)
    try:
        return make_point_source(config.data.name, path=config.data.path or None, noise=noise,
                                 seed=config.seed)
    except ValueError as error:
        raise experiment.ConfigError(str(error)) from None


def _write_run_files(config, workdir: str, source) -> None:
    os.makedirs(workdir, exist_ok=True)
    config_path = os.path.join(workdir, "config.json")
    payload = json.loads(config.to_json())
    if os.path.exists(config_path) and read_json(config_path) != payload:
        log.warning("workdir %s held a run with a different config; overwriting config.json",
                    workdir)
    write_json(config_path, payload)
    write_json(os.path.join(workdir, "run.json"), {
        "data_shape": [source.dim],
        "data_name": source.name,
        "standardizer": source.standardizer.to_dict(),
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

    def close(self) -> None:
        self._writer.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train (or resume) the run in `workdir`; return the final evaluation report."""
    source = prepare(config)
    _write_run_files(config, workdir, source)
    data_shape = (source.dim,)
    model = experiment.build_model(config)
    schedule = experiment.build_schedule(config)
    optimizer = experiment.build_optimizer(config)
    state = experiment.init_state(config, model, optimizer, data_shape)

    checkpointer = Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(state)
        print(f"resuming {workdir} from step {int(state.step)}", flush=True)
    train_step = make_train_step(
        model.apply, optimizer, schedule, loss_kwargs=experiment.loss_kwargs(config),
        ema_decay=config.ema.decay, ema_warmup=config.ema.warmup,
    )
    writer = _MetricWriter(workdir)
    start, total = int(state.step), config.train.steps
    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=None)
    window_start, window_steps = time.perf_counter(), 0
    for step in range(start, total):
        batch = {"x": source.batch(step, config.train.batch_size)}
        state, metrics = train_step(state, batch)
        window_steps += 1
        done = step + 1
        if done % config.train.log_every == 0 or done == total:
            metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
            elapsed = time.perf_counter() - window_start
            metrics["steps_per_s"] = window_steps / max(elapsed, 1e-9)
            writer.scalars(done, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", steps_per_s=f"{metrics['steps_per_s']:.0f}")
            window_start, window_steps = time.perf_counter(), 0
        if done % config.train.checkpoint_every == 0 or done == total:
            checkpointer.save(done, state)
        bar.update(1)
    bar.close()
    checkpointer.wait()
    checkpointer.close()

    report = evaluate(config, workdir, model, schedule, state, source)
    writer.scalars(total, {f"eval/{name}": value for name, value in report.items()
                           if isinstance(value, float)})
    writer.close()
    return report


def evaluate(config, workdir, model, schedule, state, source) -> dict:
    """Sample with the EMA parameters and compare with fresh data; write eval.json and plots."""
    num = config.eval.num_samples
    shape = (num,) + (source.dim,)
    model_fn = functools.partial(model.apply, state.ema_params)
    start = time.perf_counter()
    out = experiment.sample_model(model_fn, schedule, config, shape,
                                  key=jax.random.key(config.seed + 1),
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
