#!/usr/bin/env bash
# Run benchmarks/mjx_gpu.py on an offline GPU machine (Python 3.12, torch and JAX with CUDA already there).
# The wheels rlpt needs beyond that image travel in .whl/ (ignored by git; how to make it:
# benchmarks/device/common.sh, whose list includes MJX's),
# then run this script with .whl carried (device tool: carry [".whl"], command "bash benchmarks/device/mjx_gpu.sh").
# Extra arguments go to the benchmark (e.g. --budget 400 --sections cpu,hopper).
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl XLA_PYTHON_CLIENT_PREALLOCATE=false
# MJX's guide suggests XLA_FLAGS=--xla_gpu_triton_gemm_any=true (~30% faster); not set here because an XLA
# that no longer knows a flag aborts at start. Export it before running this script to try it.
python3 -c "import jax, mujoco; from mujoco import mjx; print('jax', jax.__version__, jax.devices(), 'mujoco', mujoco.__version__)"
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
python3 benchmarks/mjx_gpu.py --out "$out/mjx_gpu.json" "$@" 2>&1 | tee "$out/mjx_gpu.log"
