"""Parity with the PyTorch originals, against outputs stored by torch itself.

tests/data/ddp_reference/ was written once by benchmarks/ddp_reference.py in a torch venv (torch
2.13.0, denoising-diffusion-pytorch 1.11.1 and 2.3.4, pytorch-fid; the script does not import
jaxdiff). Each check ports the stored weights with jaxdiff's own converters (`jaxdiff.port`,
`jaxdiff.metrics.inception.state_dict_to_variables`) and compares with torch's outputs:

- denoising-diffusion-pytorch `Unet` variants with random weights: float64 (torch and jax both in
  float64) and float32 (each in float32);
- pytorch-fid's InceptionV3 with synthetic weights (tests/reference_weights.py), pool features;
- parameter counts of the README's table;
- two tiny checkpoints trained by ddp (1.x and 2.x, the Trainer's model-N.pt), ported by
  `python -m jaxdiff.port`, sampled with `jaxdiff.ddim_sample` from torch's x_T: the whole DDIM
  trajectory against ddp's `ddim_sample`.

The tolerances are the measured differences with a margin, and the README quotes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.models import Unet
from jaxdiff.port.ddp import infer_unet_kwargs, read_ddp_checkpoint, unet_params
from unet_helpers import num_params

REF = Path(__file__).parent / "data" / "ddp_reference"
UNETS = sorted(p.stem[len("unet_"):] for p in REF.glob("unet_*.pt"))

# max |jaxdiff - torch| / max |torch| over the outputs. Measured (2026-11-30, this VM): Unet
# float64 1.0e-15 to 2.9e-15, float32 5.1e-7 to 8.7e-7 (torch's own float32 is 6.7e-7 to 1.9e-6
# from its float64); Inception float64 1.2e-15, float32 4.2e-7; DDIM trajectories (10 steps,
# values in [0, 1]) 4.9e-7 (1.11.1) and 2.8e-7 (2.3.4), at most 8.9e-7 absolute.
UNET_FLOAT64_TOL = 1e-13
UNET_FLOAT32_TOL = 3e-6
INCEPTION_FLOAT64_TOL = 1e-13
INCEPTION_FLOAT32_TOL = 3e-6
DDIM_FLOAT32_TOL = 3e-6


def nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def ported_unet(name: str, dtype):
    """The reference Unet `name` as (jaxdiff Unet, its params in `dtype`, stored arrays)."""
    data = dict(np.load(REF / f"unet_{name}.npz"))
    kwargs = json.loads(str(data["kwargs_json"]))
    fields = infer_unet_kwargs(read_ddp_checkpoint(REF / f"unet_{name}.pt").unet,
                               channels=kwargs.get("channels", 3))
    # what the tensors cannot tell: GroupNorm groups, the embedding's theta, frozen features
    for key in ("resnet_block_groups", "sinusoidal_pos_emb_theta", "random_fourier_features"):
        if key in kwargs:
            fields[key] = kwargs[key]
    if fields.get("random_fourier_features"):
        fields["learned_sinusoidal_cond"] = False
    model = Unet(**fields, dtype=dtype, param_dtype=dtype)
    state = read_ddp_checkpoint(REF / f"unet_{name}.pt").unet
    return model, unet_params(state, model, dtype=np.dtype(dtype)), data


def unet_output(model, params, data, dtype):
    x = jnp.asarray(nhwc(data["x"]), dtype)
    cond = jnp.asarray(nhwc(data["x_self_cond"]), dtype) if "x_self_cond" in data else None
    return model.apply(params, x, jnp.asarray(data["t"], jnp.int32), x_self_cond=cond)


@pytest.mark.parametrize("name", UNETS)
def test_unet_float64_equals_pytorch(name):
    # the same function, up to the order of float64 sums
    with jax.enable_x64(True):
        model, params, data = ported_unet(name, jnp.float64)
        out = unet_output(model, params, data, jnp.float64)
        assert out.dtype == jnp.float64
        assert relative_error(out, nhwc(data["out64"])) < UNET_FLOAT64_TOL


@pytest.mark.parametrize("name", UNETS)
def test_unet_float32_matches_pytorch(name):
    model, params, data = ported_unet(name, jnp.float32)
    out = unet_output(model, params, data, jnp.float32)
    error = relative_error(out, nhwc(data["out32"]))
    assert error < UNET_FLOAT32_TOL
    # float32 rounding on both sides, not a modelling difference: torch float32 is as far from
    # torch float64 as jaxdiff float32 is
    torch_rounding = relative_error(nhwc(data["out32"]), nhwc(data["out64"]))
    assert error < 10 * max(torch_rounding, 1e-7)


def test_parameter_counts_match_pytorch():
    entries = json.loads((REF / "param_counts.json").read_text())
    assert len(entries) >= 3
    for entry in entries:
        kwargs = dict(entry["kwargs"])
        if entry["package_version"].startswith("1."):
            kwargs.setdefault("resnet_block_groups", 8)
        else:
            kwargs["resnet_block_groups"] = None
        kwargs["dim_mults"] = tuple(kwargs["dim_mults"])
        model = Unet(**kwargs)
        size = 2 ** (len(kwargs["dim_mults"]) - 1) * 4
        assert num_params(model, size, kwargs.get("channels", 3)) == entry["param_count"], entry


@pytest.mark.parametrize("name", UNETS)
def test_reference_unet_param_counts(name):
    model, params, data = ported_unet(name, jnp.float32)
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))
    assert count == int(data["param_count"])


# ---------------------------------------------------------------------------------------------
# pytorch-fid's Inception


@pytest.fixture(scope="module")
def inception_reference():
    from jaxdiff.metrics import inception
    from reference_weights import inception_reference_weights

    data = dict(np.load(REF / "inception.npz"))
    weights = inception_reference_weights(inception.expected_state_dict_shapes(),
                                          seed=int(data["seed"]))
    return weights, data


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_inception_features_match_pytorch_fid(inception_reference, dtype):
    from jaxdiff.metrics import inception

    weights, data = inception_reference
    images = nhwc(data["images"])
    if dtype == "float64":
        with jax.enable_x64(True):
            variables = inception.state_dict_to_variables(weights, dtype=np.float64)
            model = inception.InceptionV3FID(dtype=jnp.float64)
            features = model.apply(variables, jnp.asarray(images, jnp.float64))
            assert features.dtype == jnp.float64
            error = relative_error(features, data["features64"])
        assert error < INCEPTION_FLOAT64_TOL
    else:
        features = inception.inception_features(
            images.astype(np.float32), inception.state_dict_to_variables(weights))
        error = relative_error(features, data["features32"])
        assert error < INCEPTION_FLOAT32_TOL


# ---------------------------------------------------------------------------------------------
# A trained ddp checkpoint, ported and sampled


@pytest.mark.parametrize("version", ["ddp1", "ddp2"])
def test_ported_checkpoint_follows_the_pytorch_ddim_trajectory(tmp_path, version):
    import jaxdiff
    from jaxdiff.port import port_ddp_checkpoint
    from jaxdiff.run import load_run

    data = dict(np.load(REF / f"{version}_ddim.npz"))
    steps = int(data["sampling_timesteps"])
    port_ddp_checkpoint(REF / f"{version}_model-3.pt", str(tmp_path / "run"), image_size=8,
                        sampling_timesteps=steps)
    run = load_run(str(tmp_path / "run"))
    np.testing.assert_allclose(np.asarray(run.schedule.betas), data["betas"], rtol=1e-5)
    x_T = nhwc(data["x_T"]).astype(np.float32)
    _, trajectory = jaxdiff.ddim_sample(
        run.model_fn, run.schedule, key=jax.random.key(0), shape=x_T.shape, num_steps=steps,
        eta=float(data["ddim_sampling_eta"]), objective=run.config.diffusion.objective,
        clip_x0=True, timestep_spacing="trailing", x_T=jnp.asarray(x_T),
        return_trajectory=True, self_condition=run.config.model.self_condition)
    want = np.asarray(data["trajectory"]).transpose(1, 0, 3, 4, 2)  # -> [steps + 1, B, H, W, C]
    got = np.asarray(trajectory)
    if bool(data["unnormalized"]):
        got = (got + 1) / 2
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[0], want[0])
    assert relative_error(got, want) < DDIM_FLOAT32_TOL
