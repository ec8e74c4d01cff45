#!/usr/bin/env bash
# The `full` recipe (every layer of EfficientNet-Lite0 fine-tuned on freshly augmented pixels,
# the default with a GPU) on the same photos and split as benchmarks/train_default.sh, for
# comparison with the CPU default (`cached`). Measured on the 2-core CPU: docs/training.md.
#
#   benchmarks/train_full.sh [DATA_DIR] [OUTPUT_BASE_PATH] [extra corolla train flags]
#
# On a machine with CUDA, `--device auto` (the default) trains there; add `--workers N` for
# DataLoader workers. The 20-epoch preset stops early when validation accuracy has not improved
# for 5 epochs, and keeps the best epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/datasets/flower_photos}
OUT=${2:-runs/models/flowers-full}
PY=${PYTHON:-.venv/bin/python}

/usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KB" \
  "$PY" -m corolla.training.cli train "$DATA" --output "$OUT" \
    --arch efficientnet_lite0 --recipe full --seed 0 --split 0.75,0.10,0.15 --split-seed 0 \
    --threads 2 --workdir "runs/work-full" "${@:3}"
