"""A replica's data-parallel inner run as a Kubeflow Trainer ``TrainJob``, and the launcher that
starts one and waits for it.

:func:`trainjob_manifest` builds the ``trainer.kubeflow.org/v1alpha1`` ``TrainJob`` as a plain
dict (a pure function): the runtime ``fdshpo-torch`` (``k8s/trainer/``, a namespaced
``TrainingRuntime`` whose container ``node`` gets torchrun's ``PET_*`` variables), ``numNodes``
and ``numProcPerNode`` from ``resources.nodes`` / ``procs_per_node``, the command
``torchrun -m fdshpo.components.ranks ...`` (:mod:`fdshpo.components.ranks`), GPUs per node,
``activeDeadlineSeconds``, and an owner reference to the launcher's pod, so deleting the pipeline
run's pod deletes the job. Its name is :func:`trainjob_name`: short and deterministic per (run,
outer step, replica), so a retried launcher finds the job it started (HTTP 409 on create) and
attaches to it instead of starting a second one.

:func:`run_trainjob` creates (or re-attaches), polls ``.status.conditions`` until ``Complete``
(returns) or ``Failed`` (:class:`TrainJobFailed`), deletes the job and raises
:class:`TrainJobFailed` when the deadline passes, and deletes it when the launcher is cancelled
(SIGTERM, :func:`delete_on_sigterm`). The API is anything with ``create``, ``get`` and
``delete`` (:class:`KubernetesTrainJobs` wraps the Kubernetes client's ``CustomObjectsApi``,
which needs only a namespaced Role on ``trainjobs``).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
RUNTIME = "fdshpo-torch"
#: Seconds between two reads of the job's status.
POLL_S = 10.0


class TrainJobFailed(RuntimeError):
    """The TrainJob failed, or did not finish before its deadline (the message says which)."""


class Conflict(Exception):
    """The API's answer to creating an object whose name exists (HTTP 409)."""


class TrainJobs(Protocol):
    """The three calls the launcher makes on ``trainjobs`` in one namespace."""

    def create(self, body: dict) -> dict: ...  # raises Conflict when the name exists
    def get(self, name: str) -> dict: ...
    def delete(self, name: str) -> None: ...


def trainjob_name(run_id: str, outer_step: int, replica: int) -> str:
    """``fds-<10 hex of sha256(run id)>-s<outer step>-r<replica>``: a DNS label (<= 63
    characters) that is the same every time the launcher of that replica runs."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"fds-{digest}-s{int(outer_step)}-r{int(replica)}"


def trainjob_manifest(
    name: str,
    namespace: str,
    image: str,
    args: list[str],
    nodes: int,
    procs_per_node: int,
    gpus_per_node: int = 0,
    gpu_resource: str = "nvidia.com/gpu",
    cpu: str | None = None,
    memory: str | None = None,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, tuple[str, str]] | None = None,
    deadline_s: int | None = None,
    owner: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    runtime: str = RUNTIME,
) -> dict:
    """The TrainJob of one replica's data-parallel inner run (module docstring).

    ``args`` follow ``torchrun -m fdshpo.components.ranks``; ``secret_env``: variable ->
    (Secret name, key); ``owner``: ``{"apiVersion", "kind", "name", "uid"}`` of the object that
    owns the job (the launcher's pod).
    ValueError for a name that is not a DNS label or non-positive counts.
    """
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ValueError(f"a TrainJob name must be a DNS label of at most 63 characters, "
                         f"got {name!r}")
    if nodes < 1 or procs_per_node < 1:
        raise ValueError(f"nodes and procs_per_node must be at least 1, got {nodes}, "
                         f"{procs_per_node}")
    resources: dict[str, dict[str, Any]] = {}
    if gpus_per_node:
        resources = {"limits": {gpu_resource: gpus_per_node}}
    for key, value in (("cpu", cpu), ("memory", memory)):
        if value:
            resources.setdefault("requests", {})[key] = value
            resources.setdefault("limits", {})[key] = value
    trainer: dict[str, Any] = {
        "image": image,
        "command": ["torchrun"],
        "args": ["-m", "fdshpo.components.ranks", *args],
        "numNodes": nodes,
        "numProcPerNode": procs_per_node,
    }
    if resources:
        trainer["resourcesPerNode"] = resources
    variables = [{"name": k, "value": v} for k, v in sorted((env or {}).items())]
    variables += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                  for k, (secret, key) in sorted((secret_env or {}).items())]
    if variables:
        trainer["env"] = variables
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {"app.kubernetes.io/part-of": "fdshpo",
                                           **(labels or {})}}
    if owner:
        metadata["ownerReferences"] = [{**owner, "controller": False,
                                        "blockOwnerDeletion": False}]
    spec: dict[str, Any] = {"runtimeRef": {"name": runtime, "kind": "TrainingRuntime",
                                           "apiGroup": GROUP},
                            "trainer": trainer}
    if deadline_s:
        spec["activeDeadlineSeconds"] = int(deadline_s)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata,
            "spec": spec}


def condition(job: Mapping, kind: str) -> Mapping | None:
    """The job's status condition of type ``kind`` when its status is "True"."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and str(c.get("status")) == "True":
            return c
    return None


def run_trainjob(api: TrainJobs, body: dict, deadline_s: float, poll_s: float = POLL_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> tuple[dict, bool]:
    """Create ``body`` (or attach to the job of that name, on a conflict) and wait until it
    completes: returns (the job, whether it was attached to rather than created).

    Raises:
        TrainJobFailed: its ``Failed`` condition (with its reason and message), or
            ``deadline_s`` passed first (the job is deleted then).
    """
    name = body["metadata"]["name"]
    try:
        api.create(body)
        attached = False
    except Conflict:
        attached = True
    ends = clock() + deadline_s
    while True:
        job = api.get(name)
        if condition(job, "Complete"):
            return job, attached
        failed = condition(job, "Failed")
        if failed:
            raise TrainJobFailed(f"TrainJob {name} failed: {failed.get('reason', '')}: "
                                 f"{failed.get('message', '')}".rstrip(": "))
        if clock() >= ends:
            api.delete(name)
            raise TrainJobFailed(f"TrainJob {name} did not finish within {deadline_s:.0f}s; "
                                 "it was deleted")
        sleep(poll_s)


def delete_on_sigterm(api: TrainJobs, name: str) -> Callable[[], None]:
    """Install a SIGTERM handler that deletes the job, then exits (status 143); returns a
    function that restores the previous handler."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        try:
            api.delete(name)
        finally:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


class KubernetesTrainJobs:
    """:class:`TrainJobs` over the Kubernetes client's ``CustomObjectsApi`` in ``namespace``
    (in-cluster credentials by default)."""

    def __init__(self, namespace: str, custom_objects=None) -> None:
        if custom_objects is None:
            from kubernetes import client, config

            config.load_incluster_config()
            custom_objects = client.CustomObjectsApi()
        self.namespace, self.objects = namespace, custom_objects

    def create(self, body: dict) -> dict:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.objects.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as error:
            if error.status == 409:
                raise Conflict(body["metadata"]["name"]) from error
            raise

    def get(self, name: str) -> dict:
        return self.objects.get_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                         PLURAL, name)

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.objects.delete_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                         PLURAL, name,
                                                         propagation_policy="Foreground")
        except ApiException as error:
            if error.status != 404:
                raise


def launcher_owner() -> dict | None:
    """The owner reference of the launcher's pod, from the ``KFP_POD_NAME``/``KFP_POD_UID``
    variables KFP sets in a task's pod (None outside KFP)."""
    name, uid = os.environ.get("KFP_POD_NAME"), os.environ.get("KFP_POD_UID")
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid} if name and uid else None


def current_namespace() -> str:
    """The namespace of this pod (its service account's), else ``kubeflow``."""
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    return open(path).read().strip() if os.path.exists(path) else "kubeflow"


def launch_step(config, run_id: str, state_json: str, replica: int, owner: str,
                api: TrainJobs | None = None, namespace: str | None = None,
                deadline_s: float = 24 * 3600, poll_s: float = POLL_S) -> dict:
    """The ``inner`` component's record of one replica, computed by a TrainJob of
    ``resources.nodes`` x ``procs_per_node`` ranks: holds the run's lease as ``owner`` while it
    waits (rank 0 joins it with ``--owner``: its inner checkpoints, result and record are
    writes fenced by that lease), then reads the record rank 0 wrote to the store
    (:func:`fdshpo.components.ranks.record_key`)."""
    import json as json_

    from fdshpo.components.common import held_recorder, open_run_store, recorded_config
    from fdshpo.components.ranks import record_key
    from fdshpo.config.kube import SECRET_ENV
    from fdshpo.image import component_image

    res = config.resources
    outer_step = int(json_.loads(state_json).get("next_outer_step", 0))
    rec = held_recorder(config, run_id, owner)
    namespace = namespace or current_namespace()
    api = api or KubernetesTrainJobs(namespace)
    name = trainjob_name(run_id, outer_step, replica)
    body = trainjob_manifest(
        name, namespace, res.image or component_image(gpu=res.gpus > 0),
        ["env:FDSHPO_CONFIG_JSON", "env:FDSHPO_STATE_JSON", str(int(replica)), "-",
         f"store:{run_id}", "--owner", owner],
        res.nodes, res.procs_per_node, res.gpus, res.gpu_type or "nvidia.com/gpu", res.cpu,
        res.memory, env={"FDSHPO_CONFIG_JSON": json_.dumps(recorded_config(config)),
                         "FDSHPO_STATE_JSON": state_json},
        secret_env={var: (res.credentials_secret, key) for key, var in SECRET_ENV.items()}
        if res.credentials_secret else None,
        deadline_s=int(deadline_s), owner=launcher_owner(),
        labels={"fdshpo.io/run": run_id[:63]})
    restore = delete_on_sigterm(api, name)
    try:
        run_trainjob(api, body, deadline_s, poll_s)
    finally:
        restore()
    del rec  # the lease was held while the job ran
    return open_run_store(config).get_json(record_key(config, run_id, outer_step, replica))
