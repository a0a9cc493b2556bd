"""Bad input everywhere: each case runs train.py or sample.py as a user would and expects exit
code 2, no traceback, and one `error:` line naming the offending field, flag or file. The README's
troubleshooting section lists these cases."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))

TOY = ["--config=configs/toy2d.py"]
DIGITS = ["--config=configs/digits.py"]


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
    ("unknown-config-argument", ["--config=configs/toy2d.py:fast"], "fast"),
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
    ("folder-missing", ["--config=configs/image_folder.py:quick", "--config.data.path={tmp}/nope"],
     "data.path"),
    ("folder-empty", ["--config=configs/image_folder.py:quick", "--config.data.path={empty_dir}"],
     "data.path"),
    ("folder-only-broken-files", ["--config=configs/image_folder.py:quick",
                                  "--config.data.path={broken_dir}"], "data.path"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    return dict(_files(tmp), tmp=str(tmp))


def run(script, arguments, files):
    arguments = [argument.format(**files) for argument in arguments]
    return subprocess.run([sys.executable, script, *arguments], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(done, expected):
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny finished toy run to sample from, and the workdir of a different config."""
    from jaxdiff.train_loop import train_and_evaluate
    import toy2d

    config = toy2d.get_config()
    config.model.hidden, config.model.depth, config.model.time_dim = 16, 1, 8
    config.diffusion.timesteps = 20
    config.train.steps, config.train.checkpoint_every = 3, 3
    config.sample.steps = 5
    config.eval.num_samples, config.eval.plots = 20, False
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    train_and_evaluate(config, workdir)
    return workdir


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
]


@pytest.mark.parametrize("case, arguments, expected", SAMPLE_CASES,
                         ids=[c[0] for c in SAMPLE_CASES])
def test_sample_rejects_bad_input(case, arguments, expected, files, trained):
    if case not in ("missing-workdir-flag", "workdir-without-run"):
        arguments = [f"--workdir={trained}", *arguments]
    done = run("sample.py", [*arguments, *([] if any(a.startswith("--out") for a in arguments)
                                           else [f"--out={files['tmp']}/s.npz"])], files)
    assert_one_line_error(done, expected)


def test_workdir_of_a_different_config_needs_force(trained, files):
    arguments = ["--config=configs/toy2d.py", f"--workdir={trained}", "--config.model.hidden=24",
                 "--config.model.depth=1", "--config.model.time_dim=8",
                 "--config.diffusion.timesteps=20", "--config.train.steps=3",
                 "--config.sample.steps=5"]
    done = run("train.py", arguments, files)
    assert_one_line_error(done, "--force")
    assert "model.hidden: 16 -> 24" in done.stderr


def test_at_least_thirty_distinct_cases():
    assert len({case for case, *_ in TRAIN_CASES + SAMPLE_CASES}) + 1 >= 30
