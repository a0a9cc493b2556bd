"""The installable command line: packaged configs by name or path (`--config toy2d`,
`--config digits:quick`, `--config configs/toy2d.py` from any directory), one-line errors when
the scripts run outside the repository, and a non-editable install whose console scripts
(`jaxdiff-train`, `jaxdiff-sample`) run from another directory."""

import os
import shutil
import subprocess
import sys

import ml_collections
import pytest

from jaxdiff import cli, configs
from jaxdiff.errors import ConfigError

from helpers import ROOT, TINY_TOY, tiny_toy_flags

NAMES = ("celeb_a64", "cifar10", "digits", "digits_cond", "fashion_mnist", "fashion_mnist_cfg",
         "image_folder", "mnist", "toy2d")


# --- the packaged configs --------------------------------------------------------------------------

def test_config_names_are_the_files_of_the_package():
    assert configs.config_names() == NAMES
    directory = os.path.join(ROOT, "jaxdiff", "configs")
    for name in NAMES:
        assert configs.config_path(name) == os.path.join(directory, f"{name}.py")


@pytest.mark.parametrize("name", NAMES)
def test_every_packaged_config_loads_and_its_quick_variant_too(name):
    for arg in ("", "quick"):
        config = configs.get_config(name, arg)
        assert isinstance(config, ml_collections.ConfigDict)
        assert {"data", "model", "diffusion", "train", "sample"} <= set(config.keys())


def test_an_unknown_name_lists_the_packaged_configs():
    with pytest.raises(ValueError, match="no packaged config 'toy3d': one of celeb_a64, .*toy2d"):
        configs.config_path("toy3d")
    with pytest.raises(ValueError, match="toy3d"):
        configs.get_config("toy3d")


# --- resolve_config: what --config=value names ----------------------------------------------------

def test_a_name_is_the_packaged_file_and_the_argument_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.resolve_config("toy2d") == configs.config_path("toy2d")
    assert cli.resolve_config("digits:quick") == configs.config_path("digits") + ":quick"


def test_a_missing_relative_configs_path_is_the_packaged_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.resolve_config("configs/toy2d.py") == configs.config_path("toy2d")
    assert cli.resolve_config("./configs/toy2d.py:quick") == configs.config_path("toy2d") + ":quick"


def test_an_existing_file_wins_over_the_packaged_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "toy2d.py").write_text("def get_config(arg=''):\n    return {}\n")
    (tmp_path / "mine.py").write_text("def get_config(arg=''):\n    return {}\n")
    assert cli.resolve_config("configs/toy2d.py") == "configs/toy2d.py"
    assert cli.resolve_config("mine.py:quick") == "mine.py:quick"
    absolute = str(tmp_path / "mine.py")
    assert cli.resolve_config(absolute) == absolute


@pytest.mark.parametrize("value, expected", [
    ("toy3d", "--config='toy3d' is invalid: no packaged config 'toy3d' (one of celeb_a64, "),
    ("toy3d:quick", "--config='toy3d:quick' is invalid: no packaged config 'toy3d'"),
    ("configs/toy3d.py", "--config='configs/toy3d.py' is invalid: no such file (packaged "),
    ("elsewhere/toy2d.py", "--config='elsewhere/toy2d.py' is invalid: no such file"),
    ("/nowhere/configs/toy2d.py", "--config='/nowhere/configs/toy2d.py' is invalid: no such"),
    ("toy2d.py", "--config='toy2d.py' is invalid: no such file"),
    ("", "--config='' is invalid: no such file"),
    (".", "--config='.' is invalid: a directory, not a config file"),
], ids=["name", "name-with-argument", "configs-path", "other-directory", "absolute",
        "file-name", "empty", "directory"])
def test_what_names_no_config_is_one_line_naming_the_packaged_ones(tmp_path, monkeypatch, value,
                                                                   expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        cli.resolve_config(value)
    message = str(error.value)
    assert message.startswith(expected) and "\n" not in message, message
    assert ", ".join(NAMES) in message


# --- the scripts outside the repository ---------------------------------------------------------

def run_elsewhere(cwd, script, *arguments, timeout=300):
    """`python <repository>/<script> <arguments>` started in `cwd`."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(done, *expected):
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("arguments, expected", [
    (["--config=toy3d"], ["no packaged config 'toy3d'", ", ".join(NAMES)]),
    (["--config", "configs/toy3d.py"], ["'configs/toy3d.py' is invalid: no such file"]),
    (["--config=/nowhere/toy2d.py", "--config.train.steps=3"], ["/nowhere/toy2d.py"]),
    (["--config=toy2d:fast"], ["fast"]),
    # the default config (no --config) and the legacy path: both the packaged toy2d, whose
    # validation then names the bad field (so nothing trains)
    (["--config.train.steps=5", "--config.data.name=unicorn"], ["data.name"]),
    (["--config", "configs/toy2d.py", "--config.data.name=unicorn"], ["data.name"]),
    (["--config.optim.lrr=1"], ["--config.optim.lrr", "did you mean 'lr'"]),
    (["--config.train.steps=5", "--config=toy2d"], ["before a value for --config"]),
], ids=["unknown-name", "missing-configs-path", "missing-file-with-override",
        "unknown-argument", "default-config", "legacy-configs-path", "misspelt-field",
        "override-before-config"])
def test_train_outside_the_repository_fails_in_one_line(tmp_path, arguments, expected):
    done = run_elsewhere(tmp_path, "train.py", *arguments, "--workdir=run")
    assert_one_line_error(done, *expected)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_sample_outside_the_repository_fails_in_one_line(tmp_path):
    assert_one_line_error(run_elsewhere(tmp_path, "sample.py"), "workdir")
    assert_one_line_error(run_elsewhere(tmp_path, "sample.py", "--workdir=nothing"), "nothing")


# --- a non-editable install ---------------------------------------------------------------------

def _copy_of_the_repository(destination):
    """The source tree without git data, runs, caches or build leftovers (so building it leaves
    the working tree, and its editable install, alone)."""
    shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(
        ".git", "runs", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", "*.npz"))
    return destination


def _pip_install(venv, source):
    """Install `source` into `venv` without dependencies (the system site packages have them).
    Offline (--no-index --no-build-isolation) when the environment can build a wheel itself,
    else with pip's isolated build, whose setuptools comes from the configured package index."""
    pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--no-deps", "--quiet",
           "--disable-pip-version-check"]
    offline = subprocess.run(pip + ["--no-index", "--no-build-isolation", source],
                             capture_output=True, text=True, timeout=300)
    if offline.returncode == 0:
        return
    isolated = subprocess.run(pip + [source], capture_output=True, text=True, timeout=300)
    assert isolated.returncode == 0, (offline.stderr[-2000:], isolated.stderr[-2000:])


@pytest.mark.slow
def test_installed_console_scripts_run_from_another_directory(tmp_path):
    venv = str(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True,
                   timeout=120)
    _pip_install(venv, _copy_of_the_repository(str(tmp_path / "source")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # The installed copy shadows the working tree's editable install (system site packages).
    python = os.path.join(venv, "bin", "python")
    where = subprocess.run([python, "-c", "import jaxdiff.configs as c; print(c.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    installed = os.path.realpath(where.stdout.strip())
    assert installed.startswith(os.path.realpath(venv) + os.sep), installed
    assert not installed.startswith(os.path.realpath(ROOT) + os.sep), installed

    overrides = tiny_toy_flags(**{"train.steps": 4, "train.checkpoint_every": 4})[1:]
    assert len(overrides) == len(TINY_TOY)
    train = subprocess.run([os.path.join(venv, "bin", "jaxdiff-train"), "--config", "toy2d",
                            "--workdir", "W", *overrides], cwd=elsewhere, capture_output=True,
                           text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    assert train.stdout.strip().splitlines()[-1].startswith("step 4: ")
    sample = subprocess.run([os.path.join(venv, "bin", "jaxdiff-sample"), "--workdir", "W",
                             "--num_samples", "16", "--out", "OUT.npz"], cwd=elsewhere,
                            capture_output=True, text=True, timeout=300)
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert (elsewhere / "W" / "checkpoints" / "4").is_dir()
    assert (elsewhere / "OUT.npz").is_file() and (elsewhere / "OUT.png").is_file()
