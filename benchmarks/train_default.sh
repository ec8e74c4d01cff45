#!/usr/bin/env bash
# Reproduce Corolla's embedded default model (src/corolla/default_model/flowers/1) from photos.
#
#   benchmarks/train_default.sh [DATA_DIR] [OUTPUT_BASE_PATH]
#
# DATA_DIR defaults to the development photos (../shared/datasets/flower_photos from the project
# root). To train on the public download instead: corolla train --dataset tf_flowers ...
# The run is deterministic up to floating-point summation order (seeded split, augmentation and
# initialisation). Prints wall-clock and CPU time; the result is published as the next version
# under OUTPUT_BASE_PATH (default runs/models/flowers), with its reports inside.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/datasets/flower_photos}
OUT=${2:-runs/models/flowers}
PY=${PYTHON:-.venv/bin/python}

# The default recipe: EfficientNet-Lite0 (ImageNet), frozen stem + blocks 0-11 cached once over
# a clean view and 6 augmented views per training photo; blocks 12-15 + head + classifier
# fine-tuned for 4 epochs over all cached views. Measured: docs/training.md.
/usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KB" \
  "$PY" -m corolla.training.cli train "$DATA" --output "$OUT" \
    --arch efficientnet_lite0 --recipe cached --train-from-block 12 --views 6 \
    --epochs 4 --seed 0 --split 0.75,0.10,0.15 --split-seed 0 --threads 2 \
    --workdir "runs/work-default" "${@:3}"
