"""The README's first screen states what bench/results holds, says how to start, and its
walkthrough uses the names k8s/ creates; the Makefile and README agree on durations."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: the first screen's columns, as bench/results names the methods
METHODS = ("fds", "linear", "cosine", "hyperband", "hd", "random")
FIRST_SCREEN = README[:README.index("## From your dataset")]
WALKTHROUGH = README[README.index("## From your dataset"):README.index("## Commands, demo")]


def test_the_first_screen_says_what_why_what_it_costs_and_how_to_start():
    assert len(FIRST_SCREEN.splitlines()) <= 45
    for text in ("**When to pick it.**", "**What it costs.**", "make demo", "make test"):
        assert text in FIRST_SCREEN
    results = (ROOT / "bench/results/quality-cpu-fmnist-mlp.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", FIRST_SCREEN, re.MULTILINE)
    assert [budget for budget, _ in rows] == ["2", "4", "16"]
    for budget, cells in rows:
        section = results[results.index(f"Budget: {budget} final-job runs"):]
        section = section[:section.index("\n\n", section.index("|"))]
        figures = re.findall(r"\d+\.\d+", cells)
        for method, figure in zip(METHODS, figures, strict=True):
            assert re.search(rf"^\| {method} \| \**{figure} ±", section, re.MULTILINE), (
                budget, method, figure)
    engine = (ROOT / "bench/results/gpu-h200.md").read_text()
    assert "8.7 on an H200" in FIRST_SCREEN and "| 8.68 |" in engine


def test_the_walkthrough_uses_the_names_k8s_creates():
    store = yaml.safe_load((ROOT / "k8s/base/configmap-store.yaml").read_text())["data"]
    assert store["AWS_ENDPOINT_URL"] in WALKTHROUGH            # the in-cluster MinIO
    assert f"{store['FDSHPO_STORE']}/experiments" in WALKTHROUGH
    assert "fdshpo-s3-credentials" in (ROOT / "k8s/kfp-launcher/kustomization.yaml").read_text() \
        or "fdshpo-s3-credentials" in (ROOT / "k8s/kfp-launcher/configmap-kfp-launcher.yaml"
                                       ).read_text()
    assert "credentials_secret: fdshpo-s3-credentials" in WALKTHROUGH
    assert store["KFP_HOST"].endswith(":8888") and "svc/ml-pipeline 8888:8888" in WALKTHROUGH
    cronjob = yaml.safe_load((ROOT / "k8s/base/cronjob-retune.yaml").read_text())
    assert cronjob["metadata"]["name"] == "fdshpo-retune" and "`fdshpo-retune`" in WALKTHROUGH
    for folder in ("k8s/namespace", "k8s/store-volume", "k8s/overlays/dev", "k8s/kfp-launcher"):
        assert f"`{folder}`" in WALKTHROUGH and (ROOT / folder / "kustomization.yaml").exists()


def test_the_makefile_and_readme_agree_on_the_quality_benchmarks_duration():
    makefile = (ROOT / "Makefile").read_text()
    comment = makefile[:makefile.index("bench-quality: install")]
    comment = " ".join(comment[comment.rindex("# FDS vs every baseline"):].replace("#", " ")
                       .split())
    assert "about an hour on 2 CPU cores" in comment
    assert "`make bench-quality` the quality benchmark (about an hour on 2 CPU cores)" in " ".join(
        README.split())
    assert "wall time 57.9 min" in (ROOT / "bench/results/quality-cpu-fmnist-mlp.md").read_text()
