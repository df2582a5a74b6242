#!/usr/bin/env bash
# One prepared GPU session (about 10 minutes of an H200 in all: limits 180 + 60 + 340 s, within
# one 600 s device command): both engines' costs on WRN-16-1 (bench/gpu.py: plain, forward-engine
# and reverse-engine steps, tangent cost, peak memory; ENGINE_LIMIT_S, default 180; ENGINE=0
# skips it; ~2 minutes on an H200 is an estimate: the forward-only bench/gpu.py took 115 s there,
# and the reverse-engine timings add to it), then the data-parallel path on NCCL (bench/ranks.py
# at RANKS_ARGS, default 1 NCCL rank on GPU 0 against one process, both engines; RANKS_LIMIT_S,
# default 60; RANKS=0 skips it; without CUDA the stage is skipped with a line saying so, except
# in a dry run, which runs RANKS_ARGS as given: gloo on the CPU), then a slice of the GPU quality
# benchmark, configs/bench-gpu-fmnist-wrn.yaml (the paper's figure-4 protocol on full
# Fashion-MNIST).
#
# The whole protocol is ~10 GPU-hours (a final job is 11,700 WRN-16-1 steps, ~94 s; 8 methods x
# 3 seeds x 16 runs), so a session runs what fits: the comparison at QUALITY_ARGS (default: seed
# 0, N = 2, FDS, linear, then hyperband: each ~2 final jobs of search + 1 of retraining) until
# QUALITY_LIMIT_S (default 340); $OUT/quality-gpu/partial.jsonl keeps every finished (seed,
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
#
# Exit status: 0 when every stage succeeded; 1 when any failed or hit its time limit, with a
# "== FAILED stage NAME: exit status N" or "NAME: timed out after S s" line for each on stderr.
set -uo pipefail
OUT=${OUT:-device-out}
PYTHON=${PYTHON:-python3}
CONFIG=${QUALITY_CONFIG:-configs/bench-gpu-fmnist-wrn.yaml}
QUALITY_ARGS=${QUALITY_ARGS:---device cuda --seeds 0 --budget-runs 2 --methods fds,linear,hyperband}
ENGINE_ARGS=${ENGINE_ARGS:---device cuda}
RANKS_ARGS=${RANKS_ARGS:---ranks 1 --backend nccl --device cuda --horizon 20 --repeats 1}
PREDICT_ARGS=${PREDICT_ARGS:---device cuda --seeds 0 1 2}
mkdir -p "$OUT/quality-gpu"
FAILED=()

# run_stage NAME LIMIT_S LINES FILE COMMAND...: COMMAND under `timeout LIMIT_S`, its output's
# last LINES lines (tail -n LINES; +1: all) shown and kept in FILE. A stage that fails or times
# out is named at once on stderr; the later stages still run, and the script then exits 1
# naming every failed stage (a session's results are never silently partial).
run_stage() {
    local name=$1 limit=$2 lines=$3 file=$4 status
    shift 4
    timeout "$limit" "$@" 2>&1 | tail -n "$lines" | tee "$file"
    status=${PIPESTATUS[0]}
    if [ "$status" = 124 ]; then
        FAILED+=("$name: timed out after $limit s")
    elif [ "$status" != 0 ]; then
        FAILED+=("$name: exit status $status")
    else
        return 0
    fi
    echo "== FAILED stage ${FAILED[-1]} (output in $file)" >&2
}

if [ -z "${DRY_RUN:-}" ]; then
    export PYTHONPATH="$PWD/src:/tmp/fdshpo-deps"
    export FDSHPO_DATA_ROOT="$PWD/.device/data"
    run_stage "install (optuna wheels)" 120 2 "$OUT/install.txt" "$PYTHON" -m pip install -q \
        --no-deps --no-index --target /tmp/fdshpo-deps .device/wheels/*.whl
    run_stage "gpu info (nvidia-smi)" 30 +1 "$OUT/gpu.txt" \
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PYTHON" -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
fi
if [ -f .device/quality-gpu/partial.jsonl ]; then
    cp .device/quality-gpu/partial.jsonl "$OUT/quality-gpu/partial.jsonl"
fi

if [ -n "${PREDICT:-}" ]; then
    echo "== predicted wall time of the whole protocol (measured per method, this process)"
    # shellcheck disable=SC2086  # the argument lists are word-split on purpose
    run_stage "prediction (bench/quality.py --predict)" "${PREDICT_LIMIT_S:-480}" +1 \
        "$OUT/predict.txt" "$PYTHON" bench/quality.py "$CONFIG" --predict $PREDICT_ARGS
fi

if [ "${ENGINE:-1}" != 0 ]; then
    echo "== engine costs: bench/gpu.py $ENGINE_ARGS"
    # shellcheck disable=SC2086
    run_stage "engine costs (bench/gpu.py)" "${ENGINE_LIMIT_S:-180}" 30 "$OUT/gpu-engine.txt" \
        "$PYTHON" bench/gpu.py $ENGINE_ARGS --out "$OUT/gpu-engine.json"
fi

if [ "${RANKS:-1}" != 0 ]; then
    if [ -n "${DRY_RUN:-}" ] || "$PYTHON" -c \
            "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "== data-parallel ranks: bench/ranks.py $RANKS_ARGS"
        # shellcheck disable=SC2086
        run_stage "data-parallel ranks (bench/ranks.py)" "${RANKS_LIMIT_S:-60}" 40 \
            "$OUT/ranks.txt" "$PYTHON" bench/ranks.py $RANKS_ARGS --out "$OUT/ranks.json"
    else
        echo "== data-parallel ranks: skipped: CUDA is not available here, so no NCCL rank" \
            "(bench/ranks.py --backend gloo --device cpu measures the CPU path)" \
            | tee "$OUT/ranks.txt"
    fi
fi

echo "== quality: a slice of the GPU benchmark ($QUALITY_ARGS)"
# shellcheck disable=SC2086
run_stage "quality slice (bench/quality.py)" "${QUALITY_LIMIT_S:-340}" 60 \
    "$OUT/quality-gpu.txt" "$PYTHON" bench/quality.py "$CONFIG" --out "$OUT/quality-gpu" \
    $QUALITY_ARGS
if [ "${#FAILED[@]}" != 0 ]; then
    printf '== FAILED stage %s\n' "${FAILED[@]}" >&2
    exit 1
fi
echo "== done"
