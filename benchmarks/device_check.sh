#!/usr/bin/env bash
# The prepared check for the first session with a GPU / TPU (benchmarks/device_check.py says what
# it measures). Writes device_check.json and device_check.md to $OUT (default
# benchmarks/device_check_out); --tiny runs the same code at toy sizes on any machine (CI).
# Needs only jax, flax, optax, orbax-checkpoint and numpy; runs from a checkout, no install.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/device_check_out}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# A warm rerun on the same machine skips the compiles.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/jaxdiff_jax_cache}"
python3 -c "import jax; print('devices:', jax.devices())"
status=0
python3 benchmarks/device_check.py --out "$OUT" "$@" || status=$?
# Side by side on the same card: denoising-diffusion-pytorch (torch, eager, as its users run it)
# at the dim-64 Unet case's config, when DDP_PATH names a folder holding an unpacked
# denoising_diffusion_pytorch release and ema_pytorch (torch is never a jaxdiff dependency).
if [[ -n "${DDP_PATH:-}" ]]; then
  for dtype in float32 bfloat16; do
    PYTHONPATH="$DDP_PATH:$PYTHONPATH" python3 benchmarks/torch_reference.py --device cuda \
      --dim 64 --dim_mults 1,2,4,8 --image_size 64 --channels 3 --batch 64 --steps 10 \
      --warmup 2 --repeats 3 --sample_steps 20 --sample_calls 1 --dtype "$dtype" \
      2>/dev/null | tee -a "$OUT/torch_reference.jsonl" || echo "torch reference $dtype failed"
  done
fi
exit "$status"
