"""`synpro ui`: the MLflow UI opened on the study's runs, or Optuna's dashboard on its storage."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import webbrowser
from pathlib import Path
from typing import Callable, Optional

import typer

from cli.app import WorkdirOpt, app, guarded, out
from synpro.core.fs import sqlite_url
from synpro.core.secrets import mask
from synpro.errors import InputError

# What the runs page opens on: MLflow 3's model-training view (not GenAI), the arm runs only (study
# and trial runs hold no curves, and a chart legend of parents names nothing), the charts beside them.
ARM_FILTER = "tags.`synpro.level` = 'arm'"
# Sorted by name (arm first, then params and seed): any order but the default (start time) also keeps the
# UI from fetching the arms' parents and nesting the arms back under them.
BY_NAME = "tags.`mlflow.runName`"
READY_TIMEOUT_S = 300
# The dashboard reads the storage URL from here (not argv, where `ps` would show its password).
_OPTUNA_ENV = "SYNPRO_OPTUNA_STORAGE"
_OPTUNA_SERVER = ("import os, sys, optuna_dashboard; "
                  f"optuna_dashboard.run_server(os.environ['{_OPTUNA_ENV}'], host=sys.argv[1], port=int(sys.argv[2]))")


@app.command()
@guarded
def ui(
    workdir: Optional[Path] = WorkdirOpt,
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help="Tracking URI (default: the workdir's)."),
    optuna: bool = typer.Option(False, "--optuna", help="Serve Optuna's dashboard (optuna-dashboard) on the "
                                "workdir's Optuna storage instead of the MLflow UI."),
    optuna_storage: Optional[str] = typer.Option(None, "--optuna-storage", help="Optuna storage URL for --optuna "
                                                 "(default: the workdir's optuna.db; a server's URL works too)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: Optional[int] = typer.Option(None, help="Port to listen on (default 5000, or 8080 with --optuna)."),
    open_browser: Optional[bool] = typer.Option(None, "--open/--no-open", help="Open the page in a browser "
                                                "(default: when there is a display)."),
) -> None:
    """Start the MLflow UI on a workdir's runs and print (or open) the study's runs page: the arm runs,
    named by arm, searched params and seed, beside their charts (val_loss, effective tokens, multiplier;
    curves against tokens seen). With --optuna, Optuna's dashboard on the study's storage instead.

    Examples:
      synpro ui --workdir runs/quickstart
      synpro ui --workdir runs/quickstart --optuna
    """
    if open_browser is None:
        open_browser = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform == "darwin"
    port = port or (8080 if optuna else 5000)
    base = f"http://{host}:{port}"
    if optuna:
        storage = optuna_storage or sqlite_url(_workdir_file(workdir, "optuna.db", "--optuna-storage"))
        env = {**os.environ, _OPTUNA_ENV: storage}
        out.print(f"Optuna dashboard on {base} for {mask(storage)} (Ctrl-C to stop)", highlight=False)
        cmd = [sys.executable, "-c", _OPTUNA_SERVER, host, str(port)]
        raise typer.Exit(serve(cmd, env, ready=lambda: _announce(base + "/", open_browser),
                               health=base + "/api/studies"))
    if mlflow_uri is None:
        mlflow_uri = sqlite_url(_workdir_file(workdir, "mlflow.db", "--mlflow-uri"))
    # The store URI travels in the environment, not argv, where `ps` would show its password to anyone.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": mlflow_uri}
    out.print(f"MLflow UI on {base} for {mask(mlflow_uri)} (Ctrl-C to stop)", highlight=False)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1"]
    raise typer.Exit(serve(cmd, env, ready=lambda: _announce(runs_page(base), open_browser),
                           health=base + "/health"))


def _workdir_file(workdir: Optional[Path], name: str, option: str) -> Path:
    if workdir is None or not (workdir / name).exists():
        raise InputError.one(f"no {name} in {workdir}", hint=f"pass --workdir of a swept spec, or {option}")
    return workdir / name


def runs_page(base: str) -> str:
    """The runs page of the study a server holds (the newest, if several): model-training view, arm runs,
    charts; the server's home page when it holds none."""
    query = json.dumps({"max_results": 50, "order_by": ["creation_time DESC"]}).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search", data=query,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        experiments = [e for e in json.load(response).get("experiments", []) if e.get("name") != "Default"]
    if not experiments:
        return base + "/"
    search = urllib.parse.urlencode({"workflowType": "machine_learning", "searchFilter": ARM_FILTER,
                                     "orderByKey": BY_NAME, "orderByAsc": "true", "compareRunsMode": "CHART"},
                                    quote_via=urllib.parse.quote)
    return f"{base}/#/experiments/{experiments[0]['experiment_id']}/runs?{search}"


def _announce(url: str, open_browser: bool) -> None:
    out.print(f"open {url}", highlight=False, soft_wrap=True)
    if open_browser:
        webbrowser.open(url)


def _when_up(health: str, child: subprocess.Popen, ready: Callable[[], None]) -> None:
    """Call `ready` once `health` answers (the server is up), unless the server ends first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while child.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        return
    with contextlib.suppress(Exception):  # a page we cannot name is no reason to stop the server
        ready()


def serve(cmd: list[str], env: dict[str, str], grace_seconds: float = 10,
          ready: Callable[[], None] | None = None, health: str | None = None) -> int:
    """Run a server in a process group of its own and take the whole group down when we are stopped;
    `ready` runs in a thread once `health` answers.

    `mlflow server` forks its web workers: signalling only the direct child (or being killed
    while it runs) would leave them listening on the port. SIGINT, SIGTERM and SIGHUP stop the
    group (SIGKILL after `grace_seconds`); the exit code is 128 + the signal, as a shell reports it.
    """
    child = subprocess.Popen(cmd, env=env, start_new_session=True)
    stopped: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopped.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    if ready is not None and health is not None:
        threading.Thread(target=_when_up, args=(health, child, ready), daemon=True).start()
    try:
        deadline = None
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopped and deadline is None:
                    deadline = time.monotonic() + grace_seconds
                if deadline is not None and time.monotonic() > deadline:
                    os.killpg(child.pid, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # whatever of the group outlived its leader
    return 128 + stopped[0] if stopped else code
