#!/usr/bin/env bash
# Run benchmarks/mjx_gpu.py on an offline GPU machine (Python 3.12, torch and JAX with CUDA already there).
# The wheels rlpt needs beyond that image travel in .whl/ (ignored by git, ~38 MB, under the 64 MiB limit
# per call). Make them on a machine with internet, from the repository root:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     mujoco==3.17.0 mujoco-mjx==3.17.0 gymnasium==1.2.2 farama-notifications==0.0.4 glfw pyopengl \
#     trimesh==5.2.0 "websockets>=13"
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
