"""bench/device_run.sh and bench/quality.py, dry-run on this CPU with a tiny config: the same
stages the GPU session runs (engine costs, prediction, the data-parallel ranks, a slice of the
comparison, the recorded results file)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """\
experiment: tiny-bench
data: {dataset: fashion-mnist-sample, batch_size: 32, val_fraction: 0.1}
network: mlp
schedule:
  horizon: 10
  segments: {lr: 2, momentum: 1, weight_decay: 1}
retrain: {horizon: 80}
compare: {methods: [linear, fds], seeds: [0], budget_runs: [2]}
"""


def test_device_run_dry_run_predicts_compares_and_records(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    out, record = tmp_path / "device-out", tmp_path / "results" / "tiny"
    env = {**os.environ, "DRY_RUN": "1", "PREDICT": "1", "PYTHON": sys.executable,
           "OUT": str(out), "QUALITY_CONFIG": str(config), "PREDICT_ARGS": "--device cpu",
           "QUALITY_ARGS": f"--device cpu --record {record}", "FDSHPO_TORCH_THREADS": "1",
           "ENGINE_ARGS": "--device cpu --network lenet --batch-size 4 --horizon 7 --repeats 1",
           "RANKS_ARGS": "--ranks 1 --backend gloo --device cpu --batch 8 --horizon 7 "
                         "--repeats 1"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "device_run.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    engines = json.loads((out / "gpu-engine.json").read_text())  # both engines, priced
    assert engines["fds_step_ms"] > 0 and engines["reverse_step_ms"] > 0
    assert engines["auto_engine"] in ("forward", "reverse") and engines["model"].startswith("lenet")
    ranks = json.loads((out / "ranks.json").read_text())  # the NCCL stage's CPU form
    assert (ranks["ranks"], ranks["backend"], ranks["device"]) == (1, "gloo", "cpu")
    for engine in ("forward", "reverse"):
        row = ranks["rows"][engine]
        assert row["ranks_plain_steps"][0] > 0 and row["collectives_per_step"] > 0
    assert "== data-parallel ranks: bench/ranks.py --ranks 1" in proc.stdout
    predicted = (out / "predict.txt").read_text()
    assert "    linear: wall/modelled" in predicted and "       fds: wall/modelled" in predicted
    assert "predicted: searches" in predicted
    report = (out / "quality-gpu" / "quality.md").read_text()
    assert "- command: `python bench/quality.py " in report and "- machine: " in report
    assert "- date: " in report and "experiment: tiny-bench" in report  # the config, verbatim
    assert "| linear |" in report and "| fds |" in report
    assert record.with_suffix(".md").read_text().count("](tiny-") == 2  # the copied plots
    summary = json.loads(record.parent.joinpath("tiny-summary.json").read_text())
    assert {s["method"] for s in summary["summary"]} == {"linear", "fds"}
    assert summary["command"].startswith("python bench/quality.py")
    for name in ("tiny-accuracy.png", "tiny-schedules.png"):
        assert record.parent.joinpath(name).read_bytes()[:4] == b"\x89PNG"


FAKE_PYTHON = """#!/usr/bin/env bash
case "$*" in
    *bench/gpu.py*) echo "engine bench broke"; exit 3 ;;
    *--predict*) echo "predicted: searches 1 s"; exit 0 ;;
    *bench/quality.py*) exec sleep 30 ;;
esac
"""


def test_device_run_fails_naming_each_stage_that_failed_or_timed_out(tmp_path):
    """A stage that fails or hits its limit makes the script fail with the stage's name (it
    used to exit 0 and leave a missing result file for a later reader to trip on)."""
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    out = tmp_path / "device-out"
    env = {**os.environ, "DRY_RUN": "1", "PREDICT": "1", "PYTHON": str(python),
           "OUT": str(out), "QUALITY_LIMIT_S": "1"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "device_run.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("== FAILED")]
    assert failed[-2:] == ["== FAILED stage engine costs (bench/gpu.py): exit status 3",
                           "== FAILED stage quality slice (bench/quality.py): timed out after "
                           "1 s"], proc.stderr
    assert f"(output in {out}/gpu-engine.txt)" in failed[0]
    assert "engine bench broke" in (out / "gpu-engine.txt").read_text()
    assert "prediction" not in proc.stderr and "== done" not in proc.stdout


NO_CUDA_PYTHON = """#!/usr/bin/env bash
case "$*" in
    *cuda.is_available*) exit 1 ;;
    *bench/ranks.py*) echo "bench/ranks.py ran"; exit 0 ;;
esac
"""


def test_device_run_skips_the_nccl_stage_without_cuda_saying_so(tmp_path):
    """Not a dry run, on a machine without CUDA: the data-parallel stage is skipped with a line
    that says why (the other stages' fake python succeeds; nvidia-smi may be missing here)."""
    python = tmp_path / "python"
    python.write_text(NO_CUDA_PYTHON)
    python.chmod(0o755)
    out = tmp_path / "device-out"
    env = {**os.environ, "PYTHON": str(python), "OUT": str(out), "ENGINE": "0"}
    env.pop("DRY_RUN", None)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "device_run.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    skipped = "== data-parallel ranks: skipped: CUDA is not available here, so no NCCL rank"
    assert skipped in proc.stdout, proc.stdout + proc.stderr
    assert skipped in (out / "ranks.txt").read_text()
    assert "bench/ranks.py ran" not in proc.stdout
    assert "data-parallel ranks" not in proc.stderr  # skipped is not failed
