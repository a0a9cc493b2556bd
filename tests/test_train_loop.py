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


# --- what TensorBoard shows --------------------------------------------------------------------

def read_events(workdir):
    """The TensorBoard event files of `workdir` read with tensorboardX's protobufs (TensorBoard
    itself is not installed): ({tag: {step: value}} of the scalars, {tag: {step: Image proto}}).
    Each file is a TFRecord stream: length (uint64), its CRC (uint32), the record, its CRC."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars, images = {}, {}
    for name in sorted(os.listdir(workdir)):
        if not name.startswith("events.out.tfevents"):
            continue
        with open(os.path.join(workdir, name), "rb") as handle:
            data = handle.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("image"):
                    images.setdefault(value.tag, {})[event.step] = value.image
                elif value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars, images


def cosine_warmup_lr(count, lr, warmup, total):
    """optax.warmup_cosine_decay_schedule(0, lr, warmup, total) by hand: lr * count / warmup
    during warm-up, then lr (1 + cos(pi (count - warmup) / (total - warmup))) / 2."""
    if count < warmup:
        return lr * count / warmup
    return 0.5 * lr * (1 + np.cos(np.pi * (count - warmup) / (total - warmup)))


@pytest.fixture(scope="module")
def every_step_run(tmp_path_factory):
    """The tiny toy run again (same data, noise and parameters as `toy_run`) logging every step,
    with a scatter picture at step 6; (workdir, captured stdout)."""
    import contextlib
    import io

    workdir = str(tmp_path_factory.mktemp("every_step") / "run")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train_and_evaluate(tiny_toy_config(**{"train.log_every": 1, "eval.sample_every": 6}),
                           workdir)
    return workdir, out.getvalue()


def test_tensorboard_loss_and_grad_norm_are_window_means(toy_run, every_step_run):
    """toy_run logs every 4 steps: its loss and grad norm at step 4k are the means of the
    per-step values of steps 4k-3..4k, which the every-step run logs one by one."""
    windowed, _ = read_events(toy_run)
    per_step, _ = read_events(every_step_run[0])
    assert sorted(per_step["loss"]) == list(range(1, 13))
    assert sorted(windowed["loss"]) == [4, 8, 12]
    for name in ("loss", "grad_norm"):
        for end in (4, 8, 12):
            expected = np.mean([per_step[name][step] for step in range(end - 3, end + 1)])
            np.testing.assert_allclose(windowed[name][end], expected, rtol=1e-5, err_msg=name)
    # the per-step values differ, so a last-batch value would not pass
    assert np.ptp([per_step["loss"][step] for step in range(1, 5)]) > 1e-3


def test_tensorboard_learning_rate_is_the_schedule_at_the_step(toy_run, every_step_run):
    """Logged at step s: the rate of the step's update, optax count s - 1 (lr 1e-3, 2 warm-up
    steps, cosine decay to step 12)."""
    for workdir in (toy_run, every_step_run[0]):
        logged = read_events(workdir)[0]["learning_rate"]
        for step, value in logged.items():
            np.testing.assert_allclose(value, cosine_warmup_lr(step - 1, 1e-3, 2, 12), rtol=1e-5,
                                       atol=1e-12, err_msg=f"step {step}")
    assert read_events(every_step_run[0])[0]["learning_rate"][2] == pytest.approx(5e-4)


def test_tensorboard_throughput_leaves_out_the_compilation(toy_run, every_step_run):
    scalars, _ = read_events(toy_run)
    assert list(scalars["compile_seconds"]) == [1] and scalars["compile_seconds"][1] > 0
    assert sorted(scalars["steps_per_s"]) == [4, 8, 12]
    assert all(value > 0 for value in scalars["steps_per_s"].values())
    # logging every step: step 1 is the compiling call, so it has no throughput of its own
    per_step, _ = read_events(every_step_run[0])
    assert sorted(per_step["steps_per_s"]) == list(range(2, 13))
    assert {"skipped", "eval/swd"} <= set(scalars)


def test_a_point_run_logs_scatter_pictures(every_step_run):
    """eval.sample_every and the end of training put samples beside data into TensorBoard."""
    import io

    from PIL import Image

    workdir, stdout = every_step_run
    _, images = read_events(workdir)
    assert sorted(images["samples"]) == [6, 12]
    for image in images["samples"].values():
        picture = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
        assert picture.shape == (image.height, image.width, 3) and image.width > image.height
        assert (picture == 255).all(axis=-1).mean() > 0.5  # white background
        green = (picture[..., 1].astype(int) - picture[..., 0]) > 60
        assert green.sum() > 100  # the dots
    # no terminal under pytest: the final evaluation says what it samples instead of a bar
    assert "sampling 50 samples with ddpm (20 model calls)..." in stdout
    assert "compiled the train step" in stdout


def test_learning_rate_schedule_matches_the_optimiser():
    """Constant gradients of 1 on a zero parameter make AdamW's update -lr(count) (m_hat =
    v_hat = 1, no weight decay): the logged schedule is the one the optimiser applies. (To
    float32's rounding of Adam's bias correction 1 - b2^t, ~1e-5 relative.)"""
    import jax.numpy as jnp

    from jaxdiff.training import build_learning_rate as learning_rate_schedule
    from jaxdiff.training import build_optimizer

    for decay in ("cosine", "constant"):
        config = tiny_toy_config(**{"optim.decay": decay, "optim.warmup_steps": 3,
                                    "optim.weight_decay": 0.0, "train.steps": 10})
        optimizer, schedule = build_optimizer(config), learning_rate_schedule(config)
        params = {"w": jnp.zeros(())}
        state = optimizer.init(params)
        for count in range(12):
            updates, state = optimizer.update({"w": jnp.ones(())}, state, params)
            np.testing.assert_allclose(-float(updates["w"]), float(schedule(count)), rtol=1e-4,
                                       atol=1e-12, err_msg=f"{decay} at {count}")


def test_warm_up_longer_than_the_run_is_warned_before_training(toy_run, caplog):
    """The warning comes before anything else: here the workdir's different model refuses the
    run right after it, so nothing is trained or written."""
    config = tiny_toy_config(**{"optim.warmup_steps": 12, "model.hidden": 48})
    with caplog.at_level(logging.WARNING, logger="jaxdiff"), pytest.raises(ConfigError):
        train_and_evaluate(config, toy_run)
    warnings = [record.getMessage() for record in caplog.records
                if record.levelno == logging.WARNING]
    assert warnings == ["config.optim.warmup_steps=12 >= config.train.steps=12: the run trains "
                        "only during warm-up (the learning rate never reaches optim.lr=0.001)"]
