"""train.py's function, `train_and_evaluate(config, workdir)`, end to end on tiny runs: the files
it writes, checkpoint / resume to the exact parameters of an uninterrupted run, array files, and
a run stopped by consecutive non-finite steps."""

import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxdiff.checkpoint import Checkpointer
from jaxdiff.errors import CheckpointError, ConfigError, TrainingDiverged
from jaxdiff.run import load_run
from jaxdiff.train_loop import train_and_evaluate

from helpers import assert_trees_equal, tiny_toy_config


def test_train_checkpoint_restore_and_resume(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_toy_config(**{"eval.plots": True})
    report = train_and_evaluate(config, workdir)
    assert report["step"] == 12
    assert np.isfinite(report["swd"]) and report["swd_floor"] > 0
    for name in ("config.json", "run.json", "eval.json", "samples.png", "trajectory.png",
                 "forward.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
    checkpoints = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                         if d.isdigit())
    assert checkpoints[-1] == 12 and 10 in checkpoints

    run = load_run(workdir)
    assert run.step == 12
    samples = run.sample(50, seed=3)
    assert samples.shape == (50, 2) and np.isfinite(samples).all()

    # Resume: more steps in the same workdir continue from 12, not from 0.
    longer = tiny_toy_config(**{"train.steps": 17})
    report = train_and_evaluate(longer, workdir)
    assert report["step"] == 17
    assert load_run(workdir).step == 17


def test_resumed_run_matches_uninterrupted_run(toy_run, tmp_path):
    """Drop the newer checkpoints of a finished run (as if it had died after step 5) and rerun
    the same command: it resumes at 5 and ends with the uninterrupted run's exact parameters."""
    resumed = str(tmp_path / "b")
    shutil.copytree(toy_run, resumed)
    for step in ("10", "12"):
        shutil.rmtree(os.path.join(resumed, "checkpoints", step))
    assert load_run(resumed).step == 5
    train_and_evaluate(tiny_toy_config(), resumed)
    a, b = load_run(toy_run), load_run(resumed)
    assert a.step == b.step == 12
    assert_trees_equal(a.params, b.params)


def test_array_source_trains_on_a_file(tmp_path):
    data = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32) * [1, 2, 3] + 5
    path = tmp_path / "points.npy"
    np.save(path, data)
    workdir = str(tmp_path / "run")
    report = train_and_evaluate(tiny_toy_config(**{"data.name": "array", "data.path": str(path)}),
                                workdir)
    assert report["step"] == 12
    run = load_run(workdir)
    assert run.data_shape == (3,)
    samples = run.sample(100)
    assert samples.shape == (100, 3) and np.isfinite(samples).all()
    # the statistics that map samples back to data space are those of the file's training rows
    # (data.holdout = 0.1 of them are held out for the evaluation)
    from jaxdiff.data.points import split_holdout

    train, _ = split_holdout(data, 0.1, seed=0)
    assert len(train) == 270
    np.testing.assert_allclose(run.standardizer.mean, train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(run.standardizer.std, train.std(0), rtol=1e-5)


def test_bad_array_files_name_the_path(tmp_path):
    missing = str(tmp_path / "missing.npy")
    malformed = tmp_path / "bad.npy"
    malformed.write_bytes(b"not a numpy file")
    for path in (missing, str(malformed)):
        config = tiny_toy_config(**{"data.name": "array", "data.path": path})
        with pytest.raises(ConfigError, match="data.path"):
            train_and_evaluate(config, str(tmp_path / "run"))


def test_config_json_round_trips(toy_run):
    with open(os.path.join(toy_run, "config.json")) as handle:
        assert json.load(handle)["data"]["name"] == "butterfly"


def test_consecutive_non_finite_steps_stop_training_with_the_last_good_checkpoint(tmp_path,
                                                                                monkeypatch):
    from jaxdiff import train_loop

    clean = train_loop._training_batches

    def nan_after_step_6(source, start, total, config):
        for step, batch in enumerate(clean(source, start, total, config), start):
            yield {"x": np.full_like(batch["x"], np.nan)} if step >= 6 else batch

    monkeypatch.setattr(train_loop, "_training_batches", nan_after_step_6)
    workdir = str(tmp_path / "run")
    config = tiny_toy_config(**{"train.steps": 40, "train.log_every": 2,
                                "train.max_skipped_steps": 4})
    with pytest.raises(TrainingDiverged, match="train.max_skipped_steps=4"):
        train_and_evaluate(config, workdir)
    checkpointer = Checkpointer(workdir)
    steps = checkpointer.all_steps()
    checkpointer.close()
    assert steps and max(steps) <= 10
    run = load_run(workdir)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(run.params))


def _saved_states_are_finite(workdir):
    from jaxdiff.models import build_model
    from jaxdiff.training import all_finite, build_optimizer, init_train_state
    from jaxdiff.workdir import read_run

    checkpointer = Checkpointer(workdir, read_only=True)
    steps = checkpointer.all_steps()
    config, info = read_run(workdir)
    model = build_model(config)
    abstract = jax.eval_shape(lambda: init_train_state(config, model, build_optimizer(config),
                                                       info.data_shape))
    return steps, [bool(all_finite(checkpointer.restore(abstract, step))) for step in steps]


def test_an_exploding_optimiser_never_saves_a_non_finite_checkpoint(tmp_path):
    """lr = 1e30 without clipping: every update is skipped or finite; every saved checkpoint
    holds finite values, and the stop message's "last good state" is true."""
    workdir = str(tmp_path / "run")
    config = tiny_toy_config(**{"optim.lr": 1e30, "optim.grad_clip": 0.0, "optim.warmup_steps": 0,
                                "train.steps": 40, "train.max_skipped_steps": 4,
                                "train.log_every": 2, "train.checkpoint_every": 2,
                                "train.keep_checkpoints": 20})
    try:
        train_and_evaluate(config, workdir)
    except TrainingDiverged as error:
        assert "last good state" in str(error)
    steps, finite = _saved_states_are_finite(workdir)
    assert steps and all(finite), (steps, finite)


def test_force_with_another_architecture_keeps_the_old_run_loadable(toy_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(toy_run, workdir)
    before = open(os.path.join(workdir, "config.json")).read()
    with pytest.raises(CheckpointError):
        train_and_evaluate(tiny_toy_config(**{"model.hidden": 48}), workdir, force=True)
    assert open(os.path.join(workdir, "config.json")).read() == before
    assert load_run(workdir).step == 12


def test_fewer_steps_than_the_run_has_are_refused(toy_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(toy_run, workdir)
    with pytest.raises(ConfigError, match=r"train.steps=5 is invalid: .* already at step 12"):
        train_and_evaluate(tiny_toy_config(**{"train.steps": 5}), workdir)


def test_a_live_lock_refuses_a_second_trainer_and_a_stale_one_is_taken_over(toy_run, tmp_path,
                                                                           caplog):
    import socket

    workdir = str(tmp_path / "run")
    shutil.copytree(toy_run, workdir)
    lock = os.path.join(workdir, "train.lock")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(lock, "w") as handle:
            handle.write(f"{socket.gethostname()} {sleeper.pid}")
        with pytest.raises(ConfigError, match=f"in use by train.py process {sleeper.pid}"):
            train_and_evaluate(tiny_toy_config(), workdir)
    finally:
        sleeper.kill()
        sleeper.wait()
    with caplog.at_level(logging.WARNING, logger="jaxdiff"):
        report = train_and_evaluate(tiny_toy_config(**{"train.steps": 13}), workdir)
    assert report["step"] == 13 and "stale train.lock" in caplog.text
    assert not os.path.exists(lock)  # released at the end


def test_deleting_the_checkpoints_while_training_only_loses_those_checkpoints(tmp_path,
                                                                            monkeypatch):
    from jaxdiff import train_loop

    workdir = str(tmp_path / "run")
    clean = train_loop._training_batches

    def delete_at_step_7(source, start, total, config):
        for step, batch in enumerate(clean(source, start, total, config), start):
            if step == 7:  # an Orbax save may still be writing in there: delete until gone
                while os.path.exists(os.path.join(workdir, "checkpoints")):
                    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
            yield batch

    monkeypatch.setattr(train_loop, "_training_batches", delete_at_step_7)
    report = train_and_evaluate(tiny_toy_config(), workdir)
    assert report["step"] == 12 and load_run(workdir).step == 12


@pytest.mark.parametrize("rows", [2, 3, 50])
def test_array_data_of_any_size_ends_with_a_finite_report_against_held_out_rows(tmp_path, rows):
    path = str(tmp_path / "points.npy")
    np.save(path, np.random.default_rng(rows).normal(size=(rows, 2)).astype(np.float32))
    config = tiny_toy_config(**{"data.name": "array", "data.path": path, "train.batch_size": 1,
                                "eval.num_samples": 50})
    report = train_and_evaluate(config, str(tmp_path / "run"))
    values = [value for value in report.values() if isinstance(value, float)]
    assert all(np.isfinite(values)), report


def test_constant_array_data_reports_a_zero_floor_without_dividing_by_it(tmp_path):
    path = str(tmp_path / "constant.npy")
    np.save(path, np.ones((40, 2), np.float32))
    config = tiny_toy_config(**{"data.name": "array", "data.path": path, "train.batch_size": 8})
    report = train_and_evaluate(config, str(tmp_path / "run"))
    assert report["swd_floor"] == 0.0 and np.isfinite(report["swd"])


@pytest.mark.parametrize("field, value", [
    ("train.batch_size", 10**8), ("model.hidden", 10**6), ("diffusion.timesteps", 10**8),
    ("eval.num_samples", 10**9),
])
def test_a_config_that_cannot_fit_in_memory_is_refused_before_compiling(tmp_path, field, value):
    config = tiny_toy_config(**{field: value, "eval.plots": True})
    if field == "diffusion.timesteps":
        config.sample.sampler = "ddpm"
    with pytest.raises(ConfigError, match=rf"config.{field}={value} is invalid: the run needs at "
                                          rf"least .* GiB"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(os.path.join(tmp_path, "run", "checkpoints"))
