"""`python -m jaxdiff.port ddp`: denoising-diffusion-pytorch checkpoints -> jaxdiff runs.

The files in tests/data/ddp_reference/ were written by torch and denoising-diffusion-pytorch
(benchmarks/ddp_reference.py); their numbers are compared in tests/test_pytorch_parity.py. Here:
what the converter infers from them (against the kwargs the generator recorded), the workdir it
writes, and its one-line refusals of bad files and flags (nothing written).
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import run_script
from jaxdiff.errors import ConfigError
from jaxdiff.port import (diffusion_settings, infer_unet_kwargs, port_ddp_checkpoint,
                          read_ddp_checkpoint)
from jaxdiff.torch_checkpoint import read_torch_state_dict
from torch_files import Storage, _fake_torch, contiguous, write_arrays

REF = Path(__file__).parent / "data" / "ddp_reference"
UNETS = sorted(p.stem[len("unet_"):] for p in REF.glob("unet_*.pt"))


def recorded_kwargs(name: str) -> tuple[dict, str]:
    with np.load(REF / f"unet_{name}.npz") as data:
        return json.loads(str(data["kwargs_json"])), str(data["ddp_version"])


def ddp_defaults(kwargs: dict) -> dict:
    """The ddp Unet's defaults filled in, per stage (its cast_tuple and full_attn rule)."""
    stages = len(kwargs["dim_mults"])
    per_stage = lambda v: tuple(v) if isinstance(v, list) else (v,) * stages  # noqa: E731
    full = kwargs.get("full_attn") or [False] * (stages - 1) + [True]
    return dict(dim=kwargs["dim"], dim_mults=tuple(kwargs["dim_mults"]),
                channels=kwargs.get("channels", 3),
                init_dim=kwargs.get("init_dim") or kwargs["dim"],
                self_condition=kwargs.get("self_condition", False),
                learned_variance=kwargs.get("learned_variance", False),
                full_attn=per_stage(full), attn_heads=per_stage(kwargs.get("attn_heads", 4)),
                attn_dim_head=per_stage(kwargs.get("attn_dim_head", 32)),
                fourier=kwargs.get("learned_sinusoidal_cond", False)
                or kwargs.get("random_fourier_features", False))


def test_reference_files_exist():
    assert len(UNETS) >= 6, UNETS
    for name in ("ddp1_model-3.pt", "ddp2_model-3.pt", "param_counts.json", "inception.npz"):
        assert (REF / name).is_file(), name


@pytest.mark.parametrize("name", UNETS)
def test_infers_each_reference_unet(name):
    kwargs, version = recorded_kwargs(name)
    want = ddp_defaults(kwargs)
    got = infer_unet_kwargs(read_ddp_checkpoint(REF / f"unet_{name}.pt").unet)
    stages = len(want["dim_mults"])
    per_stage = lambda v: v if isinstance(v, tuple) else (v,) * stages  # noqa: E731
    got_cmp = dict(got, attn_heads=per_stage(got["attn_heads"]),
                   attn_dim_head=per_stage(got["attn_dim_head"]),
                   fourier=got.get("learned_sinusoidal_cond", False))
    for field, value in want.items():
        assert got_cmp[field] == value, field
    # the norm kind follows the release: RMSNorm from 2.0, GroupNorm (groups not stored) before
    assert (got["resnet_block_groups"] is None) == version.startswith("2.")
    if kwargs.get("learned_sinusoidal_cond") or kwargs.get("random_fourier_features"):
        assert got["learned_sinusoidal_dim"] == kwargs.get("learned_sinusoidal_dim", 16)


@pytest.mark.parametrize("version", ["ddp1", "ddp2"])
def test_trainer_file_uses_the_ema_weights_and_reads_the_buffers(version):
    path = REF / f"{version}_model-3.pt"
    raw = read_torch_state_dict(path)
    checkpoint = read_ddp_checkpoint(path)
    assert checkpoint.kind == "trainer" and checkpoint.which == "ema"
    assert checkpoint.step == raw["step"] and checkpoint.version == raw["version"]
    ema = {k[len("ema_model.model."):]: v for k, v in raw["ema"].items()
           if k.startswith("ema_model.model.")}
    assert set(checkpoint.unet) == set(ema)
    for key, value in ema.items():
        np.testing.assert_array_equal(checkpoint.unet[key], value)
    online = read_ddp_checkpoint(path, use_ema=False)
    assert online.which == "model"
    assert any(not np.array_equal(online.unet[k], checkpoint.unet[k]) for k in ema)
    with np.load(REF / f"{version}_ddim.npz") as data:
        settings = diffusion_settings(checkpoint)
        assert settings["timesteps"] == int(data["timesteps"])
        assert settings["schedule"] == str(data["beta_schedule"])
        assert settings["objective"] == str(data["objective"])
        assert settings["sources"]["objective"] == "checkpoint"


def test_flags_that_contradict_the_buffers_are_refused():
    checkpoint = read_ddp_checkpoint(REF / "ddp2_model-3.pt")
    with pytest.raises(ConfigError, match=r"--objective=pred_noise contradicts .*pred_v"):
        diffusion_settings(checkpoint, objective="pred_noise")
    with pytest.raises(ConfigError, match=r"--timesteps=1000 contradicts"):
        diffusion_settings(checkpoint, timesteps=1000)


def port(*arguments):
    return run_script("-m", "jaxdiff.port", *arguments, timeout=600)


def test_port_command_writes_a_run_that_load_run_and_sample_use(tmp_path):
    workdir = tmp_path / "ported"
    result = port("ddp", str(REF / "ddp2_model-3.pt"), f"--workdir={workdir}",
                  "--image_size=8", "--sampling_timesteps=10")
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[0]
    assert "ported trainer checkpoint (step 30, ema weights, ddp 2.3.4)" in line
    assert "sigmoid schedule (checkpoint), T 100, pred_v (checkpoint)" in line
    assert "sampler ddim" in line
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["unet"]["self_condition"] is True

    from jaxdiff.run import load_run

    run = load_run(str(workdir))
    assert run.step == 30 and run.data_shape == (8, 8, 1)
    assert run.config.sample.sampler == "ddim" and run.config.sample.steps == 10
    assert run.config.model.self_cond_first and run.config.model.resnet_block_groups is None
    kernel = read_ddp_checkpoint(REF / "ddp2_model-3.pt").unet["init_conv.weight"]
    np.testing.assert_array_equal(np.asarray(run.params["params"]["init_conv"]["kernel"]),
                                  kernel.transpose(2, 3, 1, 0))
    out = tmp_path / "samples.npz"
    result = run_script("sample.py", f"--workdir={workdir}", "--num_samples=3",
                        f"--out={out}", timeout=600)
    assert result.returncode == 0, result.stderr
    with np.load(out) as data:
        assert data["samples"].shape == (3, 8, 8, 1) and data["samples"].dtype == np.uint8


def test_bare_unet_takes_the_flags_and_ddp_defaults(tmp_path):
    summary = port_ddp_checkpoint(REF / "unet_v2_rmsnorm.pt", str(tmp_path / "w"),
                                  image_size=16)
    assert summary["kind"] == "unet" and summary["step"] == 0
    assert summary["diffusion"]["sources"] == {"timesteps": "ddp default",
                                               "schedule": "ddp default",
                                               "objective": "ddp default"}
    assert (summary["diffusion"]["schedule"], summary["diffusion"]["objective"]) == (
        "sigmoid", "pred_v")
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert config["sample"]["sampler"] == "ddpm" and config["diffusion"]["timesteps"] == 1000


def damaged(tmp_path, change):
    """A copy of the 2.x reference Unet with `change(state)` applied."""
    state = dict(read_torch_state_dict(REF / "unet_v2_rmsnorm.pt"))
    change(state)
    path = tmp_path / "damaged.pt"
    write_arrays(path, state)
    return path


def nan_weight(state):
    state["final_conv.weight"] = state["final_conv.weight"] * np.nan


@pytest.mark.parametrize("make, pattern", [
    (lambda tmp: tmp / "absent.pt", r"does not exist"),
    (lambda tmp: truncated(tmp), r"cannot be read as a torch\.save file"),
    (lambda tmp: text_file(tmp), r"cannot be read as a torch\.save file"),
    (lambda tmp: damaged(tmp, lambda s: s.pop("mid_attn.to_qkv.weight")),
     r"missing tensor 'mid_attn\.to_qkv\.weight'"),
    (lambda tmp: damaged(tmp, lambda s: s.update({"downs.0.4.weight": np.ones(3)})),
     r"unexpected tensor 'downs\.0\.4\.weight'"),
    (lambda tmp: damaged(tmp, lambda s: s.update(
        {"mid_block1.block1.proj.bias": np.ones(7)})),
     r"tensor 'mid_block1\.block1\.proj\.bias' has shape \(7,\)"),
    (lambda tmp: damaged(tmp, nan_weight), r"NaN or Inf"),
    (lambda tmp: other_module(tmp), r"not a denoising-diffusion-pytorch Unet state_dict"),
    (lambda tmp: other_trainer(tmp), r"unexpected tensor 'net\.init_conv\.weight'"),
])
def test_bad_checkpoints_fail_with_one_line(tmp_path, make, pattern):
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=pattern) as error:
        port_ddp_checkpoint(path, str(tmp_path / "w"), image_size=16)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "w").exists()


def truncated(tmp_path):
    data = (REF / "ddp1_model-3.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


def text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint\n")
    return path


def other_module(tmp_path):
    path = tmp_path / "inception.pt"
    write_arrays(path, {"Conv2d_1a_3x3.conv.weight": np.ones((32, 3, 3, 3)),
                        "fc.weight": np.ones((10, 2048))})
    return path


def other_trainer(tmp_path):
    """A Trainer-shaped file around another model class (ElucidatedDiffusion calls its U-Net
    `net`): {"step", "model": state_dict, "version"}, as torch.save writes it."""
    path = tmp_path / "trainer.pt"
    weight = np.ones((8, 1, 7, 7), np.float32)
    storage = Storage("0", weight)
    model = collections.OrderedDict(
        [("net.init_conv.weight", contiguous(storage, list(weight.shape)))])
    with _fake_torch() as torch:
        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, Storage):
                    return ("storage", torch.FloatStorage, obj.key, "cpu", obj.array.size)
                return None

        body = io.BytesIO()
        Pickler(body, protocol=2).dump({"step": 1, "model": model, "version": "2.3.4"})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", body.getvalue())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", weight.astype("<f4").tobytes())
    return path


@pytest.mark.parametrize("flags, pattern", [
    (["--dim=32"], r"tensor '.*' has shape .* but Unet\(dim=32"),
    (["--dim_mults=1,2,4"], r"--dim_mults=1,2,4 has 3 stages but the checkpoint's Unet has 2"),
    (["--image_size=7"], r"--image_size=7 is invalid: .* multiple of 2"),
    (["--objective=pred_x0"], r"--objective=pred_x0 contradicts the checkpoint"),
    (["--sampling_timesteps=500"], r"--sampling_timesteps=500 is invalid"),
])
def test_port_command_refuses_flags_that_do_not_fit(tmp_path, flags, pattern):
    workdir = tmp_path / "w"
    result = port("ddp", str(REF / "ddp1_model-3.pt"), f"--workdir={workdir}", *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr
    assert not workdir.exists()


def test_port_refuses_an_existing_run(tmp_path):
    workdir = str(tmp_path / "w")
    port_ddp_checkpoint(REF / "unet_v2_rmsnorm.pt", workdir, image_size=16)
    before = os.listdir(workdir)
    with pytest.raises(ConfigError, match=r"already holds a run"):
        port_ddp_checkpoint(REF / "unet_v2_rmsnorm.pt", workdir, image_size=16)
    assert os.listdir(workdir) == before


def test_port_usage_error():
    result = port("diffusers", "x.pt", "--workdir=/tmp/never")
    assert result.returncode == 2 and "usage: python -m jaxdiff.port ddp FILE" in result.stderr
