#!/usr/bin/env bash
# V-PTR downstream on one GPU: ICVF vs scratch (PTR) vs reconstruction, 5 seeds, 20 evaluation episodes per point,
# every arm at the same offline update budget (benchmarks/vptr.py; issue: V-PTR >= scratch + 10 success points).
# Run it once an ICVF variant orders held-out tabletop clips (benchmarks/device/icvf_gpu.sh says which); pass
# that variant as ICVF_SET (default: "mc_weight=1.0 p_samegoal=1.0", the best on CPU so far: +0.47 at 12,000
# updates).
#
# 15 processes, one per (seed, arm), each with the same deadline ($DEADLINE seconds, default 470) and the same
# capped budgets (OFFLINE_STEPS 3000, ONLINE_STEPS 1000: what every arm reached in 505 s on one H200 with 9
# processes); each rewrites its part file after every evaluation, so a process stopped by the deadline still
# leaves its curve. Then `--merge` joins the parts into $OUT/vptr_gpu.json with a success-curve figure.
# Needs: the tabletop env and rlpt's config (the wheels in .whl/: benchmarks/device/common.sh) and the
# workspace video of benchmarks/device/icvf_gpu.sh in runs/icvf_videos/train (rendered here when missing).
# Device tool: carry [".whl", "runs/icvf_videos"], timeout_s 600, command "bash benchmarks/device/vptr_gpu.sh".
# Time: install ~20 s, the pixel dataset (8,000 transitions, one process) ~1 min, $DEADLINE, merge ~10 s.
# Smoke test on CPU (3 processes, a few minutes): INSTALL_WHEELS=0 PYTHON=.venv/bin/python SEEDS=0 \
#   DEVICE=cpu EXTRA=--quick DATASET_SIZE=400 OFFLINE_STEPS=300 ONLINE_STEPS=100 OUT=/tmp/x \
#   bash benchmarks/device/vptr_gpu.sh
set -uo pipefail
# shellcheck source=benchmarks/device/common.sh
source "$(dirname "$0")/common.sh"
device_setup vptr_gpu
device_check rlpt.agents rlpt.envs.tabletop rlpt.pretrain.vptr rlpt.pretrain.contextwm cv2
seeds="${SEEDS:-0 1 2 3 4}" deadline="${DEADLINE:-470}" size="${DATASET_SIZE:-8000}"
videos=runs/icvf_videos/train
if [ ! -f "$videos/manifest.jsonl" ]; then
  "$py" -m rlpt.cli video render --out "$videos" --domains tabletop-push --clips 300 --frames 50 --size 64 \
    --seed 0 --texture-seeds 0:1000 --cameras workspace || exit 1
fi
# one process makes the pixel dataset, so that the 15 below do not all make it at once
"$py" -m rlpt.cli data make tabletop-push-noisy-pixels32 --size "$size" --seed 0 \
  --out "data/tabletop-push-noisy-pixels32-n$size.hdf5" || exit 1
parts="runs/vptr_gpu_parts"
rm -rf "$parts" runs/vptr_gpu_work
mkdir -p "$parts"
pids=()
for seed in $seeds; do
  for arm in icvf scratch recon; do
    # shellcheck disable=SC2086  # EXTRA and ICVF_SET are lists of words
    "$py" benchmarks/vptr.py --seeds "$seed" --arms "$arm" --videos "$videos/manifest.jsonl" \
      --icvf-set ${ICVF_SET:-mc_weight=1.0 p_samegoal=1.0} --icvf-steps "${ICVF_STEPS:-20000}" --recon-steps "${RECON_STEPS:-5000}" \
      --offline-steps "${OFFLINE_STEPS:-3000}" --online-steps "${ONLINE_STEPS:-1000}" --dataset-size "$size" \
      --eval-every 500 --eval-episodes 20 --deadline-seconds "$deadline" --device "${DEVICE:-cuda}" --threads 1 \
      --work "runs/vptr_gpu_work/$arm" --out "$parts/seed${seed}_$arm.json" ${EXTRA:-} \
      > "$parts/seed${seed}_$arm.log" 2>&1 &
    pids+=($!)
  done
done
wait "${pids[@]}"  # not a bare wait: that would also wait for the tee above, which never ends
for f in "$parts"/*.log; do echo "== $f"; tail -n 3 "$f"; done
"$py" benchmarks/vptr.py --merge "$parts"/*.json --out "$out/vptr_gpu.json"
"$py" benchmarks/vptr.py --plot "$out/vptr_gpu.json" --out "$out/vptr_gpu.png"
