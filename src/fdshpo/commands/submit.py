"""``fdshpo submit CONFIG --host URL``: compile and start one run on a KFP cluster.

The KFP API's failures end in one line saying what to check (:func:`kfp_errors`)."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from ..errors import UserError
from .run import add_config_arguments, load


def add_host_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, metavar="URL",
                        help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888")
    parser.add_argument("--experiment", metavar="NAME",
                        help="KFP experiment (default: the config's experiment name)")
    parser.add_argument("--namespace", default=None,
                        help="Kubernetes namespace of a multi-user KFP (default: kubeflow)")


def client(args: argparse.Namespace):
    """A ``kfp.Client`` for ``--host`` (it contacts the API at once); use inside
    :func:`kfp_errors`. kfp's FutureWarning about server versions is left out: any KFP 2
    backend recent enough for the pipeline (README) is fine."""
    import warnings

    import kfp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"kfp\.")
        return kfp.Client(host=args.host, namespace=args.namespace or "kubeflow")


@contextlib.contextmanager
def kfp_errors(args: argparse.Namespace):
    """The KFP API's failures as one :class:`~fdshpo.errors.UserError` saying what to check:
    an unreachable ``--host`` (refused, timed out, TLS), or a request it refused (HTTP status:
    authorisation, namespace, a missing experiment)."""
    import logging

    import urllib3
    from kfp_server_api.exceptions import ApiException

    quiet = logging.NullHandler()  # kfp logs each failed health check with its traceback
    logging.getLogger().addHandler(quiet)
    try:
        yield
    except TimeoutError as exc:
        if "healthz" not in str(exc):
            raise
        raise UserError(
            f"the KFP API at --host {args.host} failed its health check 5 times: is it the KFP "
            "API (ml-pipeline, port 8888), and may your account reach it?") from None
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"cannot reach the KFP API at --host {args.host} ({type(reason).__name__}): check "
            "the URL (in the cluster e.g. http://ml-pipeline.kubeflow.svc.cluster.local:8888; "
            "from a laptop `kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888` and "
            "--host http://127.0.0.1:8888), and http:// vs https://") from None
    except ApiException as exc:
        raise UserError(
            f"the KFP API at {args.host} refused the request: HTTP {exc.status} "
            f"{exc.reason or ''}".rstrip() + ": check --namespace (multi-user KFP: your "
            "profile's namespace) and that your account may create experiments and runs "
            "there (k8s/base/role.yaml)") from None
    finally:
        logging.getLogger().removeHandler(quiet)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="start a run of the pipeline on KFP")
    add_config_arguments(parser)
    add_host_arguments(parser)
    parser.add_argument("--run-name", help="KFP run name (default: <experiment>-<pipeline>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdshpo.pipelines import compile_pipeline

    config = load(args)
    retune = args.pipeline == "retune"
    experiment = args.experiment or config.experiment
    with tempfile.TemporaryDirectory(prefix="fdshpo-submit-") as tmp, kfp_errors(args):
        package = compile_pipeline(config, Path(tmp) / "pipeline.yaml", retune=retune)
        result = client(args).create_run_from_pipeline_package(
            str(package), arguments={}, run_name=args.run_name
            or f"{config.experiment}-{args.pipeline}", experiment_name=experiment,
            namespace=args.namespace, enable_caching=False if retune else None)
    print(f"submitted {args.pipeline} run {result.run_id} of experiment {experiment} to "
          f"{args.host}")
    return 0
