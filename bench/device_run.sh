#!/usr/bin/env bash
# One prepared GPU session: CUDA correctness check, engine and WRN cost, and the quality benchmark.
#
# Runs on a machine with an NVIDIA GPU whose python3 already has torch, numpy and matplotlib but
# no network. Carry, in the git-ignored folder .device/ of the checkout:
#   .device/wheels/            optuna and its pure deps for that python:
#       pip download --only-binary=:all: --python-version 3.12 \
#           --platform manylinux_2_28_x86_64 -d .device/wheels optuna
#   .device/data/fashion-mnist/  the four *-ubyte.gz files of Debian's dataset-fashion-mnist
# Writes everything under $OUT (default ./device-out). Each stage has its own time limit so
# that a slow stage cannot starve the others; the quality stage streams partial results.
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:/tmp/fdshpo-deps"
python3 -m pip install -q --no-deps --no-index --target /tmp/fdshpo-deps .device/wheels/*.whl \
    2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

echo "== CUDA correctness: hypergradients on CUDA equal CPU (float64)"
timeout 120 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_forward.py \
    tests/test_models.py -k "cuda or wrn" 2>&1 | tail -5 | tee "$OUT/pytest-cuda.txt"

echo "== engine: LeNet-5 FDS step vs plain SGD step"
timeout 150 python3 bench/engine.py --device cuda --memory-horizon 100 \
    --out "$OUT/engine-cuda.json" 2>&1 | tee "$OUT/engine-cuda.txt"

echo "== WRN-16-1 cost and memory"
timeout 150 python3 bench/gpu.py --out "$OUT/gpu-wrn.json" 2>&1 | tee "$OUT/gpu-wrn.txt"

echo "== quality: FDS vs baselines at equal budget (full Fashion-MNIST, LeNet)"
timeout "${QUALITY_LIMIT_S:-240}" python3 bench/quality.py --device cuda \
    --data-dir .device/data/fashion-mnist --max-minutes "${QUALITY_MINUTES:-3}" \
    --out "$OUT/quality-cuda" 2>&1 | tail -40 | tee "$OUT/quality-cuda.txt"
echo "== done"
