"""The experiments overview page and a run's report, rendered by a real browser (Debian's
chromium driven by Playwright): every image loads, every link resolves inside the store's
folder layout, the runs table sorts on a click, and nothing is fetched from the network.

Needs ``chromium`` (apt-get install chromium) and the ``playwright`` package (dev extras).
Without them the test is skipped, unless ``FDSHPO_REQUIRE_BROWSER=1`` (set by ``.ci/run``),
which makes a missing browser a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from nets import sample_subset_problem

from fdshpo import Schedule, SignOptimizer
from fdshpo.cli import main as cli
from fdshpo.store import open_store
from fdshpo.store.layout import OVERVIEW
from fdshpo.tracking.recorder import RunRecorder

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_skip():
    required = os.environ.get("FDSHPO_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).is_file():
        if required:
            pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return sync_playwright


def _record_runs(store) -> list[str]:
    """Two experiments: three complete runs and an unfinished one. The first run tunes for
    real (two outer steps); the others record the same outer steps (the test is about the
    pages, and training costs seconds)."""
    problem = sample_subset_problem(train=200, test=50, seed=2)
    initial = Schedule.constant(8, lr=0.1, momentum=0.5, segments={"lr": 2},
                                bounds={"lr": (0.0, 1.0)})
    state, names = None, []
    for experiment, lr, finish in (("fmnist", 0.05, True), ("fmnist", 0.2, True),
                                   ("cifar", 0.1, True), ("cifar", 0.1, False)):
        recorder = RunRecorder(store, experiment, checkpoint_every=0)
        recorder.start({"lr": lr})
        if state is None:
            state = recorder.tune(problem, initial, SignOptimizer(), outer_steps=2).state
        recorder.on_outer_step(state)
        if finish:
            recorder.finish(state.schedule, {"test_accuracy": 0.5 + lr})
        recorder.close()
        names.append(f"{experiment}/{recorder.run_id}")
    return names


def test_overview_and_run_reports_render_in_a_real_browser(tmp_path):
    sync_playwright = _browser_or_skip()
    root = tmp_path / "store"
    store = open_store(root)
    names = _record_runs(store)
    assert cli(["report", "--experiments", "--store", str(root)]) == 0
    overview = (root / OVERVIEW).resolve()

    requests, off_store = [], []

    def guard(route):  # nothing may leave the store's folder
        url = route.request.url
        requests.append(url)
        if url.startswith("data:"):
            return route.continue_()
        path = Path(unquote(urlsplit(url).path)) if url.startswith("file:") else None
        if path is None or not path.resolve().is_relative_to(root.resolve()):
            off_store.append(url)
            return route.abort()
        return route.continue_()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", guard)
            page.goto(overview.as_uri())
            images = page.evaluate("Array.from(document.images).map("
                                   "i => [i.alt, i.complete, i.naturalWidth])")
            assert [alt for alt, _, _ in images] == ["cifar schedules", "fmnist schedules"]
            assert all(done and width > 0 for _, done, width in images), images
            links = page.evaluate("Array.from(document.querySelectorAll('a[href]'))"
                                  ".map(a => [a.getAttribute('href'), a.href])")
            reports = [(href, url) for href, url in links if not href.startswith("#")]
            # each complete run links its report by the report's key, inside the store
            assert sorted(href for href, _ in reports) == sorted(
                f"experiments/{n.split('/')[0]}/runs/{n.split('/')[1]}/report.html"
                for n in names[:3])
            for href, url in reports:
                target = Path(unquote(urlsplit(url).path))
                assert target == root.resolve() / href and target.is_file(), href
            assert all((root / href.lstrip("#")).exists() or href.startswith("#")
                       for href, _ in links)
            # sorting: the fmnist table by test_accuracy, ascending then descending
            table = page.locator("section#fmnist table.runs")
            header = table.locator("th", has_text="test_accuracy")
            column = "Array.from(t.tBodies[0].rows).map(r => r.cells[%d].textContent)"
            index = page.evaluate("Array.from(document.querySelectorAll('section#fmnist th'))"
                                  ".map(h => h.textContent).indexOf('test_accuracy')")
            header.click()
            ascending = table.evaluate(f"t => {column % index}")
            header.click()
            descending = table.evaluate(f"t => {column % index}")
            assert ascending == ["0.55", "0.7"] and descending == ["0.7", "0.55"]
            # a run's own report, reached through its link
            page.locator("section#cifar a", has_text=names[2].split("/")[1]).click()
            page.wait_for_load_state()
            assert page.title() == f"fdshpo run {names[2]}"
            images = page.evaluate("Array.from(document.images).map("
                                   "i => [i.alt, i.complete, i.naturalWidth])")
            assert [alt for alt, _, _ in images] == ["schedule", "hypergradient_signs",
                                                     "val_loss"]
            assert all(done and width > 0 for _, done, width in images), images
        finally:
            browser.close()
    assert off_store == [], off_store
    assert all(re.match(r"(file|data):", url) for url in requests)


def test_overview_links_resolve_in_an_s3_store(s3_bucket, s3_env):
    """The same page in a bucket: every link is the key of an object that exists."""
    store = open_store(f"s3://{s3_bucket}/team")
    RunRecorder(store, "exp", "r1").start({})
    recorder = RunRecorder(store, "exp", "r2")
    recorder.start({})
    recorder.finish(Schedule.constant(8, lr=0.1), {"test_accuracy": 0.9})
    assert cli(["report", "--experiments", "--store", store.uri]) == 0
    html = store.get_bytes(OVERVIEW).decode()
    links = re.findall(r'href="([^"#][^"]*)"', html)
    assert links == ["experiments/exp/runs/r2/report.html"]
    assert all(store.exists(link) for link in links)
    assert not re.search(r'(src|href)="(https?:)?//', html)


def _serve(directory: Path):
    """Python's plain ``http.server`` over ``directory`` on 127.0.0.1, as an unprivileged
    user when the tests run as root (root reads any file, whatever its mode): (process, URL)."""
    import subprocess

    user = "nobody" if os.geteuid() == 0 else None
    python = "/usr/bin/python3" if user and Path("/usr/bin/python3").exists() else sys.executable
    proc = subprocess.Popen([python, "-u", "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", str(directory), "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, user=user, cwd="/")
    line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://...) ..."
    match = re.search(r"port (\d+)", line)
    if not match:
        proc.kill()
        pytest.fail(f"http.server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{match.group(1)}"


def test_the_store_served_by_a_plain_http_server_shows_every_page(tmp_path):
    """`fdshpo report` then `python -m http.server` in the store's folder, as another user:
    the overview, its images and each run's report load (artifacts are 0644, not 0600)."""
    import stat
    import tempfile

    sync_playwright = _browser_or_skip()
    root = Path(tempfile.mkdtemp(prefix="fdshpo-served-"))  # tmp_path is 0700: others
    root.chmod(0o755)                                       # could not enter it
    try:
        store = open_store(root / "store")
        names = _record_runs(store)
        assert cli(["report", "--store", str(root / "store")]) == 0
        modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode)
                 for p in (root / "store").rglob("*") if p.is_file()}
        assert modes["store/overview.html"] == 0o644
        assert {k: oct(m) for k, m in modes.items() if m != 0o644} == {}
        server, url = _serve(root / "store")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = browser.new_page()
                    statuses = []
                    page.on("response", lambda r: statuses.append((r.url, r.status)))
                    assert page.goto(f"{url}/{OVERVIEW}").status == 200
                    images = page.evaluate("Array.from(document.images).map("
                                           "i => [i.complete, i.naturalWidth])")
                    assert len(images) == 2 and all(ok and w > 0 for ok, w in images)
                    assert "after outer step 2" in page.locator("table.runs").first.inner_text()
                    page.locator("section#cifar a", has_text=names[2].split("/")[1]).click()
                    page.wait_for_load_state()
                    assert page.url == f"{url}/experiments/{names[2].split('/')[0]}/runs/" \
                        f"{names[2].split('/')[1]}/report.html"
                    assert page.title() == f"fdshpo run {names[2]}"
                    assert "outer step 2" in page.locator("b.selection").inner_text()
                    images = page.evaluate("Array.from(document.images).map("
                                           "i => [i.complete, i.naturalWidth])")
                    assert len(images) == 3 and all(ok and w > 0 for ok, w in images)
                finally:
                    browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
        assert statuses and all(status == 200 for _, status in statuses), statuses
    finally:
        shutil.rmtree(root, ignore_errors=True)
