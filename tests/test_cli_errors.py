"""What a user sees when something is wrong: one ``fdshpo: error:`` line (no traceback, no
library warning) naming the setting the command really has, and the right exit status."""

from __future__ import annotations

import argparse
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fdshpo.cli import SIGPIPE_STATUS, build_parser
from fdshpo.cli import main as cli
from fdshpo.store import StoreError, open_store
from fdshpo.tracking.recorder import RunRecorder

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")


def fdshpo(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fdshpo", *args], capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_an_unreachable_kfp_host_is_one_line_without_a_warning():
    done = fdshpo("submit", DEMO, "--host", "http://127.0.0.1:9")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("fdshpo: error: cannot reach the KFP API at --host "
                                  "http://127.0.0.1:9 (NewConnectionError): check the URL")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "FutureWarning" not in done.stderr


def test_schedule_reports_an_unreachable_host_and_a_refusal(capsys, recwarn):
    assert cli(["schedule", DEMO, "--host", "http://127.0.0.1:9", "--cron", "0 3 * * *"]) == 2
    assert "fdshpo: error: cannot reach the KFP API at --host http://127.0.0.1:9" in (
        capsys.readouterr().err)

    class Refuse(http.server.BaseHTTPRequestHandler):
        """A KFP API that is healthy but refuses every request (an account without rights)."""

        def do_GET(self):  # noqa: N802 (http.server's name)
            healthz = self.path.startswith("/apis/v2beta1/healthz")
            self.send_response(200 if healthz else 403)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"multi_user": false}' if healthz else b'{"error": "forbidden"}')

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        assert cli(["submit", DEMO, "--host", host]) == 2
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert err.startswith(f"fdshpo: error: the KFP API at {host} refused the request: HTTP 403")
    assert "--namespace" in err and err.count("\n") == 1
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]


def test_a_missing_dataset_names_the_settings_of_the_command(tmp_path, capsys):
    config = tmp_path / "nodata.yaml"
    config.write_text(f"experiment: nodata\ndata: {{dataset: mnist, root: {tmp_path / 'none'}}}\n"
                      f"network: mlp\nschedule: {{horizon: 10}}\nouter: {{max_steps: 1}}\n"
                      f"store: {{uri: {tmp_path / 'store'}}}\n")
    assert cli(["run", str(config), "--runner", "inline"]) == 2
    err = capsys.readouterr().err
    assert "the root is data.root in the config" in err
    assert "--data-path" not in err and "--data-store" not in err and "download=" not in err
    assert cli(["data", "prepare", "mnist", "--data-root", str(tmp_path / "none"), "-o",
                str(tmp_path / "b.pt")]) == 2
    err = capsys.readouterr().err
    assert "--data-path FOLDER" in err and "--data-root" in err and "data.root" not in err


def test_an_unreachable_s3_endpoint_names_where_it_was_set(tmp_path, monkeypatch):
    from fdshpo.components.common import open_run_store
    from fdshpo.config.experiment import load_config

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key-0123456789")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    config = tmp_path / "s3.yaml"
    config.write_text(Path(DEMO).read_text().replace(
        "  uri: ./fdshpo-store", "  uri: s3://fdshpo\n  endpoint: http://127.0.0.1:9"))
    store = open_run_store(load_config(config))
    store.deadline = 0.2
    with pytest.raises(StoreError, match=r"cannot reach S3 endpoint http://127.0.0.1:9, .*"
                                         r"check store.endpoint, that the server"):
        store.list("")
    cli_store = open_store("s3://fdshpo", s3_endpoint="http://127.0.0.1:9", deadline=0.2)
    with pytest.raises(StoreError, match="check --s3-endpoint, that"):
        cli_store.list("")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(StoreError, match="check AWS_ENDPOINT_URL, that"):
        open_store("s3://fdshpo", deadline=0.2).list("")


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``fdshpo runs show RUN --json | head -c 1``: the reader goes away while the command
    still writes (a 300 KB config overflows the pipe's buffer)."""
    store = open_store(tmp_path)
    rec = RunRecorder(store, "exp", "big")
    rec.start({"notes": "x" * 300_000})
    rec.close()
    proc = subprocess.Popen([sys.executable, "-m", "fdshpo", "runs", "show", "--store",
                             str(tmp_path), "exp/big", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.read(1) == b"{"
    proc.stdout.close()
    assert proc.wait(timeout=120) == SIGPIPE_STATUS
    assert proc.stderr.read() == b""


def test_a_store_that_does_not_exist_is_an_error_not_an_empty_store(tmp_path, capsys):
    missing = tmp_path / "typo-dir"
    for args in (["runs", "list"], ["runs", "show", "r1"], ["experiments", "list"], ["report"]):
        assert cli([*args, "--store", str(missing)]) == 2, args
        assert capsys.readouterr().err == (
            f"fdshpo: error: no store at {missing} (--store): no such directory; check the path "
            "(a store is the folder a run wrote, e.g. ./fdshpo-store after `make demo`)\n")
    assert not missing.exists()


def test_every_option_has_help_text():
    missing = []

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:  # noqa: SLF001 (argparse has no public walk)
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for sub in action.choices.values():
                    walk(sub)
            elif action.help is None and not isinstance(action, argparse._HelpAction):  # noqa: SLF001
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser())
    assert missing == []


def test_the_description_names_both_engines():
    text = build_parser().format_help()
    assert "forward or checkpointed reverse" in " ".join(text.split())


def test_fdshpo_demo_passes_only_what_the_demo_reads(monkeypatch):
    """``fdshpo demo`` once passed options the demo does not have (an argparse error)."""
    import fdshpo.demo

    seen = []
    monkeypatch.setattr(fdshpo.demo, "main", seen.append)
    assert cli(["demo"]) == 0 and cli(["demo", "--config", "x.yaml"]) == 0
    assert seen == [[], ["--config", "x.yaml"]]
