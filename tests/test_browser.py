"""`synpro ui` in a real browser: the page it opens shows a study's arms and their curves in MLflow's UI,
and `synpro ui --optuna` shows the Optuna study with its objective named.

The workdir is built with the pipeline's own Tracker calls (study -> trial -> arm runs, metrics
logged with step = tokens seen) but without training, so the test takes seconds, not minutes.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
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


def serve_ui(tmp_path: Path, *args: str) -> Iterator[str]:
    """The page `synpro ui ARGS` says it opens, while it serves; stopped (with its whole group) afterwards."""
    port = free_port()
    log_path = tmp_path / "ui.log"
    log = log_path.open("w")
    # Its own session, so the server and its workers stop together with it.
    server = subprocess.Popen([sys.executable, "-m", "cli", "ui", *args, "--port", str(port), "--no-open"],
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not (opened := [line.split()[1] for line in log_path.read_text().splitlines()
                              if line.startswith("open ")]):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"synpro ui did not open a page:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        assert opened[0].startswith(f"http://127.0.0.1:{port}/")
        yield opened[0]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


@pytest.fixture
def page_of(tmp_path: Path) -> Iterator:
    """A Chromium page at 1600x1000 (closed afterwards)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(BROWSER_WAIT_MS)
            yield page
        finally:
            browser.close()


def test_synpro_ui_opens_on_the_arms_and_their_val_loss_chart(tmp_path: Path, page_of) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    experiment = build_workdir(workdir)
    page = page_of
    for url in serve_ui(tmp_path, "--workdir", str(workdir)):
        assert f"/#/experiments/{experiment}/runs?" in url
        page.goto(url)
        arms = [f"{arm} · lr={lr:g} · seed 0" for arm in CURVES for lr in LRS]
        for name in arms:  # every arm run, named by what differs, flat: no study or trial to expand
            page.get_by_role("link", name=name, exact=True).first.wait_for()
        sync_api.expect(page.get_by_text(f"{len(arms)} matching runs")).to_be_visible()
        assert page.get_by_role("link", name="trial-0 · lr=0.003").count() == 0
        # MLflow 3's training view (its side bar: Runs, Models), not the GenAI one (Evaluation runs, Judges...).
        sync_api.expect(page.get_by_role("link", name="Models", exact=True)).to_be_visible()
        sync_api.expect(page.get_by_text("Evaluation runs")).to_have_count(0)
        chart = page.locator("xpath=//*[text()='val_loss']/ancestor::*[.//*[text()='Step']][1]")
        for name in arms:  # the val_loss chart's legend names the arms
            sync_api.expect(page.get_by_text(f"{name} (val_loss)", exact=True)).to_have_count(1)
        assert not page.get_by_text(re.compile(r"(trial-\d|uistudy).*\(val_loss\)")).count()  # and no parent
        sync_api.expect(chart).to_contain_text("100k")  # steps are tokens seen: eval counts would stop at 6
        page.screenshot(path=str(tmp_path / "mlflow-ui.png"))
    print(f"MLflow UI screenshot: {tmp_path / 'mlflow-ui.png'}")
    assert (tmp_path / "mlflow-ui.png").stat().st_size > 10_000


def test_synpro_ui_optuna_shows_the_study_with_its_named_objective(tmp_path: Path, page_of) -> None:
    from synpro.spec import load_spec
    from synpro.sweep import _open_study

    storage = f"sqlite:///{tmp_path / 'wd' / 'optuna.db'}"
    (tmp_path / "wd").mkdir()
    spec = load_spec(Path(__file__).parents[1] / "experiments" / "quickstart.yaml").with_params(
        {"store.optuna_url": storage})
    study = _open_study(spec)  # as `synpro sweep` opens it: named objective
    for lr, value in zip(LRS, (1.02, 0.97)):
        trial = study.ask({"training.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)})
        study.tell(trial, value)
    page = page_of
    for url in serve_ui(tmp_path, "--optuna", "--workdir", str(tmp_path / "wd")):
        page.goto(url)
        page.get_by_text(study.study_name).first.click()
        sync_api.expect(page.get_by_text("multiplier_vs_repetition of synpro").first).to_be_visible()
        sync_api.expect(page.get_by_text("Objective 0")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "optuna-dashboard.png"))
    print(f"Optuna dashboard screenshot: {tmp_path / 'optuna-dashboard.png'}")
    assert (tmp_path / "optuna-dashboard.png").stat().st_size > 10_000
