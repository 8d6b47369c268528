#!/usr/bin/env bash
# The one-shot GPU benchmark (issue 28): on one H100, random weights at Qwen2.5-VL-7B's exact shape,
# bf16, SDPA; eager vs compiled decode ms/token, the per-second step at 2 fps (1280x720 frames: 720
# vision tokens per second), the highest real-time input fps (2/4/8/16/24/32), peak device memory,
# streaming vs full vs recompute. Unattended, no downloads; stops by itself within BUDGET_S seconds
# (default 450: under 8 minutes in all) and writes OUT/gpu.json, gpu.md and gpu.png after every phase.
#
#   benchmarks/gpu.sh                        # -> benchmarks/results/gpu-<date>/
#   OUT=/tmp/h100 BUDGET_S=300 benchmarks/gpu.sh
#   benchmarks/gpu.sh --dry-run              # tiny model, tiny frames, on the CPU in < 60 s
#
# Extra arguments go to `streamvlm bench --suite gpu` (e.g. --device cuda:1, --sweep 2,8,24).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT=${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M%S)}
BUDGET_S=${BUDGET_S:-450}
DEVICE=(--device cuda)
for arg in "$@"; do
    case "$arg" in --dry-run) DEVICE=(); BUDGET_S=${BUDGET_S_DRY:-30} ;; --device*) DEVICE=() ;; esac
done
# no downloads, ever: the random 7B-shaped model needs none, and nothing may wait on a network
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"  # a checkout runs without being installed
# The suite stops itself at the budget (its watchdog ends it at most 15 s later); `timeout` is the
# last resort should the interpreter hang: SIGTERM at budget + 20 s (the suite saves what it has and
# exits), SIGKILL 5 s on: 475 s at most with the default budget, under 8 minutes whatever happens.
HARD=$(( ${BUDGET_S%.*} + 20 ))
exec timeout --signal=TERM --kill-after=5 "$HARD" \
    "$PYTHON" -m streamvlm bench --suite gpu "${DEVICE[@]}" --budget-s "$BUDGET_S" --out "$OUT" "$@"
