# Sourced by the device scripts: `device_setup NAME` goes to the repository root, sends everything printed to
# $out/NAME.log as well (out: $OUT, which the device tool brings back, else runs/NAME), installs the wheels carried
# in .whl/ (INSTALL_WHEELS=0 skips them, e.g. for a CPU smoke test here, whose Python is not 3.12) and exports
# PYTHONPATH, PYTHONUNBUFFERED, MUJOCO_GL/PYOPENGL_PLATFORM (EGL, NVIDIA's vendor file when present). Sets `out`
# and `py` ($PYTHON or python3). `device_check MODULE...` imports each module first, so a missing package costs
# seconds, not the run.
#
# .whl (git-ignored, ~42 MB): what rlpt needs beyond the GPU image (/work/.library/device/KINDS.md lists it), as
# Python 3.12 manylinux wheels, one version each. On a machine with internet, from the repository root:
#   p="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64"
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $p \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d /tmp/w \
#     mujoco==3.17.0 mujoco-mjx==3.17.0 gymnasium==1.2.2 farama-notifications==0.0.4 pyopengl==3.1.10 \
#     glfw==2.11.0 trimesh==5.2.0 websockets==17.4 dm_control==1.0.50 dm-env==1.6 dm-tree==0.1.10 \
#     pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     typing-extensions==4.16.0 stable-baselines3==2.9.2
#   mkdir -p .whl && python3 benchmarks/device/slim_dm_control.py /tmp/w/dm_control-1.0.50-py3-none-any.whl \
#     .whl/dm_control-1.0.50-0suite-py3-none-any.whl      # 56 MB -> 0.5 MB: the suite without locomotion assets
#   ls /tmp/w/*.whl | grep -v dm_control-1.0.50-py3 | xargs -I{} cp {} .whl/
# (rlpt.config imports pydantic and rlpt.agents stable_baselines3; the image has neither.)
device_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
  out="${OUT:-runs/$1}"
  mkdir -p "$out"
  exec > >(tee "$out/$1.log") 2>&1  # a later bare `wait` would wait for this tee too: wait for PIDs instead
  if [ "${INSTALL_WHEELS:-1}" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}
  local nv_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f "$nv_egl" ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=$nv_egl
  fi
  py="${PYTHON:-python3}"
}

device_check() {
  "$py" -c "import importlib, sys, torch
for m in sys.argv[1:]:
    importlib.import_module(m)
print('imports ok:', *sys.argv[1:], '| torch', torch.__version__, 'cuda', torch.cuda.is_available())" "$@" \
    || { echo "device_check: an import failed (is .whl carried?)"; exit 1; }
}
