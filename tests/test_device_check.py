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
        ("unet_tiny", "float32"), ("unet_tiny", "bfloat16")]
    for row in rows:
        assert "skipped" not in row, row
        assert row["train_img_per_s"] > 0 and row["sample_img_steps_per_s"] > 0
        assert row["train_flops_per_step"] > 0 and row["train_memory"]["temp_size_in_bytes"] > 0
    for row in rows[1::2]:  # bf16 against float32, on parameters that shape the output
        assert 0 < row["loss_vs_float32"] < report["header"]["loss_tolerance"]
        assert row["loss_matches_float32"]
    assert report["header"]["failures"] == []
    table = (out / "device_check.md").read_text()
    assert table.count("\n| ") == 5 and "ddpm_unet_tiny" in table
