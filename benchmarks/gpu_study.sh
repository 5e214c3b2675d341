#!/usr/bin/env bash
# The MLR-VIPeR study of benchmarks/bench_study.py at 256x128 on one CUDA GPU with AMP, as one prepared command
# for a lent GPU machine: 5 splits, baseline and CAD-Net, VIPeR alone / VIPeR + 3DPeS + SARC3D + TownCentre, plus
# the cross-dataset row. It launches no training run after BUDGET_S seconds (default 330: the longest run,
# CAD-Net on VIPeR + the 3 sets, took 205 s on an H100), then reports what finished, so a sitting stays under
# 10 minutes; the same command continues the study (finished runs are skipped, started ones resume).
# Environment: DATA_ROOT (VIPeR/, 3DPeS/, SARC3D/, TownCentre/; default ../shared/data), OUT (default
# ../study-gpu, outside the repository), WEIGHTS (ImageNet MobileNetV2 file), PYTHON (default python; reidx runs
# as `python -m reidx`, so a checkout on PYTHONPATH will do), JOBS (runs side by side, default 4: on an H100
# with 16 cores, 4 at a time trained 9 of the 22 runs and reported them in 341 s; one run alone leaves the GPU
# mostly idle). Extra arguments go to bench_study.py, e.g. --dry-run (print every command, run none: works on a
# CPU machine) or --epochs N / --splits N.
set -euo pipefail
cd "$(dirname "$0")/.."
weights=()
if [[ -n "${WEIGHTS:-}" ]]; then weights=(--pretrained "$WEIGHTS"); fi
exec "${PYTHON:-python}" -m benchmarks.bench_study --profile gpu --splits 5 --budget-s "${BUDGET_S:-330}" \
    --jobs "${JOBS:-4}" --data-root "${DATA_ROOT:-../shared/data}" --out "${OUT:-../study-gpu}" "${weights[@]}" "$@"
