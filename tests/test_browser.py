"""`synpro ui` in a real browser: a study's runs and its effective-tokens curve in MLflow's UI.

The workdir is built with the pipeline's own Tracker calls (study -> trial -> arm runs, metrics
logged with step = tokens seen) but without training, so the test takes seconds, not minutes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STUDY = "uistudy"
TOKENS = [20_480 * k for k in range(1, 7)]  # eval points, as tokens seen
CURVES = {  # arm -> (val_loss, effective tokens) at each eval point
    "oracle": ([6.0, 5.5, 5.1, 4.8, 4.6, 4.45], TOKENS),
    "repetition": ([6.0, 5.6, 5.3, 5.1, 5.0, 4.95], [20_480, 35_000, 52_000, 61_000, 70_000, 74_000]),
}
LRS = (0.003, 0.01)  # two trials, as a grid over the learning rate leaves them
SERVER_START_S = 120
BROWSER_WAIT_MS = 60_000


def build_workdir(workdir: Path) -> str:
    """An MLflow store shaped as `synpro sweep` leaves it (its naming, a study, two trials, their arms and a
    refresh child run); returns the experiment id."""
    from synpro.tracking import Tracker, params_label, run_name

    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}", STUDY, workdir / "mlartifacts")
    study = tracker.run("study", STUDY, {"synpro.study": STUDY})
    for number, lr in enumerate(LRS):
        params = {"training.lr": lr}
        trial = tracker.run("trial", run_name(f"trial-{number}", params_label(params)),
                            {"synpro.study": STUDY, "synpro.trial": f"t{number}"}, parent_id=study)
        for arm, (losses, effective) in CURVES.items():
            name = run_name(arm, params_label(params), "seed 0")
            run = tracker.run("arm", name, {"synpro.trial": f"t{number}", "synpro.arm": arm}, parent_id=trial)
            tracker.log_params(run, {**params, "arm": arm, "kind": arm})
            tracker.log_points(run, "val_loss", [(t, loss + number * 0.1) for t, loss in zip(TOKENS, losses)])
            tracker.log_points(run, "effective_tokens", zip(TOKENS, effective))
            grpo = tracker.run("refresh", run_name("round 1 grpo rephrase", name),
                               {"synpro.trial": f"t{number}", "synpro.arm": arm, "synpro.stage": "g"}, parent_id=run)
            tracker.log_points(grpo, "grpo/reward", [(1, 0.2), (2, 0.3)])
            tracker.finish(grpo)
            tracker.finish(run)
        tracker.log_points(trial, "objective", [(0, CURVES["repetition"][1][-1])])
        tracker.finish(trial)
    tracker.finish(study)
    return tracker.experiment_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, experiment id) of `synpro ui` serving a built workdir; stopped afterwards."""
    workdir = tmp_path / "wd"
    workdir.mkdir()
    experiment = build_workdir(workdir)
    base = f"http://127.0.0.1:{free_port()}"
    log = (tmp_path / "ui.log").open("w")
    # Its own session, so the MLflow server and its workers stop together with it.
    server = subprocess.Popen([sys.executable, "-m", "cli", "ui", "--workdir", str(workdir), "--port",
                               base.rsplit(":", 1)[1]], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not answers(base + "/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"synpro ui did not answer on {base}:\n{(tmp_path / 'ui.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, experiment
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


def test_study_runs_and_effective_tokens_are_visible_in_the_mlflow_ui(ui: tuple[str, str], tmp_path: Path) -> None:
    base, experiment = ui
    screenshot = tmp_path / "mlflow-ui.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(BROWSER_WAIT_MS)
            # MLflow 3 opens experiments in its GenAI view; runs live in the "model training" one.
            page.goto(f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning")

            def run_link(name: str):
                return page.get_by_role("link", name=name, exact=True).first

            def expand(name: str) -> None:
                cell = page.locator("[role=gridcell][col-id='attributes.`Run Name`']", has=run_link(name))
                cell.get_by_role("button").first.click()

            run_link(STUDY).wait_for()
            expand(STUDY)
            run_link("trial-0").wait_for()
            expand("trial-0")
            for arm in CURVES:
                run_link(arm).wait_for()
            sync_api.expect(page.get_by_text("4 matching runs")).to_be_visible()

            run_link("repetition").click()
            metrics = page.get_by_role("row", name="effective_tokens")
            sync_api.expect(metrics).to_contain_text("74000")  # the value at the last step
            page.get_by_role("tab", name="Model metrics").click()
            chart = page.locator("xpath=//*[text()='effective_tokens']/ancestor::*[.//*[text()='Step']][1]")
            sync_api.expect(chart).to_contain_text("repetition (effective_tokens)")
            # Steps are tokens seen: the axis reaches 100k, where eval counts would stop at 6.
            sync_api.expect(chart).to_contain_text("100k")
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    print(f"MLflow UI screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
