"""Data parallelism over 8 (forced host) devices: same numbers as one device, distinct noise per
device, sharded sampling, checkpoints restored onto another device count, and a sharded train.py
run. Each check runs in a subprocess because the device count is fixed when JAX starts."""

import json
import os

import pytest

from helpers import run_script


def xla_flags(devices):
    """The caller's XLA_FLAGS (e.g. --xla_cpu_max_isa=AVX, to see another CPU's rounding) plus the
    device count."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"


def run_check(*arguments, devices=8, stderr_excludes=None):
    env = dict(os.environ, XLA_FLAGS=xla_flags(devices))
    done = run_script("tests/sharding_checks.py", *arguments, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    if stderr_excludes:
        assert stderr_excludes not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model, steps, per_call", [("mlp", 3, 1), ("mlp", 4, 2)])
def test_sharded_train_step_matches_single_device(model, steps, per_call):
    result = run_check("train_equivalence", model, str(steps), str(per_call))
    assert result["devices"] == 8 and result["step"] == steps and result["replicated"]
    # float32 all-reduce order differs from the single-device sum: a few ulps of the weights
    tolerance = 1e-6 * max(result["param_scale"], 1.0)
    assert result["params_max_abs_diff"] <= tolerance, result
    assert result["ema_max_abs_diff"] <= tolerance, result


def test_fsdp_and_remat_step_equals_the_replicated_step():
    # The Unet's state split over fsdp=4 (mesh 2 x 4) with rematerialised ResNet blocks, against
    # the replicated plain step on the same 8 devices and batches. The network sees whole
    # (gathered) weights, so XLA never reshards activations between layers: no rematerialization.
    result = run_check("fsdp_equivalence", "4", "3", "1",
                       stderr_excludes="Involuntary full rematerialization")
    assert result["devices"] == 8 and result["step"] == 3 and result["large_leaves_sharded"]
    tolerance = 1e-6 * max(result["param_scale"], 1.0)  # a few ulps: reduction order
    for name in ("loss", "params", "ema", "opt_state"):
        assert result[f"{name}_max_abs_diff"] <= tolerance, result
    # measured 3.85 MB -> 1.72 MB: the kernels are split 4 ways, small leaves stay replicated
    assert result["state_bytes_per_device_fsdp"] < 0.5 * result[
        "state_bytes_per_device_replicated"], result


def test_each_device_draws_different_noise():
    result = run_check("noise_per_device")
    assert result["num_shards"] == 8 and result["distinct_shards"] == 8
    assert result["distinct_examples"] == 16  # identical inputs, 16 different noises
    assert result["equals_unsharded"]


def test_sampling_is_split_over_devices_and_exact():
    """Bit for bit, on computations every batch layout rounds alike (see sharding_checks)."""
    result = run_check("sampling")
    assert result == {"num_shards": 8, "first_device_max_abs_diff": 0.0,
                      "per_device_max_abs_diff": 0.0, "elementwise_max_abs_diff": 0.0}


@pytest.mark.parametrize("restore_devices", [2, 1])
def test_sharded_checkpoint_restores_onto_a_different_device_count(tmp_path, restore_devices):
    workdir = str(tmp_path / "ckpt")
    assert run_check("save", workdir, devices=8)["saved"] == 2
    result = run_check("restore", workdir, devices=restore_devices)
    assert result == {"devices": restore_devices, "max_abs_diff": 0.0, "restored_step": 2,
                      "on_devices": restore_devices}


def test_train_script_runs_sharded_with_several_steps_per_call(tmp_path):
    env = dict(os.environ, XLA_FLAGS=xla_flags(4))
    workdir = str(tmp_path / "run")
    done = run_script(
        "train.py", "--config=configs/toy2d.py:quick", f"--workdir={workdir}",
        "--config.train.steps=40", "--config.train.steps_per_call=5",
        "--config.train.log_every=10", "--config.train.checkpoint_every=20",
        "--config.train.batch_size=64", "--config.eval.num_samples=102",
        "--config.eval.plots=false", "--config.sample.sampler=ddim", "--config.sample.steps=10",
        "--config.train.fsdp=2",  # the MLP's kernels split over 2 of the 4 devices
        env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 40:" in done.stdout
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "40"]
    sampled = run_check("run_sampling", workdir, devices=4)
    assert sampled["devices_used"] == [4, 1, 4, 1], sampled
    assert sampled["shape"] == [10, 2] and sampled["path_shape"] == [11, 10, 2]
    assert sampled["path_end_matches"]
    # The same seed on 4 devices (10 padded to 12: 3 rows each) and on 1, bit for bit where both
    # round alike: the trained model on equal per-device batches, and any batch with an
    # elementwise model (sharding_checks.run_sampling says why not the trained model on 3 rows
    # against 10). A wrong permutation, padding or per-device noise differs by O(0.01-1).
    assert {name: value for name, value in sampled.items() if name.endswith("max_abs_diff")} == {
        "first_device_max_abs_diff": 0.0, "ddpm_first_device_max_abs_diff": 0.0,
        "per_device_max_abs_diff": 0.0, "elementwise_max_abs_diff": 0.0,
        "elementwise_ddpm_max_abs_diff": 0.0}, sampled
    out = str(tmp_path / "samples.npz")
    script = run_script("sample.py", f"--workdir={workdir}", "--num_samples=7", f"--out={out}",
                        "--num_devices=4", "--sampler=ddim", "--steps=5", env=env)
    assert script.returncode == 0, script.stderr[-3000:]
    assert "wrote 7 samples" in script.stdout
    too_many = run_script("sample.py", f"--workdir={workdir}", "--num_devices=5", f"--out={out}",
                          env=env)
    assert too_many.returncode == 2 and "--num_devices=5" in too_many.stderr.splitlines()[-1]
    bad = run_script("train.py", "--config=configs/toy2d.py:quick",
                     f"--workdir={tmp_path / 'bad'}", "--config.train.batch_size=30", env=env)
    assert bad.returncode == 2 and "train.batch_size=30" in bad.stderr.splitlines()[-1]
