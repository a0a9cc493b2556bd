"""benchmarks/device_check.sh --tiny: the prepared accelerator check runs end to end on the CPU,
with TFDS, TensorFlow, matplotlib, scikit-learn, ml_collections and diffrax unimportable (the
device image has none of them), and writes its JSON and table."""

import json
import os
import subprocess

from helpers import ROOT

BLOCKED = ("tensorflow_datasets", "tensorflow", "matplotlib", "sklearn", "ml_collections",
           "diffrax")


def test_device_check_tiny_runs_without_the_optional_libraries(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in BLOCKED))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(blocker), OUT=str(out),
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run(["bash", "benchmarks/device_check.sh", "--tiny"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((out / "device_check.json").read_text())
    rows = report["rows"]
    assert [(r["case"], r["dtype"]) for r in rows] == [
        ("ddpm_unet_tiny", "float32"), ("ddpm_unet_tiny", "bfloat16"),
        ("unet_tiny", "float32"), ("unet_tiny", "bfloat16"), ("ddpm_unet_tiny_flat", "bfloat16")]
    for row in rows:
        assert "skipped" not in row, row
        assert row["train_img_per_s"] > 0 and row["sample_img_steps_per_s"] > 0
        assert row["train_flops_per_step"] > 0 and row["train_memory"]["temp_size_in_bytes"] > 0
        # the optimised HLO was read: fusions found (XLA CPU leaves no elementwise op unfused)
        assert row["train_hlo"]["fusions"] > 0 and row["train_hlo"]["unfused_elementwise"] >= 0
    for row in rows[1::2] + rows[4:]:  # bf16 against float32, on parameters that shape the output
        assert 0 < row["loss_vs_float32"] < report["header"]["loss_tolerance"]
        assert row["loss_matches_float32"]
    # the flattened optimiser: same network and probe, one vector instead of per-leaf updates
    plain, flat = rows[1], rows[4]
    assert flat["flatten_optimizer"] and not plain["flatten_optimizer"]
    assert flat["probe_loss"] == plain["probe_loss"]
    assert flat["train_hlo"]["fusions"] < plain["train_hlo"]["fusions"], (plain, flat)
    assert report["header"]["failures"] == []
    table = (out / "device_check.md").read_text()
    assert table.count("\n| ") == 6 and "ddpm_unet_tiny_flat" in table


def test_hlo_fusion_report_counts_only_unfused_elementwise_ops():
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from device_check import hlo_fusion_report

    hlo = """HloModule m
%fused_computation (p0: f32[4], p1: f32[4]) -> f32[4] {
  %p0 = f32[4]{0} parameter(0)
  %p1 = f32[4]{0} parameter(1)
  ROOT %add.1 = f32[4]{0} add(%p0, %p1)
}
%region_add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.2 = f32[] add(%a, %b)
}
ENTRY %main (x: f32[4], y: f32[4]) -> f32[] {
  %x = f32[4]{0} parameter(0)
  %y = f32[4]{0} parameter(1)
  %fusion = f32[4]{0} fusion(%x, %y), kind=kLoop, calls=%fused_computation
  %multi = (f32[4]{0}, pred[]) fusion(%x, %y), kind=kLoop, calls=%fused_computation
  %multiply.3 = f32[4]{0} multiply(%fusion, %y)
  %copy.1 = f32[4]{0} copy(%multiply.3)
  %c = f32[] constant(0)
  ROOT %reduce = f32[] reduce(%copy.1, %c), dimensions={0}, to_apply=%region_add
}
"""
    report = hlo_fusion_report(hlo)
    assert (report["fusions"], report["unfused_elementwise"], report["copies"]) == (2, 1, 1)
    assert "multiply.3" in report["unfused_examples"][0]


def test_model_flops_counts_matmuls_and_convolutions_by_closed_form():
    """throughput.model_flops against hand counts: 2 x multiply-adds per output element."""
    import sys

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from throughput import model_flops

    x = jnp.ones((2, 8, 8, 5))
    conv = nn.Conv(7, (3, 3), padding="SAME")
    params = conv.init(jax.random.key(0), x)
    assert model_flops(conv.apply, params, x) == 2 * (2 * 8 * 8 * 7) * (3 * 3 * 5)
    strided = nn.Conv(6, (4, 4), strides=2, padding=1)
    params = strided.init(jax.random.key(0), x)
    assert model_flops(strided.apply, params, x) == 2 * (2 * 4 * 4 * 6) * (4 * 4 * 5)
    grouped = nn.Conv(10, (3, 3), feature_group_count=5)
    params = grouped.init(jax.random.key(0), x)
    assert model_flops(grouped.apply, params, x) == 2 * (2 * 8 * 8 * 10) * (3 * 3 * 1)

    w = jnp.ones((5, 3))

    def scanned(w, h):  # a Dense inside jit inside a 4-step scan: 4 x 2 * 16 * 5 * 3
        step = jax.jit(lambda carry, _: (carry, carry @ w))
        return jax.lax.scan(step, h, None, length=4)[1]

    assert model_flops(scanned, w, jnp.ones((16, 5))) == 4 * 2 * 16 * 5 * 3
    # batched matmul (attention's q @ k^T): batch dims count once, contraction once
    q, k = jnp.ones((3, 4, 10, 8)), jnp.ones((3, 4, 12, 8))
    assert model_flops(lambda q, k: jnp.einsum("bhid,bhjd->bhij", q, k), q, k) == (
        2 * 3 * 4 * 10 * 12 * 8)
    # rematerialised blocks count once (the MFU convention: recomputation is not model work)
    block = nn.remat(nn.Dense)(4)
    params = block.init(jax.random.key(0), jnp.ones((2, 5)))
    assert model_flops(block.apply, params, jnp.ones((2, 5))) == 2 * 2 * 5 * 4


def test_compile_time_reports_the_train_step_it_compiled():
    """benchmarks/compile_time.py at a tiny size: the leaf count is the model's (counted here
    from its abstract parameters), the timings and HLO counts are positive."""
    import sys

    import jax
    import jax.numpy as jnp

    from jaxdiff.models import Unet

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from compile_time import main

    result = main(["--dim", "8", "--dim_mults", "1", "--image_size", "8", "--batch", "2"])
    params = jax.eval_shape(Unet(dim=8, dim_mults=(1,), channels=1).init, jax.random.key(0),
                            jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32))
    assert result["parameter_leaves"] == len(jax.tree.leaves(params))
    assert result["compile_s"] > 0 and result["lower_s"] > 0
    assert 0 < result["hlo_instructions"] <= result["hlo_lines"]


def test_conv_census_finds_every_spatial_convolution_of_the_unet(tmp_path):
    """benchmarks/conv_census.py at a tiny size: one row per 3x3 / 7x7 kernel of the model
    (counted here from its abstract parameters; Conv1x1 runs as a matrix product), shapes that
    chain with the kernels, positive times, and the rows written for the torch mode."""
    import json
    import sys

    import jax
    import jax.numpy as jnp

    from jaxdiff.models import Unet

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from conv_census import main

    out = tmp_path / "convs.json"
    result = main(["--dim", "8", "--dim_mults", "1,2", "--image_size", "8", "--batch", "2",
                   "--calls", "1", "--out", str(out)])
    params = jax.eval_shape(Unet(dim=8, dim_mults=(1, 2), channels=1).init, jax.random.key(0),
                            jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32))
    spatial = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(params)
               if path[-1].key == "kernel" and leaf.ndim == 4 and leaf.shape[0] > 1]
    assert result["convolutions"] == len(spatial) == len(result["rows"])
    assert sorted(tuple(r["w"]) for r in result["rows"]) == sorted(spatial)
    for row in result["rows"]:
        assert row["x"][0] == 2 and row["x"][-1] == row["w"][2]
        assert 0 < row["xla_fwd_ms"] < row["xla_fwd_bwd_ms"]
    assert json.loads(out.read_text()) == result["rows"]
