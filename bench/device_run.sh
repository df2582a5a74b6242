#!/usr/bin/env bash
# One prepared GPU session (about 10 minutes of an H200 in all: limits 180 + 380 s, within one
# 600 s device command): both engines' costs on WRN-16-1 (bench/gpu.py: plain, forward-engine
# and reverse-engine steps, tangent cost, peak memory; ENGINE_LIMIT_S, default 180; ENGINE=0
# skips it; ~2 minutes on an H200 is an estimate: the forward-only bench/gpu.py took 115 s there,
# and the reverse-engine timings add to it), then a slice of the GPU quality benchmark,
# configs/bench-gpu-fmnist-wrn.yaml (the paper's figure-4 protocol on full Fashion-MNIST).
#
# The whole protocol is ~10 GPU-hours (a final job is 11,700 WRN-16-1 steps, ~94 s; 8 methods x
# 3 seeds x 16 runs), so a session runs what fits: the comparison at QUALITY_ARGS (default: seed
# 0, N = 2, FDS, linear, then hyperband: each ~2 final jobs of search + 1 of retraining) until
# QUALITY_LIMIT_S (default 380); $OUT/quality-gpu/partial.jsonl keeps every finished (seed,
# method), and its header line gives the measured plain step time. PREDICT=1 first runs
# `bench/quality.py --predict` (each method at its smallest budget and one retrain: per-method
# wall/modelled ratios and the predicted time of the whole protocol; ~7 minutes on an H200, so
# off by default).
#
# The GPU machine's python3 has torch, numpy and matplotlib but no network. Carry, in the
# git-ignored folder .device/ of the checkout:
#   .device/wheels/                 optuna and its pure deps (PyYAML included) for that python:
#       pip download --only-binary=:all: --python-version 3.12 \
#           --platform manylinux_2_28_x86_64 -d .device/wheels optuna
#   .device/data/FashionMNIST/raw/  the four *-ubyte.gz files of Debian's dataset-fashion-mnist
# To continue an earlier session's comparison, carry its partial.jsonl as
# .device/quality-gpu/partial.jsonl.
#
# DRY_RUN=1 runs the same stages on this machine's CPU with the current python environment
# (tests/test_bench_quality.py does, with a tiny config).
set -uo pipefail
OUT=${OUT:-device-out}
PYTHON=${PYTHON:-python3}
CONFIG=${QUALITY_CONFIG:-configs/bench-gpu-fmnist-wrn.yaml}
QUALITY_ARGS=${QUALITY_ARGS:---device cuda --seeds 0 --budget-runs 2 --methods fds,linear,hyperband}
ENGINE_ARGS=${ENGINE_ARGS:---device cuda}
PREDICT_ARGS=${PREDICT_ARGS:---device cuda --seeds 0 1 2}
mkdir -p "$OUT/quality-gpu"
if [ -z "${DRY_RUN:-}" ]; then
    export PYTHONPATH="$PWD/src:/tmp/fdshpo-deps"
    export FDSHPO_DATA_ROOT="$PWD/.device/data"
    "$PYTHON" -m pip install -q --no-deps --no-index --target /tmp/fdshpo-deps \
        .device/wheels/*.whl 2>&1 | tail -2
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    "$PYTHON" -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
fi
if [ -f .device/quality-gpu/partial.jsonl ]; then
    cp .device/quality-gpu/partial.jsonl "$OUT/quality-gpu/partial.jsonl"
fi

if [ -n "${PREDICT:-}" ]; then
    echo "== predicted wall time of the whole protocol (measured per method, this process)"
    # shellcheck disable=SC2086  # the argument lists are word-split on purpose
    timeout "${PREDICT_LIMIT_S:-480}" "$PYTHON" bench/quality.py "$CONFIG" --predict \
        $PREDICT_ARGS 2>&1 | tee "$OUT/predict.txt"
fi

if [ "${ENGINE:-1}" != 0 ]; then
    echo "== engine costs: bench/gpu.py $ENGINE_ARGS"
    # shellcheck disable=SC2086
    timeout "${ENGINE_LIMIT_S:-180}" "$PYTHON" bench/gpu.py $ENGINE_ARGS \
        --out "$OUT/gpu-engine.json" 2>&1 | tail -30 | tee "$OUT/gpu-engine.txt"
fi

echo "== quality: a slice of the GPU benchmark ($QUALITY_ARGS)"
# shellcheck disable=SC2086
timeout "${QUALITY_LIMIT_S:-380}" "$PYTHON" bench/quality.py "$CONFIG" \
    --out "$OUT/quality-gpu" $QUALITY_ARGS 2>&1 | tail -60 | tee "$OUT/quality-gpu.txt"
echo "== done"
