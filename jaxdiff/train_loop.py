"""`train_and_evaluate(config, workdir)`: the whole training job, top to bottom.

Validate the config and open its data (everything that can fail on bad input happens before
compilation), build the model, schedule, optimiser and train state (jaxdiff.training), restore the
newest readable checkpoint if the workdir has one (jaxdiff.checkpoint), write the run files
(jaxdiff.workdir), train with periodic logging, sample pictures and checkpoints, then evaluate
the EMA parameters (jaxdiff.evaluate). SIGTERM / SIGINT save a checkpoint and stop.

Every `train.log_every` steps TensorBoard (and the console line) gets, for the steps since the
last log (the window):
  loss, grad_norm   means over the window's steps, accumulated on the device (no host sync per
                    step); steps whose value is not finite (skipped steps) are left out of the mean
  learning_rate     the optax schedule's value for the window's last update (optax count
                    step - 1; see `jaxdiff.training.build_learning_rate`)
  steps_per_s       training throughput: the first call of each train-step function (compiling,
                    and its steps), sample pictures and checkpoint saves are left out of the timing
  skipped           non-finite steps skipped since the start of the run
and compile_seconds once, after the first call of the train step (tracing, compiling and one
step; with `train.steps_per_call` a ragged last chunk compiles a single-step function too, and
the total is logged again). Every `eval.sample_every` steps and at the end the image "samples"
(points: samples beside data; images: a grid). With `train.steps_per_call` k > 1 a call returns
the metrics of its last step only, so the window means are over those, each weighted by k.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxdiff import evaluate, sharding
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.config import config_warnings, validate_config
from jaxdiff.data.sources import DataSource, open_source, prefetch_batches
from jaxdiff.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from jaxdiff.memory import check_fits
from jaxdiff.models import build_model
from jaxdiff.training import (LinenApply, all_finite, build_learning_rate, build_optimizer,
                              build_schedule, init_train_state, loss_kwargs, make_train_step)
from jaxdiff.workdir import RunInfo, check_resumable, workdir_lock, write_run

log = logging.getLogger("jaxdiff")


def prepare(config: ml_collections.ConfigDict) -> DataSource:
    """Validate the config and open its data: the checks that run before any compilation."""
    validate_config(config)
    return open_source(config)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       force: bool = False) -> dict:
    """Train (or resume) the run in `workdir`; return the final evaluation report.

    Refused with ConfigError, before anything is compiled or written: a bad config, a workdir
    holding a run of a different config (beyond RESUMABLE_CHANGES) unless `force`, a workdir
    another live train.py holds (train.lock), a config that cannot fit in memory, and
    `train.steps` below the step the run has reached. config.json and run.json are written once
    the restore succeeded, so a refused run leaves an existing one loadable."""
    source = prepare(config)
    for warning in config_warnings(config):
        log.warning("%s", warning)
    check_resumable(workdir, config, force=force)
    with workdir_lock(workdir):
        return _train(config, workdir, source)


def _train(config: ml_collections.ConfigDict, workdir: str, source: DataSource) -> dict:
    """The run itself, under the workdir lock: set up, restore, train, save, evaluate."""
    model = build_model(config)
    try:
        mesh = sharding.make_mesh(config.train.get("num_devices", 0) or None,
                                  fsdp=config.train.get("fsdp", 1))
    except ValueError as error:  # (validate_config has checked both fields already)
        raise ConfigError(f"config.train: {error}") from None
    try:
        sharding.check_batch_size(config.train.batch_size, mesh)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_fits(config, model, source.shape, sharding.num_batch_shards(mesh))
    schedule, optimizer = build_schedule(config), build_optimizer(config)
    state = init_train_state(config, model, optimizer, source.shape)
    state = sharding.put_state(state, mesh)  # replicated, or split along "fsdp"

    checkpointer = Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
    restored = checkpointer.restore_newest_good(state)  # onto the state's layout
    if restored is not None:
        state = restored[0]
        if int(state.step) > config.train.steps:
            checkpointer.close()
            raise ConfigError(f"config.train.steps={config.train.steps} is invalid: the run in "
                              f"workdir={workdir!r} is already at step {int(state.step)}")
        print(f"resuming {workdir} from step {int(state.step)}", flush=True)
    # written once the state is known to fit, so a refused restore leaves the old run intact
    write_run(workdir, config, RunInfo(tuple(source.shape), source.name, source.num_classes,
                                       source.codec))
    per_call = config.train.get("steps_per_call", 1)
    step_fns = {n: make_train_step(
        LinenApply(model), optimizer, schedule, loss_kwargs=loss_kwargs(config),
        ema_decay=config.ema.decay, ema_warmup=config.ema.warmup, takes_key=True, mesh=mesh,
        steps_per_call=n,
    ) for n in sorted({1, per_call})}
    writer = _MetricWriter(workdir)
    learning_rate = build_learning_rate(config)
    sample_every = config.eval.get("sample_every", 0)
    start, total = int(state.step), config.train.steps
    main = sharding.is_main_process()
    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=None if main else True)
    window = _Window()
    compiled, compile_seconds = set(), 0.0
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
            batch = sharding.global_batch(batch, mesh, stacked=count > 1)
            first_call = count not in compiled
            if first_call:  # time the compilation alone: wait for the steps already dispatched
                jax.block_until_ready(state)
                call_start = time.perf_counter()
            state, metrics = step_fns[count](state, batch)
            before, step = step, step + count
            done = step
            window.add(metrics, count)
            if first_call:
                jax.block_until_ready(metrics)
                seconds = time.perf_counter() - call_start
                window.exclude(seconds, count)
                compiled.add(count)
                compile_seconds += seconds
                writer.scalars(done, {"compile_seconds": compile_seconds})
                _say(f"compiled the train step ({count} step{'s' * (count > 1)} per call) in "
                     f"{seconds:.1f} s", bar, main)
            if crossed(config.train.log_every, before, done) or done == total:
                streak = int(state.skip_streak)
                if streak >= max_streak:
                    checkpointer.wait()
                    checkpointer.close()
                    raise TrainingDiverged(
                        f"step {done}: the last {streak} steps had a non-finite loss, gradient or "
                        f"update (train.max_skipped_steps={max_streak}); stopped without saving, the "
                        f"newest checkpoint in {checkpointer.directory} is the last good state")
                values = window.summary(metrics)
                values["learning_rate"] = float(learning_rate(done - 1))
                _log(done, total, values, writer, bar, main)
                window.restart()  # logging is not training time
            if crossed(sample_every, before, done) and done != total:
                with window.excluding(state):
                    picture = evaluate.sample_picture(config, model, schedule, state, source,
                                                      workdir, done)
                    writer.image(done, "samples", picture)
            saved = crossed(config.train.checkpoint_every, before, done) or done == total
            if saved:
                with window.excluding(state):
                    _save(checkpointer, done, state)
            bar.update(count)
            if signals.received is not None and done != total:
                if not saved:
                    _save(checkpointer, done, state)
                checkpointer.wait()
                checkpointer.close()
                bar.close()
                raise TrainingInterrupted(
                    signals.received, f"{signal.Signals(signals.received).name} at step {done}: "
                    f"saved {checkpointer.path(done)}; run the same command to resume")
    bar.close()
    checkpointer.wait()
    checkpointer.close()

    report = evaluate.evaluate(config, workdir, model, schedule, state, source,
                               log_image=lambda name, picture: writer.image(total, name, picture))
    writer.scalars(total, {f"eval/{name}": value for name, value in report.items()
                           if isinstance(value, float)})
    writer.close()
    return report


# The metrics averaged over a log window; the others (skipped, cond_drop_prob) are logged as the
# window's last value.
MEAN_METRICS = ("loss", "grad_norm")


@jax.jit
def _accumulate(sums, metrics, weight):
    """sums[name] = (sum of weight * value, sum of weight) over finite values."""
    out = {}
    for name, (total, count) in sums.items():
        finite = jnp.isfinite(metrics[name])
        out[name] = (total + jnp.where(finite, weight * metrics[name], 0.0),
                     count + jnp.where(finite, weight, 0.0))
    return out


class _Window:
    """The metrics and timing of the steps since the last log. `add` keeps device arrays (a
    running sum on the device: no host sync per step); `summary` fetches them once."""

    def __init__(self):
        self.restart()

    def restart(self):
        """A new window: no steps, timing from now."""
        self.sums = None
        self.start, self.timed_steps, self.excluded = time.perf_counter(), 0, 0.0

    def add(self, metrics, count: int) -> None:
        """One train-step call of `count` steps (its metrics are those of its last step)."""
        if self.sums is None:  # zeros laid out as the metrics are, so _accumulate compiles once
            zero = np.zeros((), np.float32)
            self.sums = {name: (jax.device_put(zero, metrics[name].sharding),) * 2
                         for name in MEAN_METRICS if name in metrics}
        self.sums = _accumulate(self.sums, metrics, np.float32(count))
        self.timed_steps += count

    def exclude(self, seconds: float, count: int) -> None:
        """Leave the last `seconds`, and `count` steps, out of steps_per_s; with no step timed
        yet the timing starts now (after the first step of a run or resume, say)."""
        self.timed_steps -= count
        if self.timed_steps == 0:
            self.start, self.excluded = time.perf_counter(), 0.0
        else:
            self.excluded += seconds

    @contextlib.contextmanager
    def excluding(self, state):
        """Leave the block's time out of steps_per_s, after waiting for the steps that compute
        `state` (their time stays in)."""
        jax.block_until_ready(state)
        start = time.perf_counter()
        yield
        self.exclude(time.perf_counter() - start, 0)

    def summary(self, metrics) -> dict[str, float]:
        """The window's values, `metrics` (the last call's) for those not averaged. Fetching the
        sums waits for the window's steps, so the timing is theirs; `restart` starts the next."""
        last = {name: float(value) for name, value in jax.device_get(metrics).items()}
        sums = jax.device_get(self.sums or {})
        values = {**last, **{name: float(total / count) if count else float("nan")
                             for name, (total, count) in sums.items() if name in last}}
        elapsed = time.perf_counter() - self.start - self.excluded
        if self.timed_steps > 0:
            values["steps_per_s"] = self.timed_steps / max(elapsed, 1e-9)
        return values


def _say(message: str, bar, main: bool) -> None:
    """A line on the main process's console, above the progress bar when there is one."""
    if main and bar.disable:
        print(message, flush=True)
    elif main:
        bar.write(message)


def _log(done: int, total: int, values: dict[str, float], writer, bar, main: bool) -> None:
    writer.scalars(done, values)
    speed = values.get("steps_per_s")
    postfix = {"loss": f"{values['loss']:.4f}", "lr": f"{values['learning_rate']:.2e}"}
    if speed is not None:
        postfix["steps_per_s"] = f"{speed:.1f}"
    if values.get("skipped"):
        postfix["skipped"] = int(values["skipped"])
    bar.set_postfix(postfix)
    if bar.disable and main:  # no terminal (a log file, a cluster job): one line per log interval
        skipped = (f", {int(values['skipped'])} non-finite steps skipped"
                   if values.get("skipped") else "")
        throughput = f", {speed:.1f} steps/s" if speed is not None else ""
        print(f"step {done}/{total}: loss {values['loss']:.4f}, lr {values['learning_rate']:.3g}, "
              f"grad norm {values['grad_norm']:.3g}{throughput}{skipped}", flush=True)


def _save(checkpointer: Checkpointer, step: int, state) -> None:
    """Save `state`, which the train step keeps finite; a non-finite one is refused, so that
    every checkpoint is a good state."""
    if not bool(all_finite(state)):
        checkpointer.wait()
        checkpointer.close()
        raise TrainingDiverged(f"step {step}: the train state holds non-finite values; not saved, "
                               f"the newest checkpoint in {checkpointer.directory} is the last "
                               f"good state")
    checkpointer.save(step, state)


def _training_batches(source: DataSource, start: int, total: int, config):
    """This process's batches of steps start..total-1, read ahead by a bounded background
    thread; labels only for a class-conditional model."""
    for batch in prefetch_batches(source, range(start, total), config.train.batch_size):
        if not config.model.num_classes:
            batch.pop("labels", None)
        yield batch


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
        if self.received is not None:
            # A second signal stops at once, without saving and without unwinding (an exception
            # raised here would surface from whatever Orbax or the prefetch thread is doing).
            # Checkpoints are atomic, so the workdir still resumes from the newest complete one.
            print(f"error: a second {signal.Signals(signum).name}: stopped at once without "
                  f"saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.received = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False
