"""The run / compile / submit / schedule commands: success paths and bad input messages.

submit and schedule talk to a KFP API. No KFP API server can run on this machine, so they are
tested against ``FakeKfpApi``, a fake: a local HTTP server answering the few v2beta1 REST calls
``kfp.Client`` makes and recording what it was sent."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from fdshpo.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")


class FakeKfpApi:
    """A fake KFP API (see the module docstring): records (method, path, json body)."""

    REPLIES = {"/apis/v2beta1/experiments": {"experiment_id": "exp-1", "display_name": "e"},
               "/apis/v2beta1/runs": {"run_id": "run-1", "display_name": "r"},
               "/apis/v2beta1/recurringruns": {"recurring_run_id": "rr-1",
                                               "display_name": "r"}}

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"{}")
                api.requests.append((self.command, self.path, body))
                path = self.path.split("?")[0]
                reply = ({"experiments": []} if self.command == "GET" and path.endswith(
                    "experiments") else api.REPLIES.get(path, {}))
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _reply

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.host = f"http://127.0.0.1:{self.server.server_port}"

    def posted(self, path: str) -> list[dict]:
        return [b for m, p, b in self.requests if m == "POST" and p.startswith(path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kfp_api():
    api = FakeKfpApi()
    yield api
    api.close()


@pytest.fixture(autouse=True)
def default_image(monkeypatch):
    monkeypatch.delenv("FDSHPO_IMAGE", raising=False)


def test_compile_writes_the_same_bytes_twice(tmp_path, capsys):
    assert main(["compile", DEMO, "-o", str(tmp_path / "a.yaml")]) == 0
    assert main(["compile", DEMO, "-o", str(tmp_path / "b.yaml")]) == 0
    assert (tmp_path / "a.yaml").read_bytes() == (tmp_path / "b.yaml").read_bytes()
    assert "wrote fds pipeline for experiment demo" in capsys.readouterr().out
    assert main(["compile", DEMO, "--pipeline", "retune", "-o", str(tmp_path / "r.yaml")]) == 0
    assert "name: fdshpo-retune" in (tmp_path / "r.yaml").read_text()


def test_submit_creates_a_run(kfp_api, capsys):
    assert main(["submit", DEMO, "--host", kfp_api.host, "--experiment", "nightly"]) == 0
    assert "submitted fds run run-1 of experiment nightly" in capsys.readouterr().out
    [experiment] = kfp_api.posted("/apis/v2beta1/experiments")
    assert experiment["display_name"] == "nightly"
    [run] = kfp_api.posted("/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-1"
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "fdshpo-fds"


def test_schedule_creates_an_uncached_recurring_retune(kfp_api, capsys):
    retune = str(ROOT / "configs" / "retune.yaml")
    assert main(["schedule", retune, "--host", kfp_api.host, "--cron", "0 3 * * *",
                 "--pipeline", "retune"]) == 0
    assert "scheduled retune recurring run rr-1 (0 0 3 * * *)" in capsys.readouterr().out
    [job] = kfp_api.posted("/apis/v2beta1/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert job["no_catchup"] is True
    spec = json.dumps(job["pipeline_spec"])
    assert "fdshpo-retune" in spec and '"enableCache": true' not in spec


def compiled_for(pipeline_spec: dict) -> tuple[int, dict, list]:
    """(outer-step levels, the prepare task's compiled graph settings, the replicas default)
    of a pipeline spec as the KFP API received it."""
    components = pipeline_spec["components"]
    levels = sum(1 for name in components if name.startswith("comp-outer-step-"))
    prepare = pipeline_spec["root"]["dag"]["tasks"]["prepare-component"]
    compiled = prepare["inputs"]["parameters"]["compiled_graph"]["runtimeValue"]["constant"]
    replicas = pipeline_spec["root"]["inputDefinitions"]["parameters"]["replicas"]
    return levels, json.loads(compiled), replicas["defaultValue"]


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_submitted_graph_is_the_configs_and_runs_without_overrides(kfp_api, tmp_path, command):
    """submit and schedule compile the config they are given: the graph's levels, replicas
    and resources are that config's, and no run-time parameter overrides them."""
    from fdshpo.components.common import graph_settings
    from fdshpo.config.experiment import load_config

    data = yaml.safe_load(Path(DEMO).read_text())
    data["outer"].update(max_steps=3, replicas=2)
    data["resources"] = {"cpu": "2", "retries": 1}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    extra = ["--cron", "0 3 * * *"] if command == "schedule" else []
    assert main([command, str(path), "--host", kfp_api.host, *extra]) == 0
    [body] = kfp_api.posted("/apis/v2beta1/recurringruns" if command == "schedule"
                            else "/apis/v2beta1/runs")
    levels, compiled, replicas = compiled_for(body["pipeline_spec"])
    assert (levels, replicas) == (3, ["0", "1"])
    assert compiled == graph_settings(load_config(path))
    assert compiled["resources.cpu"] == "2" and compiled["outer.max_steps"] == 3
    assert body["runtime_config"]["parameters"] == {}, "no override of the compiled config"


def test_schedule_refuses_a_bad_cron(kfp_api, capsys):
    assert main(["schedule", DEMO, "--host", kfp_api.host, "--cron", "every day"]) == 2
    assert "--cron 'every day' is not a cron expression; give five fields" in \
        capsys.readouterr().err
    assert kfp_api.requests == []


def test_run_inline_prints_schedule_accuracy_and_report(tmp_path, capsys):
    data = yaml.safe_load(Path(DEMO).read_text())
    data["schedule"].update(horizon=20, segments={"lr": 2, "momentum": 1, "weight_decay": 1})
    data["outer"]["max_steps"] = 1
    data["retrain"] = {"horizon": 20}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    store = tmp_path / "store"
    assert main(["run", str(config), "--runner", "inline", "--store", str(store),
                 "--run-id", "cli-run", "--engine", "reverse"]) == 0
    out = capsys.readouterr().out
    assert "outer step 1/1: val loss" in out
    assert "engine reverse (reverse: requested)" in out  # --engine overrides the config
    assert "learned schedule after 1 outer step(s), outer.select best: val loss " in out
    assert "(outer step 1 of 1), engine reverse:" in out  # the step it came from, what ran
    assert "test accuracy after retraining: learned" in out
    assert "report: file://" in out and "experiments/demo/runs/cli-run/report.html" in out
    assert (store / "experiments/demo/runs/cli-run/run.json").is_file()
    assert (store / "experiments/demo/latest.json").is_file()


def _run_constant_schedule(tmp_path, run_id: str, initial: dict, lr_bounds: list,
                           **outer) -> tuple[int, object]:
    """``fdshpo run --runner inline`` of the demo config with one segment per value, a 20-step
    horizon and retraining, and one additive outer step (constant segments, weight decay
    bounded by 0) from ``initial``; (exit status, run record)."""
    from fdshpo.store import open_store
    from fdshpo.tracking.recorder import load_run

    data = yaml.safe_load(Path(DEMO).read_text())
    data["schedule"].update(horizon=20, segments={"lr": 1, "momentum": 1, "weight_decay": 1},
                            initial=initial, shapes={},
                            bounds={"lr": lr_bounds, "weight_decay": [0.0, 0.01]})
    data["outer"].update(max_steps=1, select="last", multiplicative=[], **outer)
    data["retrain"] = {"horizon": 20}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    store = tmp_path / "store"
    status = main(["run", str(config), "--runner", "inline", "--store", str(store),
                   "--run-id", run_id])
    return status, load_run(open_store(store), run_id, "demo")


def test_run_exits_3_naming_the_step_and_values_when_the_retraining_diverges(tmp_path,
                                                                             capsys):
    status, run = _run_constant_schedule(
        tmp_path, "unstable", {"lr": 50.0, "momentum": 0.9, "weight_decay": 0.0}, [0.0, 100.0],
        step_sizes={"lr": 0.01})
    assert status == 3
    captured = capsys.readouterr()
    # the inner run diverged too: a result (learning rates lowered), not a crash
    assert "outer step 1/1: inner run diverged (replica(s) [0]), learning rates lowered" in \
        captured.out
    assert re.search(r"retraining with the learned schedule diverged at step \d+ of 20 "
                     r"\(lr=49\.99, momentum=0\.9, weight_decay=0\)", captured.err)
    # recorded, complete, and says so
    assert run.status == "complete" and run.metrics["retrain_diverged"] is True
    assert run.metrics["test_accuracy"] is None
    assert run.metrics["retrain_divergence"]["hyperparameters"]["lr"] == pytest.approx(49.99)


def test_run_exits_4_when_the_learned_schedule_trains_nothing(tmp_path, capsys):
    status, run = _run_constant_schedule(
        tmp_path, "frozen", {"lr": 0.0, "momentum": 0.0, "weight_decay": 0.0}, [0.0, 1.0e-9])
    assert status == 4
    captured = capsys.readouterr()
    assert re.search(r"test accuracy after retraining: learned \d+\.\d\d% "
                     r"\(collapsed: about chance\)", captured.out)
    assert re.search(r"retraining with the learned schedule collapsed: test accuracy \d+\.\d\d%, "
                     r"about chance, with a finite loss; the run is recorded", captured.err)
    assert run.status == "complete" and run.metrics["retrain_collapsed"] is True
    assert run.metrics["retrain_diverged"] is False and run.metrics["test_accuracy"] < 0.19


BAD = [
    ({"network": "resnet"}, "network: unknown network 'resnet'; allowed: lenet, mlp, wrn-D-K"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset: unknown dataset 'imagenet'"),
    ({"schedule": {"horizon": 3, "segments": {"lr": 5}}},
     "schedule.segments.lr is 5 but schedule.horizon is only 3 steps"),
    ({"schedule": {"horizon": 10, "bounds": {"lr": [1.0, 0.0]}}},
     "schedule.bounds.lr is impossible: lower 1.0 is not below upper 0.0"),
    ({"schedule": {"horizon": "long"}}, "schedule.horizon must be an integer, got 'long'"),
    ({"network": None}, "missing required key 'network'"),
    ({"store": {"uri": "gs://bucket/x"}}, "store.uri: unsupported store URI 'gs://bucket/x'"),
    ({"store": {"uri": "s3://My_Bucket/x"}}, "store.uri: invalid bucket name 'My_Bucket'"),
    ({"store": {"uri": "s3://fdshpo", "endpoint": "minio:port"}},
     "store.endpoint: S3 endpoint 'minio:port' must be scheme://host[:port] only"),
    ({"store": {"uri": "s3://fdshpo", "endpoint": "ftp://minio:9000"}},
     "store.endpoint: S3 endpoint 'ftp://minio:9000' is not an http(s) URL"),
    ({"store": {"uri": "s3://fdshpo", "endpoint": "http://admin:SECRET-42@minio:9000"}},
     "store.endpoint: S3 endpoint 'http://***@minio:9000' carries user info: put no keys in "
     "the URL; give them in AWS_ACCESS_KEY_ID"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m[:30] for _, m in BAD])
@pytest.mark.parametrize("command", ["run", "compile"])
def test_bad_configs_exit_2_with_the_message(tmp_path, capsys, command, changes, message):
    data = yaml.safe_load(Path(DEMO).read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(data))
    argv = [command, str(config)] + (["-o", str(tmp_path / "p.yaml")]
                                     if command == "compile" else ["--runner", "inline"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fdshpo: error: ") and message in err
    assert "Traceback" not in err and "SECRET-42" not in err
    assert not (tmp_path / "p.yaml").exists()


def test_a_bad_store_override_exits_2(tmp_path, capsys):
    assert main(["compile", DEMO, "--store", "s3://user:SECRET-7@fdshpo", "-o",
                 str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert "--store: store URI 's3://***@fdshpo' carries user info" in err
    assert "SECRET-7" not in err and not (tmp_path / "p.yaml").exists()


def test_config_paths_that_are_not_config_files(tmp_path, capsys):
    assert main(["compile", str(tmp_path), "-o", "x.yaml"]) == 2
    assert f"config file '{tmp_path}' is a directory; give the path of a YAML experiment " \
           "config" in capsys.readouterr().err
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["compile", str(binary), "-o", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert f"config file '{binary}' is not a text file (it is not UTF-8)" in err
    assert "codec" not in err


def test_missing_config_file(capsys):
    assert main(["compile", "nope.yaml", "-o", "x.yaml"]) == 2
    assert "config file 'nope.yaml' does not exist" in capsys.readouterr().err
