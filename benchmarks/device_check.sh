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
python -c "import jax; print('devices:', jax.devices())"
exec python benchmarks/device_check.py --out "$OUT" "$@"
