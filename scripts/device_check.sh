#!/usr/bin/env bash
# The GPU-node check of issue 11: one command, under 8 minutes, one JSON report.
#
#   scripts/device_check.sh [REPORT.json]   # default: $OUT/device_check.json, else ./device_check.json
#
# Steps, each under its own time limit (a failed or hung step is recorded, the next one runs, and
# the report is written whatever happens; all together stay within DEVICE_CHECK_BUDGET seconds):
#   wheels         install .whl/*.whl (scripts/device_wheels.sh) into a temporary folder; nothing
#                  is fetched from the network
#   env            python, torch, CUDA and GPU, which of mtrl's requirements import
#   tests          pytest -m cuda: tests/test_cuda.py, tests/surgery/test_api.py
#   bench_update   scripts/bench_update.py --device cuda: plain, pcgrad, cagrad, gradops, mgda (and
#                  cagrad's host solver), MT10 and MT50, eager and replayed from a CUDA graph
#   bench_surgery  scripts/bench_surgery.py --device cuda: ours against TorchJD
#   train          mtrl-train on MT10 (mt10 preset, train.compile=cudagraph, train.collector=overlap
#                  when the config has that key) stopped by SIGTERM after DEVICE_CHECK_TRAIN_SECONDS;
#                  transitions/s and updates/s from its metrics.jsonl. If the captured run fails
#                  within a minute, an eager run gets the remaining time (train_eager).
set -u
cd "$(dirname "$0")/.."
report=${1:-${OUT:-.}/device_check.json}
budget=${DEVICE_CHECK_BUDGET:-470}
train_seconds=${DEVICE_CHECK_TRAIN_SECONDS:-180}
py=${PYTHON:-python3}
work=$(mktemp -d)
start=$SECONDS
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# step NAME SECONDS [timeout options --] COMMAND...: output in $work/NAME.log; "status seconds
# limit" in $work/NAME.status (status 124: stopped at its limit). The limit shrinks to what the
# budget has left, keeping 10 s for the report.
step() {
  local name=$1 limit=$2 options=(--kill-after=10)
  shift 2
  if [ "${1:-}" != "${1#-}" ]; then
    while [ "$1" != "--" ]; do options+=("$1"); shift; done
    shift
  fi
  local left=$((budget - (SECONDS - start) - 10))
  ((limit > left)) && limit=$left
  if ((limit < 5)); then
    echo "skipped 0 0" >"$work/$name.status"
    return
  fi
  local begin=$SECONDS
  timeout "${options[@]}" "$limit" "$@" >"$work/$name.log" 2>&1
  echo "$? $((SECONDS - begin)) $limit" >"$work/$name.status"
}

if compgen -G ".whl/*.whl" >/dev/null; then
  step wheels 60 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$work/site" .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:$work/site"
fi

step env 30 "$py" - <<'EOF'
import importlib, json, platform, subprocess
import torch
info = {"python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                capability=f"{props.major}.{props.minor}")
    smi = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    info["driver"] = subprocess.run(smi, capture_output=True, text=True).stdout.strip()
info["imports"] = {}
for name in ("omegaconf", "gymnasium", "mujoco", "metaworld", "torchjd", "hypothesis", "mtrl"):
    try:
        info["imports"][name] = getattr(importlib.import_module(name), "__version__", "ok")
    except Exception as exc:
        info["imports"][name] = f"missing: {exc}"
print(json.dumps(info))
EOF

# In this process, on the one GPU: the node has no pytest-xdist, so the repo's -n options go.
step tests 120 "$py" -m pytest -q -m cuda -p no:cacheprovider -o addopts=-ra \
  --junitxml="$work/tests.xml" tests/test_cuda.py tests/surgery/test_api.py

step bench_update 100 "$py" scripts/bench_update.py --device cuda --benchmarks mt10 mt50 \
  --methods pcgrad cagrad gradops mgda cagrad:solver=exact --compile none cudagraph --rounds 3 \
  --models

step bench_surgery 50 "$py" scripts/bench_surgery.py --device cuda --sizes 10x1e6 50x1e6 \
  --methods mean pcgrad cagrad mgda gradops upgrad nashmtl --repeat 5

train=(--benchmark mt10 --device cuda --no-progress --total-steps 1000000000
  train.warmup_steps=5000 train.eval_every=0 train.log_every=2000 train.buffer_size=200000
  checkpoint.every=0)
if "$py" -c "import sys; from mtrl.config import TrainConfig as T; sys.exit('collector' not in T.__dataclass_fields__)" 2>/dev/null; then
  train+=(train.collector=overlap)
fi
echo "${train[*]}" >"$work/train.args"
# SIGTERM makes mtrl-train checkpoint and exit with status 3; 20 s more for the envs to build.
step train $((train_seconds + 20)) --preserve-status -s TERM -- \
  "$py" -m mtrl.cli "${train[@]}" train.compile=cudagraph --out "$work/train-run"
read -r status seconds _ <"$work/train.status"
if [ "$status" != 3 ] && [ "$status" != skipped ] && ((seconds < 60)); then
  step train_eager $((train_seconds + 20)) --preserve-status -s TERM -- \
    "$py" -m mtrl.cli "${train[@]}" train.compile=none --out "$work/train_eager-run"
fi

mkdir -p "$(dirname "$report")"
if ! "$py" scripts/device_report.py "$work" "$report" $((SECONDS - start)); then
  printf '{"error": "scripts/device_report.py failed", "work": "%s"}\n' "$work" >"$report"
fi
echo "device check: $report ($((SECONDS - start)) s)"
