"""The FDS pipeline: KFP has no while loop, so the outer loop is unrolled into levels.

Level k (a nested pipeline, built bottom-up in Python)::

    ParallelFor(replicas):  inner(state_k, replica)           -> hypergradients artifact
    outer(state_k, Collected(hypergradients))                  -> state_{k+1}, converged
    If converged == "no":   level k+1(state_{k+1})             (the last level has no If)
    Else:                   carry(state_{k+1})
    returns OneOf(level k+1's state, carry's state)

The top pipeline: prepare -> level 0 -> retrain -> report, so retraining always gets the state
of whichever level ran last. The config travels as one JSON string parameter (its default is
the compiled config); ``replicas`` is a list parameter (["0" .. "R-1"]); the dataset is passed down
from prepare as an artifact (dsl.OneOf is used for parameters only). The graph is compiled for
one config: prepare gets the compiled graph's settings (levels, replicas, task resources) as a
constant and refuses a run whose ``config_json`` or ``replicas`` disagree, naming the keys.
Resources (GPUs, CPU/memory, node selector, tolerations, credentials Secret as env, retries)
come from ``config.resources``; a retune pipeline disables caching on every task. Every task that
touches the run's records (prepare, inner, outer, retrain, report) gets the job id and holds the
run's lease as ``kfp-job:<job id>`` (:func:`fdshpo.components.common.job_owner`), so the job
holds it from prepare to report and the writes of any other job are refused.
"""


import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input

from fdshpo.components.common import graph_settings
from fdshpo.components.inner import inner_component, launcher_component
from fdshpo.components.outer import carry_component, outer_component
from fdshpo.components.prepare import prepare_component
from fdshpo.components.report import report_component
from fdshpo.components.retrain import retrain_component
from fdshpo.config.experiment import ExperimentConfig
from fdshpo.config.kube import SECRET_ENV

PIPELINES = ("fds", "retune")


@dataclass(frozen=True)
class Components:
    """The components, built with one image."""

    prepare: Callable
    inner: Callable
    outer: Callable
    carry: Callable
    retrain: Callable
    report: Callable
    launcher: Callable

    @classmethod
    def with_image(cls, image: str, suffix: str = "") -> "Components":
        """Components named ``<function>[-suffix]`` (each level gets its own names, so the
        compiler never has to deduplicate names, which it does in a varying order)."""

        def make(func):
            component = dsl.component(func=func, base_image=image, install_kfp_package=False)
            if suffix:
                component.name = component.component_spec.name = (
                    f"{component.component_spec.name}-{suffix}")
            return component

        return cls(make(prepare_component), make(inner_component), make(outer_component),
                   make(carry_component), make(retrain_component), make(report_component),
                   make(launcher_component))


def image_for(config: ExperimentConfig) -> str:
    from fdshpo.image import component_image

    return config.resources.image or component_image(gpu=config.resources.gpus > 0)


class TaskSettings:
    """Applies ``config.resources`` and caching to tasks (kfp and kfp-kubernetes)."""

    def __init__(self, config: ExperimentConfig, caching: bool, launcher: bool = False) -> None:
        self.resources = config.resources
        self.caching = caching
        self.launcher = launcher

    def launching(self, task):
        """The launcher of a TrainJob: no GPU (it waits), retried (a retry re-attaches)."""
        self.common(task)
        if self.resources.retries:
            task.set_retry(num_retries=self.resources.retries)
        return task

    def common(self, task):
        task.set_caching_options(self.caching)
        if self.resources.credentials_secret:
            from kfp import kubernetes

            kubernetes.use_secret_as_env(task, self.resources.credentials_secret, SECRET_ENV)
        return task

    def training(self, task):
        """GPU, CPU/memory, placement and retries: for inner training and retraining."""
        r = self.resources
        self.common(task)
        if r.gpus > 0:
            task.set_accelerator_type(r.gpu_type or "nvidia.com/gpu")
            task.set_accelerator_limit(r.gpus)
        if r.cpu:
            task.set_cpu_request(r.cpu).set_cpu_limit(r.cpu)
        if r.memory:
            task.set_memory_request(r.memory).set_memory_limit(r.memory)
        if r.node_selector or r.tolerations:
            from kfp import kubernetes

            for label, value in sorted(r.node_selector.items()):
                kubernetes.add_node_selector(task, label, value)
            for t in r.tolerations:
                kubernetes.add_toleration(task, key=t.get("key"),
                                          operator=t.get("operator", "Equal"),
                                          value=t.get("value"), effect=t.get("effect"),
                                          toleration_seconds=t.get("toleration_seconds"))
        if r.retries:
            task.set_retry(num_retries=r.retries)
        return task


def _level(index: int, next_level, image: str, settings: TaskSettings):
    comps = Components.with_image(image, f"step-{index + 1}")

    @dsl.pipeline(name=f"outer-step-{index + 1}",
                  description=f"Outer step {index + 1}: replicas, sign update, early stop")
    def level(config_json: str, run_id: str, job_id: str, state: str, replicas: list,
              dataset: Input[Dataset]) -> str:
        # group names are "<kind>-<counter>" per sub-pipeline: give each level its own range
        dsl.pipeline_context.Pipeline.get_default_pipeline()._group_id = 100 * (index + 1)
        with dsl.ParallelFor(replicas) as replica:
            make, apply = ((comps.launcher, settings.launching) if settings.launcher
                           else (comps.inner, settings.training))
            inner = apply(make(config_json=config_json, run_id=run_id, job_id=job_id,
                               state=state, replica=replica, dataset=dataset))
        inner.set_display_name("inner-training")
        outer = settings.common(comps.outer(
            config_json=config_json, run_id=run_id, job_id=job_id, state=state,
            hypergradients=dsl.Collected(inner.outputs["hypergradients"])))
        outer.set_display_name("outer-update")
        if next_level is None:
            return outer.outputs["state"]
        with dsl.If(outer.outputs["converged"] == "no", name=f"continue-after-{index + 1}"):
            deeper = next_level(config_json=config_json, run_id=run_id, job_id=job_id,
                                state=outer.outputs["state"], replicas=replicas, dataset=dataset)
            deeper.set_caching_options(settings.caching)
        with dsl.Else(name=f"stop-after-{index + 1}"):
            done = settings.common(comps.carry(state=outer.outputs["state"]))
            done.set_display_name("stop")
        return dsl.OneOf(deeper.output, done.output)

    return level


def build_pipeline(config: ExperimentConfig, retune: bool = False,
                   launcher: bool | None = None):
    """The FDS pipeline (or, with ``retune``, the retune pipeline) for ``config``.

    ``launcher`` (default: when ``resources.nodes * procs_per_node`` > 1): each replica's inner
    task is a launcher that runs the inner run as a Kubeflow Trainer TrainJob
    (:mod:`fdshpo.components.trainjob`) instead of training in its own pod; the local runner
    passes False (its inner tasks start local torchrun ranks).

    Pipeline parameters: ``config_json`` (default: this config), ``run_id`` ("": a new run id)
    and ``replicas`` (default ["0" .. "R-1"], the replica indices as strings).
    """
    if retune and not config.outer.warm_start:
        import dataclasses

        config = dataclasses.replace(
            config, outer=dataclasses.replace(config.outer, warm_start=True))
    image = image_for(config)
    comps = Components.with_image(image)
    if launcher is None:
        launcher = config.resources.world_size > 1
    settings = TaskSettings(config, caching=not retune, launcher=launcher)
    first = None
    for index in reversed(range(config.outer.max_steps)):
        first = _level(index, first, image, settings)
    config_default = json.dumps(config.to_dict(), sort_keys=True)
    compiled_graph = json.dumps(graph_settings(config), sort_keys=True)
    replicas_default = [str(r) for r in range(config.outer.replicas)]
    name = "fdshpo-retune" if retune else "fdshpo-fds"
    description = (f"{'Retune (warm start) ' if retune else ''}FDS hyperparameter schedule "
                   f"learning for experiment {config.experiment}")

    @dsl.pipeline(name=name, description=description)
    def pipeline(config_json: str = config_default, run_id: str = "",
                 replicas: list = replicas_default) -> str:
        prepare = settings.common(comps.prepare(config_json=config_json, run_id=run_id,
                                                job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                                compiled_graph=compiled_graph,
                                                replicas=replicas))
        prepare.set_display_name("prepare")
        run, job = prepare.outputs["run_id"], dsl.PIPELINE_JOB_ID_PLACEHOLDER
        levels = first(config_json=config_json, run_id=run, job_id=job,
                       state=prepare.outputs["state"], replicas=replicas,
                       dataset=prepare.outputs["dataset"])
        levels.set_caching_options(settings.caching)
        retrain = settings.training(comps.retrain(config_json=config_json, run_id=run,
                                                  job_id=job, state=levels.output,
                                                  dataset=prepare.outputs["dataset"]))
        retrain.set_display_name("retrain-evaluate")
        report = settings.common(comps.report(config_json=config_json, run_id=run,
                                              job_id=job, state=levels.output,
                                              evaluation=retrain.outputs["evaluation"]))
        report.set_display_name("report")
        return report.outputs["Output"]

    return pipeline


def compile_pipeline(config: ExperimentConfig, path: str | Path, retune: bool = False) -> Path:
    """Write the pipeline YAML (deterministic: the same config gives the same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(config, retune), str(path))
    return path


if __name__ == "__main__":
    import argparse

    from fdshpo.config.experiment import load_config

    parser = argparse.ArgumentParser(description="Compile the FDS (or retune) pipeline.")
    parser.add_argument("config")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--retune", action="store_true")
    args = parser.parse_args()
    print(compile_pipeline(load_config(args.config), args.output, retune=args.retune))
