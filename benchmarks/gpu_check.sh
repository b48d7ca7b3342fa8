#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): torch CUDA eager / torch.export /
# AOTInductor (+ CUDA graph step) parity vs CPU and p50/p99 latency, the demo clip through the
# pipeline on CUDA, TensorRT when importable. Finishes within 8 minutes on a bare GPU machine
# (hard limit below; the script itself stops starting stages after --budget-s, default 420 s).
# Writes gpu_check.json + gpu_check.md to $OUT (or ./gpu_check_out).
# Usage: benchmarks/gpu_check.sh [--cpu-dry-run] [gpu_check.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>/dev/null \
    > "$OUT/nvidia_smi.csv" || true
exec timeout --signal=INT --kill-after=20 470 "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
