#!/usr/bin/env bash
# Prove and measure the CUDA paths on one GPU machine (under 8 minutes):
#   1. the `cuda`-marked tests (AMP fp16 + GradScaler and bf16 training steps, channels-last,
#      Detect / MultiBoxLoss / evaluation on CUDA vs the CPU, torchrun with NCCL);
#   2. benchmarks/gpu_bench.py: training images/s (SSD300, batch 32, fp32/bf16/fp16 AMP,
#      channels-last, real data pipeline vs synthetic batches) and inference images/s (1, 8, 32).
# Everything goes to one results file (default benchmarks/results/gpu_check.json, with the
# test log beside it). Usage: benchmarks/gpu_check.sh [--dry-run] [results.json]
# --dry-run (or SSD_GPU_CHECK_DRY_RUN=1) runs all of it on the CPU without CUDA calls: the
# cuda tests are collected and skipped, the benchmark takes one batch-1 step per setting.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=${SSD_GPU_CHECK_DRY_RUN:-0}
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT=${1:-benchmarks/results/gpu_check.json}
PY=${PYTHON:-python}
[[ -x .venv/bin/python && -z "${PYTHON:-}" ]] && PY=.venv/bin/python
mkdir -p "$(dirname "$OUT")"
LOG="${OUT%.json}_tests.log"
BENCH="${OUT%.json}_bench.json"

echo "== cuda tests =="
set +e
if [[ "$DRY" == 1 ]]; then
  timeout 120 "$PY" -m pytest -q -m cuda tests/test_cuda.py >"$LOG" 2>&1
else
  timeout 300 "$PY" -m pytest -q -m cuda -rs tests/test_cuda.py >"$LOG" 2>&1
fi
TESTS_RC=$?
set -e
tail -n 3 "$LOG"

echo "== benchmark =="
BENCH_ARGS=(--out "$BENCH")
[[ "$DRY" == 1 ]] && BENCH_ARGS+=(--dry-run)
timeout "$([[ "$DRY" == 1 ]] && echo 900 || echo 240)" "$PY" benchmarks/gpu_bench.py "${BENCH_ARGS[@]}"

# One results file: the benchmark numbers plus the test outcome and the machine.
"$PY" - "$OUT" "$BENCH" "$LOG" "$TESTS_RC" "$DRY" <<'PYEOF'
import json, subprocess, sys
out, bench, log, rc, dry = sys.argv[1:]
result = json.load(open(bench))
lines = open(log).read().splitlines()
result["tests"] = {"exit_code": int(rc), "summary": lines[-1] if lines else ""}
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    result["nvidia_smi"] = smi.stdout.strip()
except (OSError, subprocess.SubprocessError):
    result["nvidia_smi"] = None
result["dry_run"] = dry == "1"
json.dump(result, open(out, "w"), indent=1)
print(f"results: {out} (tests exit code {rc})")
PYEOF
