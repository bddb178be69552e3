#!/usr/bin/env bash
# ContextWM agent return on one GPU machine (Python 3.12, torch with CUDA, 16 cores, one H100/H200, no network):
# benchmarks/contextwm.py --agent-only, the Dreamer agent on dm_control cartpole-swingup from pixels
# (agents/contextwm/cartpole-swingup-cpu.yaml) from three inits: scratch, plain-pretrained and ContextWM-pretrained
# world models, 5 seeds each, 10 evaluation episodes every 2000 of 10000 online steps. One process per
# (seed, init), all 15 at once, each with one torch thread; they share one deadline, so every run stops at the last
# evaluation point it can finish in time and the summary compares the inits at the largest step every run reached
# (`common_step`; the budget when all finished). Each process writes its part file after every evaluation point;
# the parts are merged into $OUT/contextwm_gpu.json (+ _agent_return.png), with this log and a tarball of the parts
# and per-process logs. A killed process keeps the points it saved.
#
# The device call (from the repository root; .whl and .cwm-pretrained are git-ignored):
#   run(command="bash benchmarks/device/contextwm_gpu.sh", carry=[".whl", ".cwm-pretrained"], timeout_s=600)
# Carried: .whl ~42 MB of wheels, shared by every device script (benchmarks/device/common.sh: mujoco, gymnasium,
# dm_control without its locomotion assets, pydantic, ...),
# .cwm-pretrained ~4 MB (the two phase-A world models, 1500 cpu-small updates each, made on a CPU with the
# benchmark's defaults: see "Make the carried folders"). Without .cwm-pretrained the script pretrains them first
# (~3 min of the budget) and returns them as contextwm_gpu_pretrained.tar.gz (unpack into .cwm-pretrained for the
# next call). To resume in a second call: copy the returned contextwm_gpu.json into a git-ignored folder, carry it
# and set RESUME=that/contextwm_gpu.json (finished runs are skipped; unfinished ones start again).
#
# Expected time (estimated, not measured on a GPU yet): wheels + import/render check ~30 s; 15 agent runs in
# parallel until the deadline at BUDGET_S - MERGE_S = 515 s after the start; merge ~15 s: ~9 min, under the 10-min
# limit. One run alone is estimated at ~4-5 min: 1900 agent updates x ~0.09 s (the cpu-small world-model update
# takes 0.037 s on an H200, benchmarks/results/contextwm_speed_cuda.json, launch-bound: CPU time = wall time; an agent
# update costs ~2-2.5 world-model updates on the CPU, 0.75 s vs 0.27-0.38 s) ~3 min, plus 10k acting steps and
# 5 x 10 evaluation episodes of 500 steps (35k policy steps at ~1.5-2 ms) ~1-1.5 min. 15 processes share the GPU
# without MPS, a slowdown not measured yet: at more than ~1.7x the runs stop at an earlier common step (8000,
# 6000, ...), which the log and the summary state. Per-process rates are in the log every 60 s.
#
# Make the carried folders on a machine with internet, from the repository root: .whl as benchmarks/device/common.sh
# says, then the pretrained world models:
#   python benchmarks/contextwm.py --pretrain-only --device cpu          # phase A into data/contextwm_bench
#   for k in plain contextwm; do mkdir -p .cwm-pretrained/$k; cp data/contextwm_bench/pretrain_$k/{contextwm.json,\
#   model.safetensors,summary.json,bench_timing.json} .cwm-pretrained/$k/; done
#
# Settings by environment variable (defaults in brackets): SEEDS ["0 1 2 3 4"], INITS ["scratch plain contextwm"],
# STEPS [10000], EVAL_INTERVAL [2000], EVAL_EPISODES [10], DEVICE [cuda], BUDGET_S [560: seconds for the whole
# script], MERGE_S [45: kept for the merge], WORK [data/contextwm_bench], WHEELS [.whl; "none": use the
# installed packages], PRETRAINED [.cwm-pretrained], RESUME [], PYTHON [python3]. Extra arguments go to every
# benchmark process, e.g. a CPU smoke run here:
#   OUT=/tmp/cwm_smoke WHEELS=none PYTHON=.venv/bin/python DEVICE=cpu SEEDS="0 1" BUDGET_S=600 WORK=/tmp/cwm_w \
#     PRETRAINED=none bash benchmarks/device/contextwm_gpu.sh --quick
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$(date +%s)
SEEDS=${SEEDS:-"0 1 2 3 4"}
INITS=${INITS:-"scratch plain contextwm"}
STEPS=${STEPS:-10000}
EVAL_INTERVAL=${EVAL_INTERVAL:-2000}
EVAL_EPISODES=${EVAL_EPISODES:-10}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-560}
MERGE_S=${MERGE_S:-45}
WORK=${WORK:-data/contextwm_bench}
WHEELS=${WHEELS:-.whl}
PRETRAINED=${PRETRAINED:-.cwm-pretrained}
RESUME=${RESUME:-}
PYTHON=${PYTHON:-python3}
out="${OUT:-/tmp/contextwm_gpu_out}"
mkdir -p "$out" "$WORK/parts"
exec > >(tee -a "$out/contextwm_gpu.log") 2>&1
say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
say "contextwm_gpu.sh: seeds [$SEEDS] inits [$INITS] steps $STEPS eval every $EVAL_INTERVAL x $EVAL_EPISODES" \
    "episodes, device $DEVICE, budget $BUDGET_S s, extra args [$*]"

if [ "$WHEELS" != none ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || { say "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
  nv_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json  # where the device notes find NVIDIA's EGL
  if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f "$nv_egl" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=$nv_egl
  fi
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$PYTHON" - <<'EOF' || { say "import/render check failed"; exit 1; }
import time
t = time.time()
import torch, mujoco, gymnasium, pydantic
import matplotlib, torch.utils.tensorboard  # everything part two imports, so a missing wheel shows here
import rlpt.train, rlpt.agents.contextwm, rlpt.pretrain.contextwm, rlpt.collect.video_render, rlpt.data.video
from rlpt.envs import make_env
env = make_env("dmc/cartpole-swingup", pixels=True, image_size=32, action_repeat=2, seed=0)
obs, _ = env.reset(seed=0)
print(f"torch {torch.__version__} cuda {torch.cuda.is_available()} mujoco {mujoco.__version__} gymnasium "
      f"{gymnasium.__version__} pydantic {pydantic.__version__}; cartpole pixels {obs.shape} {obs.dtype} "
      f"({time.time() - t:.1f} s)")
EOF

# ---------------------------------------------------------------- phase A: carried, cached, or made now
made_here=0
for k in plain contextwm; do
  if [ ! -f "$WORK/pretrain_$k/contextwm.json" ] && [ -f "$PRETRAINED/$k/contextwm.json" ]; then
    mkdir -p "$WORK/pretrain_$k" && cp "$PRETRAINED/$k"/* "$WORK/pretrain_$k/"
  fi
  [ -f "$WORK/pretrain_$k/contextwm.json" ] || made_here=1
done
say "phase A: $([ $made_here = 1 ] && echo 'pretraining now' || echo 'pretrained models found')"
"$PYTHON" benchmarks/contextwm.py --pretrain-only --work "$WORK" --out "$WORK/pretrain.json" --device "$DEVICE" \
  --quiet "$@" || { say "phase A failed"; exit 1; }
if [ $made_here = 1 ]; then
  tar czf "$out/contextwm_gpu_pretrained.tar.gz" -C "$WORK" \
    $(for k in plain contextwm; do for f in contextwm.json model.safetensors summary.json bench_timing.json; do
        echo "pretrain_$k/$f"; done; done)
fi

# ---------------------------------------------------------------- part two: one process per (seed, init)
deadline=$(( T0 + BUDGET_S - MERGE_S ))
hard=$(( deadline + MERGE_S / 3 ))
say "agent runs until $(date -u -d @$deadline +%H:%M:%S) UTC (deadline), killed at $(date -u -d @$hard +%H:%M:%S)"
pids=()
for s in $SEEDS; do
  for i in $INITS; do
    part="$WORK/parts/contextwm_s${s}_${i}.json"
    if [ -n "$RESUME" ] && [ ! -f "$part" ]; then cp "$RESUME" "$part"; fi
    timeout --signal=TERM $(( hard - $(date +%s) )) "$PYTHON" benchmarks/contextwm.py --agent-only \
      --agent-seeds "$s" --agent-inits "$i" --agent-steps "$STEPS" --agent-eval-interval "$EVAL_INTERVAL" \
      --agent-eval-episodes "$EVAL_EPISODES" --agent-video-steps 0 --agent-deadline "@$deadline" \
      --device "$DEVICE" --work "$WORK" --out "$part" --quiet "$@" > "$WORK/parts/s${s}_${i}.log" 2>&1 &
    pids+=($!)
  done
done
while :; do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
  [ $alive = 0 ] && break
  say "$alive of ${#pids[@]} processes running; last points:"
  for f in "$WORK"/parts/s*.log; do
    [ -f "$f" ] || continue
    echo "    $(basename "$f" .log): $(grep -h 'agent .* step\|Error\|error' "$f" | tail -1)"
  done
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  for _ in $(seq 12); do  # 60 s, or less once every process has ended
    sleep 5; alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
  done
done
fails=0
for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
say "agent processes ended ($fails with a non-zero exit: killed at the hard stop or failed; see their logs)"

# ---------------------------------------------------------------- merge and copy out
parts=("$WORK"/parts/contextwm_s*.json)
"$PYTHON" benchmarks/contextwm.py --merge "${parts[@]}" --out "$out/contextwm_gpu.json" \
  || say "merge failed; the part files are in the tarball"
tar czf "$out/contextwm_gpu_parts.tar.gz" -C "$WORK" parts
say "done; files in $out: $(ls "$out" | tr '\n' ' ')"
sleep 1  # let tee write the last lines into the log before the files are collected
