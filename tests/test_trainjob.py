"""The TrainJob of a data-parallel inner run (components/trainjob.py): the manifest validates
against Kubeflow Trainer's CRD schema; the launcher's behaviour on Complete, Failed, a 409
re-attach, the deadline and SIGTERM, against a fake API (FakeTrainJobs: no cluster); the
k8s/trainer manifests render and validate.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess

import kubernetes_validate
import pytest
import yaml
from test_k8s import K8S, kubectl
from trainer_crds import errors

from fdshpo.components.trainjob import (
    Conflict,
    TrainJobFailed,
    delete_on_sigterm,
    run_trainjob,
    trainjob_manifest,
    trainjob_name,
)


class FakeTrainJobs:
    """A FAKE of the trainjobs API in one namespace, for tests: it keeps the created bodies in
    a dict, answers 409 (Conflict) for a name it has, and sets the status conditions the test
    scripts in ``script`` (one status per ``get``) instead of running anything."""

    def __init__(self, script=()):
        self.jobs, self.script, self.calls = {}, list(script), []

    def create(self, body):
        self.calls.append(("create", body["metadata"]["name"]))
        if body["metadata"]["name"] in self.jobs:
            raise Conflict(body["metadata"]["name"])
        self.jobs[body["metadata"]["name"]] = copy.deepcopy(body)
        return body

    def get(self, name):
        self.calls.append(("get", name))
        job = self.jobs[name]
        if self.script:
            job["status"] = {"conditions": self.script.pop(0)}
        return job

    def delete(self, name):
        self.calls.append(("delete", name))
        self.jobs.pop(name, None)


def done(kind, reason="", message=""):
    return [{"type": kind, "status": "True", "reason": reason, "message": message}]


def manifest(**overrides):
    options = dict(name=trainjob_name("20261207-181054-64add5", 3, 1), namespace="kubeflow",
                   image="ghcr.io/fdshpo/fdshpo:0.1.0",
                   args=["/etc/fdshpo/config.json", "state.json", "1", "-", "out.json"],
                   nodes=2, procs_per_node=4, gpus_per_node=4, cpu="8", memory="64Gi",
                   env={"FDSHPO_RUN_ID": "r"}, deadline_s=3600,
                   owner={"apiVersion": "v1", "kind": "Pod", "name": "launcher",
                          "uid": "6f1c4a52-7c1e-4a5e-9d61-2f1f0c6d8a11"})
    options.update(overrides)
    return trainjob_manifest(**options)


def test_the_name_is_a_short_dns_label_the_same_for_a_retry():
    name = trainjob_name("20261207-181054-64add5", 12, 3)
    assert name == trainjob_name("20261207-181054-64add5", 12, 3)
    assert name != trainjob_name("20261207-181054-64add5", 12, 2)
    assert name != trainjob_name("20261207-181054-64add6", 12, 3)
    assert len(name) <= 63 and name.startswith("fds-") and name.endswith("-s12-r3")


def test_the_manifest_validates_against_the_trainer_crd():
    body = manifest()
    assert errors(body) == []
    trainer = body["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"][:2] == ["-m", "fdshpo.components.ranks"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    assert body["spec"]["runtimeRef"] == {"name": "fdshpo-torch", "kind": "TrainingRuntime",
                                          "apiGroup": "trainer.kubeflow.org"}
    assert body["metadata"]["ownerReferences"][0]["name"] == "launcher"
    assert errors(manifest(gpus_per_node=0, cpu=None, memory=None, env=None, owner=None,
                           deadline_s=None)) == []


def test_the_schema_check_catches_a_wrong_field():
    body = manifest()
    body["spec"]["trainer"]["numProcsPerNode"] = 4  # a typo
    assert any("numProcsPerNode" in e for e in errors(body))
    body = manifest()
    body["spec"]["activeDeadlineSeconds"] = 0
    assert any("activeDeadlineSeconds" in e for e in errors(body))


def test_a_bad_name_is_refused():
    with pytest.raises(ValueError, match="DNS label"):
        manifest(name="Fds_Run")


def test_complete_returns_the_job():
    api = FakeTrainJobs([[], done("Created"), done("Complete")])
    job, attached = run_trainjob(api, manifest(), deadline_s=60, poll_s=0, sleep=lambda s: None)
    assert not attached and job["status"]["conditions"][0]["type"] == "Complete"
    assert [c for c, _ in api.calls] == ["create", "get", "get", "get"]


def test_failed_raises_with_the_reason():
    api = FakeTrainJobs([[], done("Failed", "BackoffLimitExceeded", "rank 1 exited 1")])
    with pytest.raises(TrainJobFailed, match="BackoffLimitExceeded: rank 1 exited 1"):
        run_trainjob(api, manifest(), deadline_s=60, poll_s=0, sleep=lambda s: None)


def test_a_retry_reattaches_on_409_instead_of_starting_a_second_job():
    api = FakeTrainJobs()
    body = manifest()
    api.create(body)  # the first launcher's job
    api.script = [done("Complete")]
    job, attached = run_trainjob(api, manifest(), deadline_s=60, poll_s=0,
                                 sleep=lambda s: None)
    assert attached and list(api.jobs) == [body["metadata"]["name"]]


def test_the_deadline_deletes_the_job():
    now = [0.0]
    api = FakeTrainJobs([[]] * 10)
    with pytest.raises(TrainJobFailed, match="did not finish within 30s"):
        run_trainjob(api, manifest(), deadline_s=30, poll_s=10, clock=lambda: now[0],
                     sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert api.calls[-1][0] == "delete" and not api.jobs


def test_sigterm_deletes_the_job():
    api = FakeTrainJobs()
    body = manifest()
    name = body["metadata"]["name"]

    def sleep(_):
        os.kill(os.getpid(), signal.SIGTERM)

    restore = delete_on_sigterm(api, name)
    try:
        with pytest.raises(SystemExit) as exit_:
            run_trainjob(api, body, deadline_s=60, poll_s=1, sleep=sleep)
    finally:
        restore()
    assert exit_.value.code == 143 and ("delete", name) in api.calls and not api.jobs


def test_the_trainer_manifests_render_and_validate():
    out = subprocess.run([kubectl(), "kustomize", str(K8S / "trainer")], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["NetworkPolicy", "Role", "RoleBinding", "TrainingRuntime"]
    for doc in docs:
        if doc["kind"] == "TrainingRuntime":
            assert errors(doc) == []
            pod = (doc["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
                   ["template"])
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
            assert pod["spec"]["containers"][0]["name"] == "node"
            labels = pod["metadata"]["labels"]
            policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
            assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        else:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
                              "verbs": ["create", "get", "delete"]}]


def demo_config(tmp_path, **resources):
    import dataclasses
    from pathlib import Path

    from fdshpo.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    store = dataclasses.replace(config.store, uri=str(tmp_path / "store"))
    return dataclasses.replace(config, store=store,
                               resources=dataclasses.replace(config.resources, **resources))


def compiled_tasks(config, tmp_path, **options):
    from kfp import compiler

    from fdshpo.pipelines.fds import build_pipeline

    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build_pipeline(config, **options), str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


@pytest.mark.parametrize("procs,launcher", [(1, False), (2, True)])
def test_the_compiled_pipeline_launches_trainjobs_only_for_several_ranks(tmp_path, procs,
                                                                       launcher):
    spec, platform = compiled_tasks(demo_config(tmp_path, procs_per_node=procs), tmp_path)
    components = set(spec["components"])
    assert ("comp-launcher-component-step-1" in components) == launcher
    assert ("comp-inner-component-step-1" in components) != launcher
    tasks = spec["components"]["comp-for-loop-101"]["dag"]["tasks"]
    (task,) = tasks.values()
    assert task["retryPolicy"]["maxRetryCount"] == 2
    executor = task["componentRef"]["name"].replace("comp-", "exec-")
    container = spec["deploymentSpec"]["executors"][executor]["container"]
    assert "accelerator" not in (container.get("resources") or {})


def test_the_local_runner_keeps_the_inner_task_for_several_ranks(tmp_path):
    spec, _ = compiled_tasks(demo_config(tmp_path, procs_per_node=2), tmp_path,
                             launcher=False)
    assert "comp-inner-component-step-1" in spec["components"]


def test_launch_step_reads_the_record_rank_0_wrote(tmp_path):
    """launch_step against FakeTrainJobs whose create plays rank 0 (writes the record)."""
    import json

    from fdshpo.components.common import open_run_store
    from fdshpo.components.ranks import record_key
    from fdshpo.components.trainjob import launch_step

    config = demo_config(tmp_path, procs_per_node=2)
    run_id = "20261207-181054-64add5"
    state_json = json.dumps({"next_outer_step": 2})
    record = {"outer_step": 2, "replica": 1, "val_loss": 0.5, "distributed": {"world_size": 2}}

    class RankZero(FakeTrainJobs):
        def create(self, body):
            env = {e["name"]: e.get("value") for e in body["spec"]["trainer"]["env"]}
            assert json.loads(env["FDSHPO_STATE_JSON"]) == {"next_outer_step": 2}
            # rank 0 writes to the run as the launcher's own lease owner
            assert body["spec"]["trainer"]["args"][-4:] == ["-", f"store:{run_id}", "--owner",
                                                            "kfp-job:test"]
            open_run_store(config).put_json(record_key(config, run_id, 2, 1), record)
            return super().create(body)

    api = RankZero([done("Complete")])
    got = launch_step(config, run_id, state_json, 1, "kfp-job:test", api=api,
                      namespace="kubeflow", poll_s=0)
    assert got == record
    assert api.calls[0] == ("create", trainjob_name(run_id, 2, 1))
