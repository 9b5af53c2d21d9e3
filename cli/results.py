"""Commands that read what sweeps stored: results and the MLflow UI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from cli.app import (ARM_FIELDS, RESULT_COLUMNS, ColumnsOpt, FloorOpt, Format, WorkdirOpt, app, guarded,
                     multi_objective, out, parse_columns, per_seed_multipliers, print_results, store_url,
                     with_caveats)
from synpro.core.fs import sqlite_url
from synpro.core.secrets import mask
from synpro.display import finite
from synpro.errors import InputError


# What each figure rests on (synpro.caveats), beside the figures in CSV.
CAVEAT_FIELDS = ["synthetic_share", "synthetic_tokens", "synthetic_set_shares", "synthetic_below_floor",
                 "accuracy_at_chance", "accuracy_chance_range", "accuracy_caveat"]


def _cell(value: object) -> object:
    """A CSV cell: lists and maps as strict JSON (an interval reads [low, high])."""
    return json.dumps(finite(value)) if isinstance(value, (list, dict)) else value


@app.command()
@guarded
def results(
    workdir: Optional[Path] = WorkdirOpt,
    store: Optional[str] = typer.Option(None, "--store", help="SQLAlchemy URL of the results store."),
    study: Optional[str] = typer.Option(None, "--study", help="Only this study."),
    format: Format = typer.Option(Format.table, "--format", "-f", help="table, json or csv."),
    columns: Optional[str] = ColumnsOpt,
    synthetic_floor: float = FloorOpt,
) -> None:
    """Print stored results: per trial, each arm's loss, effective tokens and multiplier vs repetition
    (mean over seeds with a 95% interval paired by seed, and each seed's value), the share of its
    training tokens that were synthetic, accuracy, the reference used and the noise floor (JSON). A
    multi-objective study's trials also carry every objective's value (`objective_values`) and
    whether they are on the Pareto front (`pareto_optimal`).

    An arm under the synthetic floor is flagged (its multiplier is ≈ repetition by construction);
    an accuracy inside chance's 95% range on its item count is flagged "at chance" and gets no
    effective tokens or multiplier by accuracy. The table fits the terminal (or COLUMNS): columns
    that do not fit are left out and named; --columns picks them.

    Examples:
      synpro results --workdir runs/quickstart --format json
      COLUMNS=100 synpro results --workdir runs/quickstart --columns arm,synthetic,multiplier,accuracy
    """
    from store import Store

    wanted = parse_columns(columns, RESULT_COLUMNS)
    with Store(store_url(workdir, store)) as db:
        rows = with_caveats(db.results(study), db, synthetic_floor)
    if format is Format.json:
        sys.stdout.write(json.dumps(finite(rows), indent=2) + "\n")
    elif format is Format.csv:
        import csv

        writer = csv.writer(sys.stdout)
        pareto = ["objective_values", "pareto_optimal"] if multi_objective(rows) else []
        writer.writerow(["study", "trial", "params", *pareto, "arm", *ARM_FIELDS, *CAVEAT_FIELDS,
                         "per_seed_multiplier", "reference"])
        for trial in rows:
            for arm, r in trial["arms"].items():
                writer.writerow([trial["study"], trial["trial"], json.dumps(trial["params"]),
                                 *(_cell(trial.get(key)) for key in pareto), arm,
                                 *(_cell(r[f]) for f in ARM_FIELDS), *(_cell(r.get(f)) for f in CAVEAT_FIELDS),
                                 _cell(per_seed_multipliers(r)),
                                 _cell(trial.get("reference"))])
    else:
        print_results(rows, wanted)


@app.command()
@guarded
def ui(
    workdir: Optional[Path] = WorkdirOpt,
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help="Tracking URI (default: the workdir's)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(5000, help="Port to listen on."),
) -> None:
    """Start the MLflow UI on a workdir's runs (study → trial → arm, curves against tokens seen).

    Example:  synpro ui --workdir runs/quickstart --port 5000
    """
    if mlflow_uri is None:
        if workdir is None or not (workdir / "mlflow.db").exists():
            raise InputError.one(f"no MLflow store in {workdir}", hint="pass --workdir of a swept spec, or --mlflow-uri")
        mlflow_uri = sqlite_url(workdir / "mlflow.db")
    # The store URI travels in the environment, not argv, where `ps` would show its password to anyone.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": mlflow_uri}
    out.print(f"MLflow UI on http://{host}:{port} for {mask(mlflow_uri)} (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1"]
    raise typer.Exit(serve(cmd, env))


def serve(cmd: list[str], env: dict[str, str], grace_seconds: float = 10) -> int:
    """Run a server in a process group of its own and take the whole group down when we are stopped.

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


