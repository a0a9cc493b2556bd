"""Checkpoints (jaxdiff.checkpoint): an unreadable newest checkpoint (damaged files, a stray or
partial step directory) never hides the readable ones; evaluation reads around it without
touching the workdir, training moves it aside (never over an earlier copy) and then ends where
an uninterrupted run ends."""

import logging
import os
import shutil

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
