#!/usr/bin/env bash
# ICVF on tabletop-push video at GPU budgets: does any variant's value order held-out clips (target >= 0.5)?
#
# Four `rlpt pretrain vptr` runs in parallel on one GPU (cpu-small architecture, batch 256 instead of 32 because a
# GPU step costs about the same either way), each stopped after $TRAIN_SECONDS (--max-seconds); then
# benchmarks/icvf_probe.py on the held-out clips (new looks: texture seeds 1000:1100) for each run's final model
# and the two step checkpoints it keeps (every $CHECKPOINT_EVERY, default 5,000):
#   default     the reference objective (random goals from the batch)
#   mc1         mc_weight=1.0: on-path goals (s+ = z, a later frame of the own clip) take the clip's own return
#   mc1_clip    mc_weight=1.0 and random_goals=clip (no goals from other clips, so looks cannot tell them apart)
#   gc          mc_weight=1.0 and p_samegoal=1.0 (every outcome is its intention: a goal-conditioned value)
# On 2 CPU cores at batch 32 (benchmarks/results/icvf_probe_tabletop_mc.json) the reference orders held-out clips
# at <= +0.05, mc1 at +0.15 (6,000 updates) and gc at +0.39 (6,000) and +0.47 (12,000).
#
# Videos (workspace camera, 64x64, 50 frames): runs/icvf_videos/{train,heldout}, rendered here when missing
#   rlpt video render --out runs/icvf_videos/train --domains tabletop-push --clips 300 --frames 50 --size 64 \
#     --seed 0 --texture-seeds 0:1000 --cameras workspace            (61 s on 2 CPU cores; 6.1 MB)
#   rlpt video render --out runs/icvf_videos/heldout ... --clips 48 --seed 7 --texture-seeds 1000:1100  (1 MB)
# Render them before the call and carry them (the GPU machine then renders nothing). The wheels in .whl/
# (benchmarks/device/common.sh) bring pydantic, which rlpt's config needs, and MuJoCo for rendering there.
# Device tool: carry ["runs/icvf_videos", ".whl"], timeout_s 600,
#   command "bash benchmarks/device/icvf_gpu.sh"
# Time: install ~20 s, $TRAIN_SECONDS (default 420) of training, probes ~1 min (CPU, 96 clips per checkpoint).
# $OUT gets icvf_probe_gpu.json (every probe number), icvf_gpu.log and each run's metrics.jsonl (its training
# value-order history). Smoke test on CPU (no wheels: they are for the GPU machine's Python 3.12):
#   INSTALL_WHEELS=0 PYTHON=.venv/bin/python DEVICE=cpu TRAIN_SECONDS=15 BATCH=8 CHECKPOINT_EVERY=20 OUT=/tmp/x \
#     bash benchmarks/device/icvf_gpu.sh
set -uo pipefail
# shellcheck source=benchmarks/device/common.sh
source "$(dirname "$0")/common.sh"
device_setup icvf_gpu
device_check rlpt.pretrain.vptr rlpt.data.video cv2
device="${DEVICE:-cuda}" steps="${STEPS:-200000}" batch="${BATCH:-256}" seconds="${TRAIN_SECONDS:-420}"
videos=runs/icvf_videos
if [ ! -f "$videos/train/manifest.jsonl" ]; then
  "$py" -m rlpt.cli video render --out "$videos/train" --domains tabletop-push --clips 300 --frames 50 --size 64 \
    --seed 0 --texture-seeds 0:1000 --cameras workspace || exit 1
fi
if [ ! -f "$videos/heldout/manifest.jsonl" ]; then
  "$py" -m rlpt.cli video render --out "$videos/heldout" --domains tabletop-push --clips 48 --frames 50 --size 64 \
    --seed 7 --texture-seeds 1000:1100 --cameras workspace || exit 1
fi
work="runs/icvf_gpu_work"
rm -rf "$work"
pids=()
declare -A variants=([default]="" [mc1]="mc_weight=1.0" [mc1_clip]="mc_weight=1.0 random_goals=clip"
                     [gc]="mc_weight=1.0 p_samegoal=1.0")
for name in "${!variants[@]}"; do
  # shellcheck disable=SC2086  # the overrides are separate words
  "$py" -m rlpt.cli --quiet pretrain vptr --videos "$videos/train/manifest.jsonl" --steps "$steps" \
    --out "$work/$name" --preset cpu-small --device "$device" --threads 2 --eval-every 1000 --max-seconds "$seconds" \
    --checkpoint-every "${CHECKPOINT_EVERY:-5000}" --batch-size "$batch" ${variants[$name]} > "$work.$name.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"  # not a bare wait: that would also wait for the tee above, which never ends
checkpoints=()  # each run's final model and the two step checkpoints it keeps (the trend)
for name in "${!variants[@]}"; do
  tail -n 2 "$work.$name.log"
  cp "$work/$name/metrics.jsonl" "$out/metrics_$name.jsonl" 2>/dev/null
  if [ -f "$work/$name/vptr.json" ]; then checkpoints+=("$work/$name"); fi
  for ck in $(ls -d "$work/$name"/checkpoints/step_* 2>/dev/null); do checkpoints+=("$ck"); done
done
if [ ${#checkpoints[@]} -eq 0 ]; then echo "no model was written"; exit 1; fi
"$py" benchmarks/icvf_probe.py "${checkpoints[@]}" --videos "$videos/heldout/manifest.jsonl" --clips 96 \
  --threads 4 --out "$out/icvf_probe_gpu.json"
