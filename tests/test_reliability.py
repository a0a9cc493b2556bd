"""Kills, damaged checkpoints and non-finite steps: a run loses nothing and ends where an
uninterrupted run ends."""

import logging
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.checkpoint import Checkpointer
from jaxdiff.errors import CheckpointError, TrainingDiverged
from jaxdiff.run import load_run
from jaxdiff.schedules import make_schedule
from jaxdiff.train_loop import train_and_evaluate
from jaxdiff.training import create_train_state, make_optimizer, make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import toy2d  # noqa: E402

TINY_FLAGS = [
    "--config.model.hidden=32", "--config.model.depth=1", "--config.model.time_dim=16",
    "--config.diffusion.timesteps=20", "--config.train.batch_size=32",
    "--config.train.log_every=1", "--config.optim.warmup_steps=2", "--config.sample.steps=5",
    "--config.eval.num_samples=50", "--config.eval.plots=false",
]


def tiny_config(**overrides):
    config = toy2d.get_config()
    config.model.hidden, config.model.depth, config.model.time_dim = 32, 1, 16
    config.diffusion.timesteps = 20
    config.train.steps, config.train.batch_size = 12, 32
    config.train.log_every, config.train.checkpoint_every = 4, 5
    config.optim.warmup_steps = 2
    config.sample.steps = 5
    config.eval.num_samples, config.eval.plots = 50, False
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    return config


def final_params(workdir):
    return jax.device_get(load_run(workdir).params)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def train_command(workdir, steps, checkpoint_every):
    return [sys.executable, "train.py", "--config", "configs/toy2d.py", "--workdir", workdir,
            f"--config.train.steps={steps}", f"--config.train.checkpoint_every={checkpoint_every}",
            *TINY_FLAGS]


def start(command):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def wait_for_step(process, step, timeout=240):
    """Read the run's output until it reports `step` (or ends); return the lines read."""
    lines, deadline = [], time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if line.startswith(f"step {step}/"):
            return lines
        assert time.monotonic() < deadline, "".join(lines[-20:])
    return lines


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_matches_uninterrupted_run(tmp_path):
    steps, every = 40, 3
    reference = str(tmp_path / "reference")
    done = subprocess.run(train_command(reference, steps, every), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    workdir = str(tmp_path / "killed")
    rng = random.Random(1234)
    kill_steps = sorted(rng.sample(range(2, steps - 2), 3))
    for kill_step in kill_steps:
        process = start(train_command(workdir, steps, every))
        lines = wait_for_step(process, kill_step)
        process.send_signal(signal.SIGKILL)  # no handler can run: whatever was on disk stays
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL, "".join(lines[-20:])
    last = subprocess.run(train_command(workdir, steps, every), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert last.returncode == 0, last.stderr[-2000:]
    assert "resuming" in last.stdout
    assert_trees_equal(final_params(workdir), final_params(reference))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    process = start(train_command(workdir, 30, 100))  # no periodic checkpoint before step 30
    wait_for_step(process, 5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "SIGTERM at step" in output and "run the same command to resume" in output
    checkpointer = Checkpointer(workdir)
    saved = checkpointer.latest_step()
    checkpointer.close()
    assert 5 <= saved < 30
    again = subprocess.run(train_command(workdir, 30, 100), cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming {workdir} from step {saved}" in again.stdout


def _truncate_largest_file(directory):
    files = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as handle:
        handle.truncate(os.path.getsize(largest) // 3)


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    reference = str(tmp_path / "reference")
    train_and_evaluate(tiny_config(), reference)
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(), workdir)  # checkpoints 5, 10, 12
    newest = os.path.join(workdir, "checkpoints", "12")
    _truncate_largest_file(newest)

    with caplog.at_level(logging.WARNING, logger="jaxdiff"):
        run = load_run(workdir)
    assert run.step == 10
    assert any(newest in record.getMessage() and os.path.join(workdir, "checkpoints", "10")
               in record.getMessage() for record in caplog.records), caplog.text
    # The damaged step was moved aside, not deleted; training redoes it from step 10.
    assert os.path.isdir(os.path.join(workdir, "checkpoints_damaged", "12"))
    report = train_and_evaluate(tiny_config(), workdir)
    assert report["step"] == 12
    assert_trees_equal(final_params(workdir), final_params(reference))


def test_no_usable_checkpoint_is_a_one_line_error(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(**{"train.steps": 5, "train.keep_checkpoints": 1}), workdir)
    _truncate_largest_file(os.path.join(workdir, "checkpoints", "5"))
    with pytest.raises(CheckpointError, match="no usable checkpoint in .*checkpoints/5"):
        load_run(workdir)
    done = subprocess.run([sys.executable, "sample.py", "--workdir", workdir, "--num_samples", "4",
                           "--out", str(tmp_path / "s.npz")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    # (Orbax may also log the storage error from its own threads, before or after our line.)
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no usable checkpoint" in errors[0] and "checkpoints/5" in errors[0]


def _toy_step(max_inputs=8):
    schedule = make_schedule("linear", timesteps=10)
    optimizer = make_optimizer(1e-2)

    def apply_fn(params, x, t, train=False, rngs=None):
        return x * params["w"][None, :] + params["b"][None, :]

    params = {"w": jnp.ones((2,)), "b": jnp.zeros((2,))}
    state = create_train_state(params, optimizer, jax.random.key(0))
    step = make_train_step(apply_fn, optimizer, schedule, loss_kwargs={}, ema_decay=0.9)
    return state, step


def test_non_finite_batch_skips_the_update_and_counts_it():
    state, step = _toy_step()
    good = {"x": jnp.ones((8, 2))}
    bad = {"x": jnp.full((8, 2), jnp.nan)}
    state, _ = step(state, good)
    before = jax.device_get(state)
    state, metrics = step(state, bad)
    after = jax.device_get(state)
    assert int(after.step) == 2 and int(after.skipped) == 1 and int(after.skip_streak) == 1
    assert float(metrics["skipped"]) == 1.0
    assert_trees_equal(after.params, before.params)
    assert_trees_equal(after.ema_params, before.ema_params)
    assert_trees_equal(after.opt_state, before.opt_state)
    state, _ = step(state, bad)
    assert int(state.skip_streak) == 2
    state, _ = step(state, good)
    assert int(state.skipped) == 2 and int(state.skip_streak) == 0
    assert np.all(np.isfinite(jax.device_get(state.params)["w"]))


def test_consecutive_non_finite_steps_stop_training_with_the_last_good_checkpoint(tmp_path,
                                                                                monkeypatch):
    from jaxdiff import train_loop

    clean = train_loop._training_batches

    def nan_after_step_6(source, start, total, config):
        for step, batch in enumerate(clean(source, start, total, config), start):
            yield {"x": np.full_like(batch["x"], np.nan)} if step >= 6 else batch

    monkeypatch.setattr(train_loop, "_training_batches", nan_after_step_6)
    workdir = str(tmp_path / "run")
    config = tiny_config(**{"train.steps": 40, "train.log_every": 2,
                            "train.max_skipped_steps": 4})
    with pytest.raises(TrainingDiverged, match="train.max_skipped_steps=4"):
        train_and_evaluate(config, workdir)
    checkpointer = Checkpointer(workdir)
    steps = checkpointer.all_steps()
    checkpointer.close()
    assert steps and max(steps) <= 10
    run = load_run(workdir)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(run.params))
