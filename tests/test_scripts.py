"""train.py and sample.py run as a user runs them, in a subprocess: sampling a run, guided
sampling, kills and SIGTERM mid-run, and bad input everywhere.

Bad input: each case expects exit code 2, no traceback, and one `error:` line naming the
offending field, flag or file. The README's troubleshooting section lists these cases.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxdiff.checkpoint import Checkpointer
from jaxdiff.errors import CheckpointError
from jaxdiff.run import load_run
from jaxdiff.train_loop import train_and_evaluate

from helpers import (ROOT, assert_trees_equal, load_config, run_script, tiny_toy_config,
                     tiny_toy_flags, truncate_data_files)


# --- sample.py on a finished run -----------------------------------------------------------------

def test_sample_script_reads_checkpoint(toy_run, tmp_path):
    out = tmp_path / "out" / "s.npz"
    result = run_script("sample.py", "--workdir", toy_run, "--num_samples", "40", "--out",
                        str(out), "--sampler", "ddim", "--steps", "4", "--trajectory")
    assert result.returncode == 0, result.stderr
    with np.load(out) as saved:
        assert saved["samples"].shape == (40, 2)
    assert os.path.exists(tmp_path / "out" / "s.png")
    assert os.path.exists(tmp_path / "out" / "s_trajectory.png")


def test_sample_script_rejects_bad_flags(toy_run, tmp_path):
    result = run_script("sample.py", "--workdir", toy_run, "--sampler", "ddim", "--steps", "500")
    assert result.returncode == 2 and "--steps=500" in result.stderr
    result = run_script("sample.py", "--workdir", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "workdir" in result.stderr


@pytest.mark.parametrize("flags, warned", [
    (["--sampler", "ddpm", "--steps", "4", "--eta", "0.5"], "--steps=4 and --eta=0.5 are ignored"),
    (["--steps", "4"], "--steps=4 is ignored"),  # the run's config samples with DDPM
    (["--sampler", "ddim", "--steps", "4", "--eta", "0.5"], None),
], ids=["ddpm-steps-eta", "config-ddpm-steps", "ddim"])
def test_sample_script_warns_of_flags_the_sampler_ignores(toy_run, tmp_path, flags, warned):
    out = tmp_path / "s.npz"
    result = run_script("sample.py", "--workdir", toy_run, "--num_samples", "8", "--out",
                        str(out), *flags)
    assert result.returncode == 0 and out.exists(), result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    if warned is None:
        assert not warnings, result.stderr
    else:
        assert len(warnings) == 1 and warned in warnings[0], result.stderr
        assert "ddpm sampler" in warnings[0] and "--sampler ddim" in warnings[0]
    assert "model calls" in result.stdout


@pytest.mark.parametrize("flags, described", [
    (["--sampler", "dpm_solver", "--steps", "5", "--order", "3"],
     "dpm_solver (order 3, 5 steps, 5 model calls)"),
    (["--sampler", "karras", "--steps", "4", "--solver", "heun", "--churn", "0.5"],
     "karras (heun, 4 steps, churn 0.5, 7 model calls)"),
], ids=["dpm_solver", "karras"])
def test_sample_script_runs_the_fast_samplers_and_says_which(toy_run, tmp_path, flags, described):
    out = tmp_path / "s.npz"
    result = run_script("sample.py", "--workdir", toy_run, "--num_samples", "8", "--out",
                        str(out), *flags)
    assert result.returncode == 0, result.stderr
    assert f"with {described}" in result.stdout, result.stdout
    with np.load(out) as saved:
        assert saved["samples"].shape == (8, 2) and np.all(np.isfinite(saved["samples"]))


def test_sample_script_edits_an_input(toy_run, tmp_path):
    """SDEdit: --num_samples variations per input; inpainting: the known coordinate comes back
    (to the data-space rounding of standardising and back)."""
    inputs = np.array([[0.5, -1.0], [2.0, 1.5], [-1.0, 0.25]], np.float32)
    np.savez(tmp_path / "init.npz", samples=inputs)
    np.savez(tmp_path / "mask.npz", mask=np.array([1.0, 0.0], np.float32))
    out = tmp_path / "sdedit.npz"
    result = run_script("sample.py", "--workdir", toy_run, "--init", str(tmp_path / "init.npz"),
                        "--t_start", "10", "--num_samples", "2", "--sampler", "ddim",
                        "--steps", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "from t_start=10, 5 model calls" in result.stdout, result.stdout
    with np.load(out) as saved:
        assert saved["samples"].shape == (6, 2)
        np.testing.assert_array_equal(saved["input_index"], [0, 0, 1, 1, 2, 2])
        np.testing.assert_array_equal(saved["inputs"], inputs)
    out = tmp_path / "inpainted.npz"
    result = run_script("sample.py", "--workdir", toy_run, "--init", str(tmp_path / "init.npz"),
                        "--mask", str(tmp_path / "mask.npz"), "--sampler", "ddpm",
                        "--resamples", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "RePaint r=2" in result.stdout, result.stdout
    with np.load(out) as saved:
        np.testing.assert_allclose(saved["samples"][:, 0], inputs[:, 0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(saved["samples"][:, 1], inputs[:, 1], atol=1e-3)


def test_no_usable_checkpoint_is_a_one_line_error(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_toy_config(**{"train.steps": 5, "train.keep_checkpoints": 1}), workdir)
    truncate_data_files(os.path.join(workdir, "checkpoints", "5"))
    with pytest.raises(CheckpointError, match="no usable checkpoint in .*checkpoints/5"):
        load_run(workdir)
    done = run_script("sample.py", "--workdir", workdir, "--num_samples", "4", "--out",
                      str(tmp_path / "s.npz"))
    assert done.returncode == 2
    errors = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    # (Orbax may also log the storage error from its own threads, before or after our line.)
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no usable checkpoint" in errors[0] and "checkpoints/5" in errors[0]


# --- guided sampling with sample.py --------------------------------------------------------------

@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A run directory holding an (untrained) tiny class-conditional digits U-Net."""
    import json

    from jaxdiff.models import build_model
    from jaxdiff.training import build_optimizer, init_train_state
    from jaxdiff.workdir import write_json

    workdir = str(tmp_path_factory.mktemp("cond") / "run")
    config = load_config("digits_cond")
    config.model.dim = 8
    config.model.dim_mults = (1,)
    config.diffusion.timesteps = 10
    config.sample.steps = 2
    model, optimizer = build_model(config), build_optimizer(config)
    state = init_train_state(config, model, optimizer, (8, 8, 1))
    os.makedirs(workdir)
    write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
    write_json(os.path.join(workdir, "run.json"), {"data_shape": [8, 8, 1], "data_name": "digits",
                                                   "num_classes": 10, "standardizer": None})
    checkpointer = Checkpointer(workdir)
    checkpointer.save(1, state)
    checkpointer.wait()
    checkpointer.close()
    return workdir


@pytest.mark.slow
def test_sample_script_writes_one_row_per_class_and_one_column_per_scale(conditional_run, tmp_path):
    from PIL import Image

    out = str(tmp_path / "guided.npz")
    result = run_script("sample.py", "--workdir", conditional_run, "--labels", "0,1,2",
                        "--guidance_scale", "0,1,3", "--num_samples", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    with np.load(out) as saved:
        assert saved["samples"].shape == (18, 8, 8, 1) and saved["samples"].dtype == np.uint8
        np.testing.assert_array_equal(saved["labels"], np.repeat([0, 1, 2], 6))
        np.testing.assert_array_equal(saved["guidance_scale"], np.tile([0, 0, 1, 1, 3, 3], 3))
    with Image.open(str(tmp_path / "guided.png")) as grid:  # 3 rows x (3 scales x 2) columns
        width, height = grid.size  # (6 * 9 + 1, 3 * 9 + 1) pixels, maybe zoomed for display
        assert width * (3 * 9 + 1) == height * (6 * 9 + 1)


@pytest.mark.slow
@pytest.mark.parametrize("flags,needle", [
    (["--labels", "0,12"], "--labels=0,12 is invalid: label 12 is outside [0, num_classes=10)"),
    (["--labels", "a,b"], "--labels='a,b' is invalid"),
    (["--guidance_scale", "3"], "--guidance_scale=3 is invalid without --labels"),
    (["--labels", "1", "--guidance_scale", "-2"], "--guidance_scale=-2 is invalid"),
], ids=["label_range", "label_text", "scale_without_labels", "negative_scale"])
def test_sample_script_rejects_bad_guidance_flags(conditional_run, tmp_path, flags, needle):
    result = run_script("sample.py", "--workdir", conditional_run, "--out",
                        str(tmp_path / "x.npz"), *flags)
    assert result.returncode == 2 and needle in result.stderr, result.stderr


# --- kills and SIGTERM: a run loses nothing and ends where an uninterrupted run ends -------------

def train_command(workdir, steps, checkpoint_every):
    return ["train.py", f"--workdir={workdir}",
            *tiny_toy_flags(**{"train.steps": steps, "train.checkpoint_every": checkpoint_every,
                               "train.log_every": 1})]


def start(command):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


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
def _newest_step_directory(workdir):
    checkpoints = os.path.join(workdir, "checkpoints")
    steps = sorted(int(name) for name in os.listdir(checkpoints) if name.isdigit())
    return os.path.join(checkpoints, str(steps[-1])) if steps else None


def _inject_fault(workdir, fault):
    """Damage the workdir between runs as a crash, a disk error or a user could."""
    newest = _newest_step_directory(workdir)
    if fault == "truncate" and newest:
        truncate_data_files(newest)
    elif fault == "delete" and newest:
        shutil.rmtree(newest)
    elif fault == "stray":
        os.makedirs(os.path.join(workdir, "checkpoints", "99999"), exist_ok=True)


def test_sigkill_at_random_steps_then_resume_matches_uninterrupted_run(tmp_path):
    """Fault injection: SIGKILL at random steps (checkpoints every 3 steps, so kills land during
    asynchronous saves too), and between runs the newest checkpoint truncated or deleted, or a
    stray step directory left; the run still ends bit-identical to an uninterrupted one."""
    steps, every = 40, 3
    reference = str(tmp_path / "reference")
    done = run_script(*train_command(reference, steps, every))
    assert done.returncode == 0, done.stderr[-2000:]

    workdir = str(tmp_path / "killed")
    rng = random.Random(1234)
    kill_steps = sorted(rng.sample(range(5, steps - 2), 3))
    for kill_step, fault in zip(kill_steps, ["truncate", "stray", "delete"]):
        process = start(train_command(workdir, steps, every))
        lines = wait_for_step(process, kill_step)
        process.send_signal(signal.SIGKILL)  # no handler can run: whatever was on disk stays
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL, "".join(lines[-20:])
        _inject_fault(workdir, fault)
    last = run_script(*train_command(workdir, steps, every))
    assert last.returncode == 0, last.stderr[-2000:]
    assert "resuming" in last.stdout
    assert_trees_equal(load_run(workdir).params, load_run(reference).params)


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
    again = run_script(*train_command(workdir, 30, 100))
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming {workdir} from step {saved}" in again.stdout


@pytest.mark.slow
def test_a_second_sigterm_stops_at_once_in_one_line_and_the_run_still_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    process = start(train_command(workdir, 30, 5))
    wait_for_step(process, 12)  # the checkpoint of step 5 is complete by now
    process.send_signal(signal.SIGTERM)
    time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    again = run_script(*train_command(workdir, 30, 5))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stdout


# --- bad input -----------------------------------------------------------------------------------

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


TOY = ["--config=toy2d"]
DIGITS = ["--config=digits"]


def _files(tmp):
    """Bad files for the cases, keyed by name."""
    paths = {}
    paths["garbage"] = tmp / "garbage.npy"
    paths["garbage"].write_bytes(b"this is not an array")
    paths["cube"] = tmp / "cube.npy"
    np.save(paths["cube"], np.zeros((10, 2, 2), np.float32))
    paths["nan"] = tmp / "nan.npy"
    np.save(paths["nan"], np.full((100, 2), np.nan, np.float32))
    paths["small"] = tmp / "small.npy"
    np.save(paths["small"], np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32))
    paths["empty_dir"] = tmp / "empty_dir"
    paths["empty_dir"].mkdir()
    paths["broken_dir"] = tmp / "broken_dir"
    paths["broken_dir"].mkdir()
    (paths["broken_dir"] / "a.png").write_bytes(b"not a png")
    paths["one_row"] = tmp / "one_row.npy"
    np.save(paths["one_row"], np.zeros((1, 2), np.float32))
    paths["afile"] = tmp / "afile"
    paths["afile"].write_text("a file, not a directory")
    paths["npz_dir"] = tmp / "dir.npz"
    paths["npz_dir"].mkdir()
    configs = {"not_python": "this is not python(\n",
               "no_get_config": "x = 1\n",
               "empty_config": "import ml_collections\n\n\ndef get_config():\n"
                               "    return ml_collections.ConfigDict()\n",
               "raising_config": "raise RuntimeError('boom in the config file')\n"}
    for name, text in configs.items():
        paths[name] = tmp / f"{name}.py"
        paths[name].write_text(text)
    return {name: str(path) for name, path in paths.items()}


# (id, script, arguments (with {file} placeholders), text the error line must contain)
TRAIN_CASES = [
    ("misspelt-field", TOY + ["--config.optim.lrr=1e-3"], "--config.optim.lrr"),
    ("misspelt-section", TOY + ["--config.modl.hidden=3"], "--config.modl.hidden"),
    ("field-of-other-config", TOY + ["--config.model.dim_mults=(1,2)"], "dim_mults"),
    ("not-a-number", TOY + ["--config.optim.lr=abc"], "--config.optim.lr"),
    ("float-for-int", TOY + ["--config.train.steps=1.5"], "--config.train.steps"),
    ("negative-lr", TOY + ["--config.optim.lr=-1"], "optim.lr"),
    ("zero-batch", TOY + ["--config.train.batch_size=0"], "train.batch_size"),
    ("zero-steps", TOY + ["--config.train.steps=0"], "train.steps"),
    ("unknown-data-set", TOY + ["--config.data.name=butterflies"], "data.name"),
    ("array-without-path", TOY + ["--config.data.name=array"], "data.path"),
    ("array-missing-file", TOY + ["--config.data.name=array", "--config.data.path={tmp}/no.npy"],
     "no.npy"),
    ("array-malformed", TOY + ["--config.data.name=array", "--config.data.path={garbage}"],
     "garbage.npy"),
    ("array-wrong-rank", TOY + ["--config.data.name=array", "--config.data.path={cube}"],
     "cube.npy"),
    ("array-non-finite", TOY + ["--config.data.name=array", "--config.data.path={nan}"],
     "nan.npy"),
    ("array-smaller-than-batch", TOY + ["--config.data.name=array",
                                        "--config.data.path={small}"], "train.batch_size"),
    ("unknown-schedule", TOY + ["--config.diffusion.schedule=cosinus"], "diffusion.schedule"),
    ("zero-timesteps", TOY + ["--config.diffusion.timesteps=0"], "diffusion.timesteps"),
    ("unknown-objective", TOY + ["--config.diffusion.objective=pred_y"], "diffusion.objective"),
    ("unknown-sampler", TOY + ["--config.sample.sampler=euler"], "sample.sampler"),
    ("ddim-steps-above-T", TOY + ["--config.sample.steps=2000"], "sample.steps"),
    ("negative-eta", TOY + ["--config.sample.eta=-0.5"], "sample.eta"),
    ("ema-decay-above-1", TOY + ["--config.ema.decay=1.5"], "ema.decay"),
    ("unet-on-points", TOY + ["--config.model.name=unet"], "model.name"),
    ("odd-time-dim", TOY + ["--config.model.time_dim=7"], "model.time_dim"),
    ("unknown-lr-decay", TOY + ["--config.optim.decay=linear"], "optim.decay"),
    ("labels-on-unlabelled-points", TOY + ["--config.model.num_classes=3"], "model.num_classes"),
    ("missing-config-file", ["--config=configs/nope.py"], "configs/nope.py"),
    ("unknown-config-argument", ["--config=toy2d:fast"], "fast"),
    ("unknown-flag", TOY + ["--stepz=3"], "stepz"),
    ("positional-argument", TOY + ["extra"], "extra"),
    ("unet-cannot-halve", DIGITS + ["--config.model.dim_mults=(1,2,4)",
                                    "--config.data.image_size=6"], "data.image_size"),
    ("groups-do-not-divide", DIGITS + ["--config.model.resnet_block_groups=5"],
     "model.resnet_block_groups"),
    ("wrong-channel-count", DIGITS + ["--config.data.channels=3"], "data.channels"),
    ("bad-channel-value", DIGITS + ["--config.data.channels=2"], "data.channels"),
    ("unknown-tfds-name", DIGITS + ["--config.data.name=no_such_dataset_xyz"], "data.name"),
    ("missing-inception-weights", DIGITS + ["--config.eval.inception_path={tmp}/pt_inception.pth"],
     "eval.inception_path"),
    ("folder-missing", ["--config=image_folder:quick", "--config.data.path={tmp}/nope"],
     "data.path"),
    ("folder-empty", ["--config=image_folder:quick", "--config.data.path={empty_dir}"],
     "data.path"),
    ("folder-only-broken-files", ["--config=image_folder:quick",
                                  "--config.data.path={broken_dir}"], "data.path"),
    ("lr-inf", TOY + ["--config.optim.lr=inf"], "config.optim.lr=inf"),
    ("lr-nan", TOY + ["--config.optim.lr=nan"], "config.optim.lr=nan"),
    ("weight-decay-inf", TOY + ["--config.optim.weight_decay=inf"], "optim.weight_decay"),
    ("eta-inf", TOY + ["--config.sample.eta=inf"], "sample.eta"),
    ("seed-beyond-2-62", TOY + ["--config.seed=18446744073709551616"], "config.seed"),
    ("config-not-python", ["--config={not_python}"], "not_python.py"),
    ("config-without-get-config", ["--config={no_get_config}"], "get_config"),
    ("config-without-sections", ["--config={empty_config}"], "config.seed is missing"),
    ("config-raises", ["--config={raising_config}"], "boom in the config file"),
    ("path-with-a-toy-set", TOY + ["--config.data.path={small}"], "data.path"),
    ("holdout-of-one", TOY + ["--config.data.holdout=1.0"], "data.holdout"),
    ("array-of-one-row", TOY + ["--config.data.name=array", "--config.data.path={one_row}",
                                "--config.train.batch_size=1"], "one_row.npy"),
    ("point-eval-of-three", TOY + ["--config.eval.num_samples=3"], "eval.num_samples"),
    ("batch-beyond-memory", TOY + ["--config.train.batch_size=1000000000"], "train.batch_size"),
    ("hidden-beyond-memory", TOY + ["--config.model.hidden=1000000"], "model.hidden"),
    ("timesteps-beyond-memory", TOY + ["--config.diffusion.timesteps=100000000"],
     "diffusion.timesteps"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    return dict(_files(tmp), tmp=str(tmp))


def run(script, arguments, files):
    return run_script(script, *[argument.format(**files) for argument in arguments])


def assert_one_line_error(done, expected):
    """Exit code 2, no traceback, and exactly one `error:` line, the last, containing
    `expected`."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert expected in errors[0], errors[0]
    assert done.stderr.rstrip().endswith(errors[0])


@pytest.mark.parametrize("case, arguments, expected", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_rejects_bad_input(case, arguments, expected, files, tmp_path):
    done = run("train.py", [*arguments, f"--workdir={tmp_path / 'run'}"], files)
    assert_one_line_error(done, expected)
    assert not os.path.exists(tmp_path / "run" / "checkpoints"), "failed after starting"


@pytest.mark.parametrize("workdir, expected", [
    ("{afile}", "is a file, not a directory"), ("{afile}/run", "is a file, so the directory"),
    ("", "an empty path")], ids=["a-file", "parent-is-a-file", "empty"])
def test_train_refuses_an_unusable_workdir(workdir, expected, files):
    done = run("train.py", TOY + [f"--workdir={workdir}"], files)
    assert_one_line_error(done, expected)


SAMPLE_CASES = [
    ("missing-workdir-flag", [], "workdir"),
    ("workdir-without-run", ["--workdir={tmp}"], "workdir"),
    ("zero-samples", ["--num_samples=0"], "--num_samples"),
    ("unknown-sampler", ["--sampler=euler"], "--sampler"),
    ("steps-above-T", ["--sampler=ddim", "--steps=50"], "--steps"),
    ("negative-eta", ["--eta=-1"], "--eta"),
    ("out-not-npz", ["--out={tmp}/samples.png"], "--out"),
    ("checkpoint-step-absent", ["--step=999"], "step"),
    ("unknown-flag", ["--sampels=3"], "sampels"),
    ("labels-on-unconditional-model", ["--labels=0,1"], "labels"),
    ("guidance-on-unconditional-model", ["--guidance_scale=3"], "guidance_scale"),
    ("positional-argument", ["extra"], "extra"),
    ("eta-nan", ["--eta=nan"], "--eta=nan"),
    ("eta-inf", ["--eta=inf"], "--eta=inf"),
    ("out-is-a-directory", ["--out={npz_dir}"], "--out"),
    ("out-parent-is-a-file", ["--out={afile}/s.npz"], "--out"),
    ("seed-beyond-2-63", ["--seed=99999999999999999999"], "--seed"),
    ("samples-beyond-memory", ["--num_samples=100000000000"], "num_samples"),
    ("order-4", ["--sampler=dpm_solver", "--order=4"], "--order=4"),
    ("unknown-solver", ["--sampler=karras", "--solver=rk4"], "--solver='rk4'"),
    ("negative-churn", ["--sampler=karras", "--churn=-1"], "--churn=-1"),
    ("zero-resamples", ["--resamples=0"], "--resamples=0"),
    ("t-start-without-init", ["--t_start=5"], "--t_start=5"),
    ("init-missing-file", ["--init={tmp}/none.npz", "--t_start=5"], "--init"),
    ("init-wrong-shape", ["--init={cube}", "--t_start=5"], "--init"),
    ("init-nan", ["--init={nan}", "--t_start=5"], "--init"),
    ("init-without-t-start-or-mask", ["--init={small}"], "needs --t_start"),
    ("t-start-at-T", ["--init={small}", "--t_start=20"], "--t_start=20"),
    ("named-mask-on-points", ["--init={small}", "--mask=keep_left"], "--mask=keep_left"),
    ("mask-with-dpm-solver", ["--init={small}", "--mask={one_row}", "--sampler=dpm_solver"],
     "inpainting needs --sampler ddpm or ddim"),
]


@pytest.mark.parametrize("case, arguments, expected", SAMPLE_CASES,
                         ids=[c[0] for c in SAMPLE_CASES])
def test_sample_rejects_bad_input(case, arguments, expected, files, toy_run):
    if case not in ("missing-workdir-flag", "workdir-without-run"):
        arguments = [f"--workdir={toy_run}", *arguments]
    done = run("sample.py", [*arguments, *([] if any(a.startswith("--out") for a in arguments)
                                           else [f"--out={files['tmp']}/s.npz"])], files)
    assert_one_line_error(done, expected)


def test_workdir_of_a_different_config_needs_force(toy_run, files):
    arguments = [f"--workdir={toy_run}", *tiny_toy_flags(**{"model.hidden": 24})]
    done = run("train.py", arguments, files)
    assert_one_line_error(done, "--force")
    assert "model.hidden: 32 -> 24" in done.stderr


def test_at_least_thirty_distinct_cases():
    assert len({case for case, *_ in TRAIN_CASES + SAMPLE_CASES}) + 1 >= 30


def test_likelihood_in_the_evaluation_and_as_a_command(toy_run, tmp_path):
    """train.py's report holds the held-out VLB and ODE nats/dim; the command recomputes them
    for the run (same seed: the same figures) and writes its JSON."""
    import json

    with open(os.path.join(toy_run, "eval.json")) as handle:
        report = json.load(handle)
    assert report["likelihood_data"] == "held-out points" and report["likelihood_examples"] == 50
    assert np.isfinite(report["vlb_nats_per_dim"]) and np.isfinite(report["ode_nats_per_dim"])
    out = tmp_path / "likelihood.json"
    result = run_script("-m", "jaxdiff.cli.likelihood", "--workdir", toy_run, "--num_examples",
                        "50", "--seed", "0", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "VLB" in result.stdout and "nats/dim" in result.stdout
    with open(out) as handle:
        again = json.load(handle)
    assert again["step"] == report["step"]
    for name in ("vlb_nats_per_dim", "ode_nats_per_dim"):
        assert np.isfinite(again[name])
    bad = run_script("-m", "jaxdiff.cli.likelihood", "--workdir", toy_run, "--num_examples", "0")
    assert bad.returncode == 2 and "--num_examples=0" in bad.stderr
