"""The compiled pipeline: golden files for the demo and GPU configs, byte-identical on repeat,
resources in the right executors, and the YAML loads back with kfp."""

import os
from pathlib import Path

import pytest
import yaml

from fdshpo.config.experiment import load_config
from fdshpo.image import component_image
from fdshpo.pipelines import compile_pipeline

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FDSHPO_UPDATE_GOLDEN") == "1"


@pytest.fixture(autouse=True)
def default_image(monkeypatch):
    monkeypatch.delenv("FDSHPO_IMAGE", raising=False)


@pytest.mark.parametrize("name,retune", [("demo", False), ("gpu-cifar10", False),
                                         ("retune", True)])
def test_compiled_yaml_matches_golden_and_is_deterministic(tmp_path, name, retune):
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    first = compile_pipeline(config, tmp_path / "a.yaml", retune=retune).read_bytes()
    second = compile_pipeline(config, tmp_path / "b.yaml", retune=retune).read_bytes()
    assert first == second, "compiling twice must give the same bytes"
    golden = GOLDEN / f"pipeline-{name}.yaml"
    if UPDATE:
        golden.write_bytes(first)
    assert first == golden.read_bytes(), (
        f"{golden} is out of date; if the change is intended, regenerate with "
        "FDSHPO_UPDATE_GOLDEN=1 pytest tests/test_pipeline_compile.py")


def level_structure(spec: dict, k: int) -> dict:
    """What level k (1-based) of the unrolled outer loop is made of, read from the IR."""
    comps = spec["components"]
    tasks = comps[f"comp-outer-step-{k}"]["dag"]["tasks"]
    loop = tasks[f"for-loop-{k}01"]
    inner = comps[f"comp-for-loop-{k}01"]["dag"]["tasks"][f"inner-component-step-{k}"]
    outer = tasks[f"outer-component-step-{k}"]
    out = {"iterates": loop["parameterIterator"]["items"]["inputParameter"],
           "inner_retries": inner.get("retryPolicy", {}).get("maxRetryCount"),
           "collected_from": outer["inputs"]["artifacts"]["hypergradients"]["taskOutputArtifact"]
           ["producerTask"], "branches": None}
    if f"condition-branches-{k}02" in tasks:
        branch = comps[f"comp-condition-branches-{k}02"]["dag"]
        conditions = {t["taskInfo"]["name"]: t["triggerPolicy"]["condition"]
                      for t in branch["tasks"].values()}
        [oneof] = branch["outputs"]["parameters"].values()
        out["branches"] = conditions
        out["oneof"] = [s["producerSubtask"] for s in
                        oneof["valueFromOneof"]["parameterSelectors"]]
        nested = comps[f"comp-condition-{k}03"]["dag"]["tasks"]
        out["next"] = [t["componentRef"]["name"] for t in nested.values()]
    return out


@pytest.mark.parametrize("name,retune", [("demo", False), ("gpu-cifar10", False),
                                         ("retune", True)])
def test_compiled_graph_has_the_configs_structure(tmp_path, name, retune):
    """Not just determinism: max_steps levels, each a ParallelFor over the replicas whose
    hypergradients are Collected into the outer update, an If (not converged) into the next
    level and an Else that stops, combined by OneOf; the last level stops; retries and
    caching as configured; prepare -> level 1 -> retrain -> report."""
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    spec = next(yaml.safe_load_all(compile_pipeline(config, tmp_path / "p.yaml",
                                                    retune=retune).read_text()))
    n = config.outer.max_steps
    assert sum(c.startswith("comp-outer-step-") for c in spec["components"]) == n
    for k in range(1, n + 1):
        level = level_structure(spec, k)
        assert level["iterates"] == "pipelinechannel--replicas"
        assert level["collected_from"] == f"for-loop-{k}01"
        assert level["inner_retries"] == (config.resources.retries or None)
        if k == n:
            assert level["branches"] is None, "the last level has no If"
            continue
        converged = f"inputs.parameter_values['pipelinechannel--outer-component-step-{k}-" \
                    "converged']"
        assert level["branches"] == {f"continue-after-{k}": f"{converged} == 'no'",
                                     f"stop-after-{k}": f"!({converged} == 'no')"}
        assert level["oneof"] == [f"condition-{k}03", f"condition-{k}04"]
        assert level["next"] == [f"comp-outer-step-{k + 1}"]
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"prepare-component", "outer-step-1", "retrain-component",
                         "report-component"}
    assert root["outer-step-1"]["dependentTasks"] == ["prepare-component"]
    assert root["retrain-component"]["inputs"]["parameters"]["state"]["taskOutputParameter"] \
        == {"outputParameterKey": "Output", "producerTask": "outer-step-1"}
    assert root["retrain-component"].get("retryPolicy", {}).get("maxRetryCount") == (
        config.resources.retries or None)
    caching = {t.get("cachingOptions", {}).get("enableCache", False) for t in root.values()}
    assert caching == {not retune}
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["replicas"]["defaultValue"] == [str(r) for r in
                                                    range(config.outer.replicas)]


def executors(spec: dict) -> dict:
    return spec["deploymentSpec"]["executors"]


def test_gpu_config_resources_in_the_training_executors(tmp_path):
    config = load_config(ROOT / "configs" / "gpu-cifar10.yaml")
    docs = list(yaml.safe_load_all(compile_pipeline(config, tmp_path / "p.yaml").read_text()))
    spec, platform = docs
    execs = executors(spec)
    training = [n for n in execs if n.startswith(("exec-inner-component", "exec-retrain"))]
    assert len(training) == config.outer.max_steps + 1
    for name, ex in execs.items():
        container = ex["container"]
        assert container["image"] == component_image(gpu=True)
        resources = container.get("resources", {})
        if name in training:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert resources["accelerator"]["resourceCount"] == "1"
            assert resources["cpuLimit"] == 8 and resources["memoryLimit"] == 32
        else:
            assert "accelerator" not in resources
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in execs:
        assert k8s[name]["secretAsEnv"][0]["secretName"] == "fdshpo-s3-credentials"
        envs = {e["envVar"] for e in k8s[name]["secretAsEnv"][0]["keyToEnv"]}
        assert envs == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        if name in training:
            assert k8s[name]["nodeSelector"]["labels"] == {
                "cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
            assert k8s[name]["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        else:
            assert "nodeSelector" not in k8s[name] and "tolerations" not in k8s[name]
    # no credential values anywhere, only the Secret's name
    assert "AWS_SECRET_ACCESS_KEY=" not in (tmp_path / "p.yaml").read_text()


def test_demo_pipeline_is_cpu_image_without_kfp_install(tmp_path):
    config = load_config(ROOT / "configs" / "demo.yaml")
    text = compile_pipeline(config, tmp_path / "p.yaml").read_text()
    spec = next(yaml.safe_load_all(text))
    for ex in executors(spec).values():
        assert ex["container"]["image"] == component_image(gpu=False)
        assert "pip install" not in " ".join(ex["container"]["command"])
    assert spec["root"]["inputDefinitions"]["parameters"]["replicas"]["defaultValue"] == ["0"]
    assert "platforms" not in text  # no Secret, selectors or tolerations configured


def test_retune_pipeline_never_caches(tmp_path):
    config = load_config(ROOT / "configs" / "retune.yaml")
    text = compile_pipeline(config, tmp_path / "p.yaml", retune=True).read_text()
    assert "enableCache: true" not in text
    spec = next(yaml.safe_load_all(text))
    assert spec["pipelineInfo"]["name"] == "fdshpo-retune"


def test_compiled_pipeline_loads_back(tmp_path):
    from kfp import components

    config = load_config(ROOT / "configs" / "demo.yaml")
    loaded = components.load_component_from_file(str(compile_pipeline(config,
                                                                       tmp_path / "p.yaml")))
    assert loaded.name == "fdshpo-fds"
    assert set(loaded.component_spec.inputs) == {"config_json", "run_id", "replicas"}


def test_every_package_under_src_is_listed_in_pyproject():
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli, the same parser (in the dev extras there)
        import tomli as tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT / "src").parts)
             for p in (ROOT / "src").rglob("__init__.py") if "egg-info" not in str(p)}
    assert found <= listed, f"add {sorted(found - listed)} to pyproject's packages list"
    assert {"fdshpo.components", "fdshpo.pipelines"} <= listed


def test_every_task_that_touches_the_run_holds_the_jobs_lease(tmp_path):
    """prepare, each level's inner and outer tasks, retrain and report all get the job id
    (the run lease's owner, ``kfp-job:<job id>``), from the job-id placeholder."""
    config = load_config(ROOT / "configs" / "demo.yaml")
    spec = yaml.safe_load(compile_pipeline(config, tmp_path / "p.yaml").read_text())
    root = spec["root"]["dag"]["tasks"]
    assert {name: root[name]["inputs"]["parameters"]["job_id"] for name in root} == {
        name: {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}} for name in root}
    kinds = ("prepare", "inner", "outer", "retrain", "report")
    components = {name: c for name, c in spec["components"].items()
                  if name.removeprefix("comp-").split("-")[0] in kinds
                  and "executorLabel" in c}
    assert len(components) == 3 + 2 * config.outer.max_steps
    for name, component in components.items():
        assert "job_id" in component["inputDefinitions"]["parameters"], name
