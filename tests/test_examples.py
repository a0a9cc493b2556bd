"""examples/ and the README's research-code snippets, run as a user runs them.

Each example runs as a subprocess with small settings, and its output is checked against numbers
computed here: the statistics of the array the test hands it (own-model examples), the nearest
class centre of every sample (guidance sweep), and `jaxdiff.load_run`'s restore of the same run
(plain-Orbax restore). The README's Python blocks that follow the marker
`<!-- tested: tests/test_examples.py -->` are executed as written, in a temporary directory.
"""

import os
import re
import shutil

import jax
import numpy as np
import pytest

import jaxdiff

from helpers import ROOT, assert_trees_equal, run_script

MARKER = "<!-- tested: tests/test_examples.py -->"

# Two clusters in 3-D, off-centre and anisotropic: nothing like the examples' default data.
CLUSTERS = np.array([[4.0, -2.0, 0.5], [8.0, -2.0, 2.5]])


def run_example(name, *arguments):
    result = run_script(os.path.join("examples", name), *arguments)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def nearest(points, centres):
    return np.argmin(((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1), axis=1)


def check_like_data(samples, data, tolerance):
    """Mean within `tolerance` data standard deviations of the data's, standard deviation within
    `tolerance` of it (relative), per dimension."""
    scale = data.std(0)
    np.testing.assert_array_less(np.abs(samples.mean(0) - data.mean(0)) / scale, tolerance)
    np.testing.assert_array_less(np.abs(samples.std(0) / scale - 1.0), tolerance)


@pytest.mark.parametrize("script", ["own_model_linen.py", "own_model_nnx.py"])
def test_own_model_examples_sample_the_given_array(script, tmp_path):
    rng = np.random.default_rng(1)
    data = CLUSTERS[rng.integers(0, 2, 3000)] + rng.normal(0.0, [0.6, 0.3, 0.5], (3000, 3))
    np.save(tmp_path / "data.npy", data.astype(np.float32))
    stdout = run_example(script, "--data", str(tmp_path / "data.npy"), "--steps", "1000",
                         "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "out.npy"))
    assert "restored step 1000" in stdout
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["1000"]
    samples = np.load(tmp_path / "out.npy")
    assert samples.shape == (4000, 3) and np.isfinite(samples).all()
    # 4,000 samples: sampling error ~1.6% of a std; the examples' own error measured 0.2-3.3%
    # (1,000 steps). A lost cluster would put the shares at 0 or 1 instead of about 1/2.
    check_like_data(samples, data, 0.10)
    share = [np.mean(nearest(points, CLUSTERS) == 0) for points in (samples, data)]
    assert abs(share[0] - share[1]) < 0.05


def test_guidance_sweep_moves_samples_to_their_class(tmp_path):
    stdout = run_example("guidance_sweep.py", "--steps", "1000", "--scales", "0,1,3",
                         "--out", str(tmp_path / "sweep.npz"))
    assert "on-class share" in stdout
    out = np.load(tmp_path / "sweep.npz")
    samples, labels, scales = out["samples"], out["labels"], out["scales"]
    assert np.isfinite(samples).all() and set(scales.tolist()) == {0.0, 1.0, 3.0}
    on_class = nearest(samples, out["centres"]) == labels
    share = {float(s): np.mean(on_class[scales == s]) for s in (0.0, 1.0, 3.0)}
    # Scale 0 is unconditional and every class starts from the same noise, so the four classes'
    # samples coincide and exactly one class in four is "on class" for each.
    unconditional = samples[scales == 0].reshape(4, -1, 2)
    for other in unconditional[1:]:
        np.testing.assert_allclose(other, unconditional[0], atol=1e-4)
    assert share[0.0] == pytest.approx(0.25, abs=0.01)
    # Blobs of std 0.7, neighbours 2 sqrt(2) apart: the data itself has 95.7% of each class
    # nearest its own centre (about 1 - 2 P(N(0, 0.7^2) > sqrt(2))), the model measured 0.958
    # at s = 1 and 1.000 at s = 3 (1,000 steps; 200 samples per class and scale, so the
    # sampling error is ~0.7%); guidance beyond 1 sharpens the classes further.
    assert share[1.0] > 0.85 and share[3.0] > 0.97


def snapshot(directory):
    return sorted((os.path.relpath(os.path.join(root, name), directory),
                   os.path.getsize(os.path.join(root, name)))
                  for root, _, names in os.walk(directory) for name in names)


def test_restore_with_orbax_samples_what_load_run_samples(toy_run, tmp_path):
    before = snapshot(toy_run)
    stdout = run_example("restore_with_orbax.py", "--workdir", toy_run, "--num_samples", "16",
                         "--seed", "3", "--out", str(tmp_path / "samples.npz"))
    assert snapshot(toy_run) == before  # read-only
    run = jaxdiff.load_run(toy_run)  # restored through jaxdiff.checkpoint instead
    assert f"step {run.step}" in stdout
    options = run.config.sample
    x = jaxdiff.ddim_sample(run.model_fn, run.schedule, key=jax.random.key(3), shape=(16, 2),
                            num_steps=options.steps, eta=options.eta,
                            objective=run.config.diffusion.objective, clip_x0=options.clip_x0,
                            timestep_spacing=options.timestep_spacing)
    np.testing.assert_allclose(np.load(tmp_path / "samples.npz")["samples"],
                               run.to_data_space(x), rtol=1e-5)


# --- the README ----------------------------------------------------------------------------------

def readme_blocks():
    with open(os.path.join(ROOT, "README.md")) as handle:
        text = handle.read()
    return re.findall(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, flags=re.DOTALL)


def execute(code):
    namespace = {"__name__": "__main__"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace


def test_readme_own_model_example_runs_as_written(tmp_path, monkeypatch):
    blocks = [block for block in readme_blocks() if "make_train_step" in block]
    assert len(blocks) == 1, "the README's own-model example is not marked as tested"
    monkeypatch.chdir(tmp_path)
    namespace = execute(blocks[0])
    samples, data = np.asarray(namespace["samples"]), namespace["data"]
    assert samples.shape == (2000, 2) and np.isfinite(samples).all()
    # 800 steps on a Gaussian: the error measured at most 3% over three seeds (the sampling error
    # of 2,000 samples is ~2%). Sampling with clip_x0=True instead measured a std 28% short, with
    # the raw parameters instead of the EMA ones a mean 0.38 std off: both fail.
    check_like_data(samples, data, 0.10)
    assert sorted(os.listdir(tmp_path / "runs" / "mine" / "checkpoints")) == ["800"]


def test_readme_plain_orbax_restore_runs_as_written(toy_run, tmp_path, monkeypatch):
    blocks = [block for block in readme_blocks() if "ocp.CheckpointManager" in block]
    assert len(blocks) == 1, "the README's plain-Orbax restore is not marked as tested"
    shutil.copytree(toy_run, tmp_path / "runs" / "toy")
    monkeypatch.chdir(tmp_path)
    namespace = execute(blocks[0])
    run = jaxdiff.load_run(str(tmp_path / "runs" / "toy"))
    assert namespace["step"] == run.step
    assert_trees_equal(namespace["ema_params"], run.params)
    assert np.isfinite(namespace["samples"]).all()
