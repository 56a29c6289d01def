#!/usr/bin/env bash
# Wheels for scripts/device_check.sh, downloaded on a machine with internet into .whl/ (git-ignored).
#
# The GPU node has no internet. Its image holds python 3.12 with torch (CUDA), numpy, scipy,
# pytest, hypothesis, pyyaml, tqdm, tensorboard, imageio, etils, absl-py, cloudpickle, packaging;
# mtrl's other requirements travel as these wheels (about 46 MB; one device call carries at most
# 64 MiB in all). Pass the folder along with the run: carry=[".whl"].
#
#   scripts/device_wheels.sh            # then, on the node: scripts/device_check.sh
#   scripts/device_wheels.sh --dry-run  # print the download command, fetch nothing
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
run=()
[[ ${1:-} == --dry-run ]] && run=(echo)
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
  manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
"${run[@]}" "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  gymnasium==1.4.0 farama-notifications==0.0.6 mujoco==3.3.0 glfw==2.11.0 pyopengl==3.1.10 \
  metaworld==3.1.1 omegaconf==2.4.0 torchjd==0.18.0
((${#run[@]})) || du -sh .whl
