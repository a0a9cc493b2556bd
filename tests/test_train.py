"""End to end: train.py's function on tiny runs, checkpoint/resume, sample.py, bad input."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxdiff.errors import ConfigError
from jaxdiff.run import load_run
from jaxdiff.train_loop import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import toy2d  # noqa: E402


def tiny_config(**overrides):
    config = toy2d.get_config()
    config.model.hidden = 32
    config.model.depth = 1
    config.model.time_dim = 16
    config.diffusion.timesteps = 20
    config.train.steps = 12
    config.train.batch_size = 64
    config.train.log_every = 4
    config.train.checkpoint_every = 5
    config.optim.warmup_steps = 2
    config.sample.steps = 5
    config.eval.num_samples = 200
    config.eval.plots = False
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    return config


def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_train_checkpoint_restore_and_resume(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(**{"eval.plots": True})
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
    longer = tiny_config(**{"train.steps": 17})
    report = train_and_evaluate(longer, workdir)
    assert report["step"] == 17
    assert load_run(workdir).step == 17


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    """Drop the newer checkpoints of a finished run (as if it had died after step 5) and rerun
    the same command: it resumes at 5 and ends with the uninterrupted run's exact parameters."""
    straight = str(tmp_path / "a")
    train_and_evaluate(tiny_config(), straight)
    resumed = str(tmp_path / "b")
    shutil.copytree(straight, resumed)
    for step in ("10", "12"):
        shutil.rmtree(os.path.join(resumed, "checkpoints", step))
    assert load_run(resumed).step == 5
    train_and_evaluate(tiny_config(), resumed)
    a, b = load_run(straight), load_run(resumed)
    assert a.step == b.step == 12
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_array_source_trains_on_a_file(tmp_path):
    data = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32) * [1, 2, 3] + 5
    path = tmp_path / "points.npy"
    np.save(path, data)
    workdir = str(tmp_path / "run")
    report = train_and_evaluate(tiny_config(**{"data.name": "array", "data.path": str(path)}),
                                workdir)
    assert report["step"] == 12
    run = load_run(workdir)
    assert run.data_shape == (3,)
    samples = run.sample(100)
    assert samples.shape == (100, 3) and np.isfinite(samples).all()
    # the statistics that map samples back to data space are the file's
    np.testing.assert_allclose(run.standardizer.mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(run.standardizer.std, data.std(0), rtol=1e-5)


def test_sample_script_reads_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(), workdir)
    out = tmp_path / "out" / "s.npz"
    result = run_script("sample.py", "--workdir", workdir, "--num_samples", "40", "--out",
                        str(out), "--sampler", "ddim", "--steps", "4", "--trajectory")
    assert result.returncode == 0, result.stderr
    with np.load(out) as saved:
        assert saved["samples"].shape == (40, 2)
    assert os.path.exists(tmp_path / "out" / "s.png")
    assert os.path.exists(tmp_path / "out" / "s_trajectory.png")


BAD_TRAIN_FLAGS = [
    ("--config.data.name=unicorn", "data.name"),
    ("--config.train.batch_size=0", "train.batch_size"),
    ("--config.sample.steps=5000", "sample.steps"),
    ("--config.data.name=array", "data.path"),
]


@pytest.mark.parametrize("flag,field", BAD_TRAIN_FLAGS)
def test_bad_train_config_fails_in_one_line(tmp_path, flag, field):
    result = run_script("train.py", "--config", "configs/toy2d.py", "--workdir",
                        str(tmp_path / "run"), flag)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_bad_array_files_name_the_path(tmp_path):
    missing = str(tmp_path / "missing.npy")
    malformed = tmp_path / "bad.npy"
    malformed.write_bytes(b"not a numpy file")
    for path in (missing, str(malformed)):
        config = tiny_config(**{"data.name": "array", "data.path": path})
        with pytest.raises(ConfigError, match="data.path"):
            train_and_evaluate(config, str(tmp_path / "run"))


def test_sample_script_rejects_bad_flags(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(), workdir)
    result = run_script("sample.py", "--workdir", workdir, "--sampler", "ddim", "--steps", "500")
    assert result.returncode == 2 and "--steps=500" in result.stderr
    result = run_script("sample.py", "--workdir", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "workdir" in result.stderr


def test_config_json_round_trips(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config(), workdir)
    with open(os.path.join(workdir, "config.json")) as handle:
        assert json.load(handle)["data"]["name"] == "butterfly"
