#!/usr/bin/env bash
# The MLR-VIPeR study of benchmarks/bench_study.py at 256x128 on one CUDA GPU with AMP, as one prepared command
# for a lent GPU machine: 5 splits, baseline and CAD-Net, VIPeR alone / VIPeR + 3DPeS + SARC3D + TownCentre, plus
# the cross-dataset row. It launches no training run after BUDGET_S seconds (default 420), then reports what
# finished, so a sitting stays under 10 minutes; the same command continues the study (finished runs are skipped,
# started ones resume). Environment: DATA_ROOT (VIPeR/, 3DPeS/, SARC3D/, TownCentre/; default ../shared/data),
# OUT (default ../study-gpu, outside the repository), WEIGHTS (ImageNet MobileNetV2 file), PYTHON (default python).
# Extra arguments go to bench_study.py, e.g. --dry-run (print every command, run none: works on a CPU machine)
# or --epochs N / --splits N.
set -euo pipefail
cd "$(dirname "$0")/.."
weights=()
if [[ -n "${WEIGHTS:-}" ]]; then weights=(--pretrained "$WEIGHTS"); fi
exec "${PYTHON:-python}" -m benchmarks.bench_study --profile gpu --splits 5 --budget-s "${BUDGET_S:-420}" \
    --data-root "${DATA_ROOT:-../shared/data}" --out "${OUT:-../study-gpu}" "${weights[@]}" "$@"
