"""Checkpoints (jaxdiff.checkpoint): an unreadable newest checkpoint (damaged files, a stray or
partial step directory) never hides the readable ones; evaluation reads around it without
touching the workdir, training moves it aside (never over an earlier copy) and then ends where
an uninterrupted run ends."""

import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from jaxdiff.run import load_run
from jaxdiff.train_loop import train_and_evaluate

from helpers import assert_trees_equal, tiny_toy_config, truncate_data_files


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(toy_run, tmp_path, caplog):
    workdir = str(tmp_path / "run")
    shutil.copytree(toy_run, workdir)  # checkpoints 5, 10, 12
    newest = os.path.join(workdir, "checkpoints", "12")
    truncate_data_files(newest)

    with caplog.at_level(logging.WARNING, logger="jaxdiff"):
        run = load_run(workdir)
    assert run.step == 10
    assert any(newest in record.getMessage() and os.path.join(workdir, "checkpoints", "10")
               in record.getMessage() for record in caplog.records), caplog.text
    assert os.path.isdir(newest)  # evaluation moved nothing
    # Training moves the damaged step aside (not deleted) and redoes it from step 10.
    report = train_and_evaluate(tiny_toy_config(), workdir)
    assert os.path.isdir(os.path.join(workdir, "checkpoints_damaged", "12"))
    assert report["step"] == 12
    assert_trees_equal(load_run(workdir).params, load_run(toy_run).params)


def _listing(root):
    return {os.path.relpath(os.path.join(base, name), root)
            for base, _, names in os.walk(root) for name in names}


@pytest.mark.parametrize("stray", ["empty", "junk", "no_item"])
def test_a_stray_newest_step_directory_never_hides_the_good_checkpoints(toy_run, tmp_path,
                                                                       stray):
    workdir = str(tmp_path / "run")
    shutil.copytree(toy_run, workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    if stray == "no_item":  # a newest step whose item directory is missing
        shutil.copytree(os.path.join(checkpoints, "12"), os.path.join(checkpoints, "30"))
        shutil.rmtree(os.path.join(checkpoints, "30", "default"))
        newest = "30"
    else:
        newest = "99999"
        os.makedirs(os.path.join(checkpoints, newest))
        if stray == "junk":
            with open(os.path.join(checkpoints, newest, "junk"), "w") as handle:
                handle.write("not a checkpoint")
    before = _listing(workdir)
    assert load_run(workdir).step == 12
    assert _listing(workdir) == before  # evaluation is read-only
    report = train_and_evaluate(tiny_toy_config(**{"train.steps": 14}), workdir)
    assert report["step"] == 14
    assert os.path.isdir(os.path.join(workdir, "checkpoints_damaged", newest))


def test_a_step_damaged_twice_keeps_both_copies(toy_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(toy_run, workdir)
    for _ in range(2):
        os.makedirs(os.path.join(workdir, "checkpoints", "13"))
        train_and_evaluate(tiny_toy_config(), workdir)  # falls back to 12; moves 13 aside
    damaged = sorted(os.listdir(os.path.join(workdir, "checkpoints_damaged")))
    assert damaged == ["13", "13.1"]


def test_load_run_reads_only_the_ema_parameters_so_optimiser_changes_do_not_matter(toy_run,
                                                                                 tmp_path):
    """config.json's optimiser differs from the one the checkpoints were written with (no
    gradient clipping: a different optax chain): evaluation still loads, and moves nothing."""
    workdir = str(tmp_path / "run")
    shutil.copytree(toy_run, workdir)
    path = os.path.join(workdir, "config.json")
    config = json.load(open(path))
    config["optim"]["grad_clip"] = 0.0
    with open(path, "w") as handle:
        json.dump(config, handle)
    before = _listing(workdir)
    reference = load_run(toy_run)
    run = load_run(workdir)
    assert run.step == 12 and _listing(workdir) == before
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(reference.params)):
        np.testing.assert_array_equal(a, b)
