"""The workdir format (jaxdiff.workdir): run.json round trips, the resume check, and runs written
by jaxdiff 0.1.0 before the codec and module split (tests/data/legacy_v0_1, made by that version's
train.py; *_expected.npz are its sample.py outputs) still load, sample the same and resume."""

import json
import os
import shutil

import numpy as np
import pytest

from jaxdiff.data.codecs import ImageCodec, Standardizer
from jaxdiff.errors import ConfigError
from jaxdiff.workdir import (RUN_FILE, RunInfo, check_resumable, config_changes, read_json,
                             read_run)

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy_v0_1")


def _legacy_copy(tmp_path, kind: str) -> str:
    workdir = str(tmp_path / kind)
    shutil.copytree(os.path.join(LEGACY, kind), workdir)
    return workdir


def _tree_listing(root: str) -> dict:
    return {os.path.relpath(os.path.join(base, name), root): os.path.getsize(os.path.join(base, name))
            for base, _, names in os.walk(root) for name in names}


def test_run_info_round_trips_both_codecs():
    standardizer = Standardizer(mean=np.array([1.5, -2.0]), std=np.array([0.5, 3.0]))
    for info in (RunInfo((2,), "moons", 0, standardizer), RunInfo((8, 8, 1), "digits", 10,
                                                                  ImageCodec())):
        back = RunInfo.from_dict(json.loads(json.dumps(info.to_dict())))
        assert back.data_shape == info.data_shape and back.num_classes == info.num_classes
        if isinstance(info.codec, Standardizer):
            np.testing.assert_array_equal(back.codec.mean, standardizer.mean)
            np.testing.assert_array_equal(back.codec.std, standardizer.std)
        else:
            assert back.codec == ImageCodec()


def test_legacy_run_json_is_read_with_its_codec():
    points = RunInfo.from_dict(read_json(os.path.join(LEGACY, "points", RUN_FILE)))
    images = RunInfo.from_dict(read_json(os.path.join(LEGACY, "images", RUN_FILE)))
    assert isinstance(points.codec, Standardizer) and points.data_shape == (2,)
    assert isinstance(images.codec, ImageCodec) and images.data_shape == (8, 8, 1)
    # a standardised 0 is the data mean; an image 0 is grey 128 (127.5 rounded)
    np.testing.assert_allclose(points.codec.decode(np.zeros((1, 2))), [points.codec.mean],
                               rtol=1e-6)
    assert images.codec.decode(np.zeros((1, 1))).item() == 128


@pytest.mark.parametrize("kind", ["points", "images"])
def test_legacy_run_loads_and_samples_as_version_0_1_did(tmp_path, kind):
    from jaxdiff.run import load_run

    workdir = _legacy_copy(tmp_path, kind)
    before = _tree_listing(workdir)
    run = load_run(workdir)
    samples = run.sample(6, seed=3)
    expected = np.load(os.path.join(LEGACY, f"{kind}_expected.npz"))["samples"]
    assert samples.dtype == expected.dtype and samples.shape == expected.shape
    if kind == "points":
        np.testing.assert_allclose(samples, expected, rtol=1e-5, atol=1e-5)
    else:  # uint8: a float32 rounding difference may move a pixel across a rounding edge
        assert np.abs(samples.astype(int) - expected.astype(int)).max() <= 1
    assert _tree_listing(workdir) == before  # loading and sampling wrote nothing


def test_legacy_point_run_resumes(tmp_path):
    from jaxdiff.run import load_run
    from jaxdiff.train_loop import train_and_evaluate

    workdir = _legacy_copy(tmp_path, "points")
    config, _ = read_run(workdir)
    config.train.steps = 8
    report = train_and_evaluate(config, workdir)
    assert report["step"] == 8 and load_run(workdir).step == 8
    assert "codec" in read_json(os.path.join(workdir, RUN_FILE))


def test_config_changes_ignore_resumable_fields():
    old = {"train": {"steps": 10, "batch_size": 8}, "eval": {"num_samples": 5}}
    new = {"train": {"steps": 20, "batch_size": 16}, "eval": {"num_samples": 9}}
    assert config_changes(old, new) == ["train.batch_size: 8 -> 16"]


def test_check_resumable_refuses_a_different_run_and_writes_nothing(tmp_path):
    workdir = _legacy_copy(tmp_path, "points")
    config, _ = read_run(workdir)
    config.model.hidden = 32
    before = _tree_listing(workdir)
    with pytest.raises(ConfigError, match="model.hidden: 16 -> 32"):
        check_resumable(workdir, config)
    check_resumable(workdir, config, force=True)  # a warning only
    assert _tree_listing(workdir) == before


def test_read_run_of_an_empty_directory_names_it(tmp_path):
    with pytest.raises(ConfigError, match="holds no run"):
        read_run(str(tmp_path))
