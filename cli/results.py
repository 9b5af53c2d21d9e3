"""Commands that read what sweeps stored: results and the MLflow UI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from cli.app import ARM_FIELDS, Format, WorkdirOpt, app, guarded, out, per_seed_multipliers, print_results, store_url
from synpro.core.fs import sqlite_url
from synpro.display import finite
from synpro.errors import InputError


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
) -> None:
    """Print stored results: per trial, each arm's loss, effective tokens and multiplier vs repetition
    (mean over seeds with a 95% interval paired by seed, and each seed's value), the reference used
    and the noise floor (JSON).

    Example:  synpro results --workdir runs/quickstart --format json
    """
    from store import Store

    with Store(store_url(workdir, store)) as db:
        rows = db.results(study)
    if format is Format.json:
        sys.stdout.write(json.dumps(finite(rows), indent=2) + "\n")
    elif format is Format.csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["study", "trial", "params", "arm", *ARM_FIELDS, "per_seed_multiplier", "reference"])
        for trial in rows:
            for arm, r in trial["arms"].items():
                writer.writerow([trial["study"], trial["trial"], json.dumps(trial["params"]), arm,
                                 *(_cell(r[f]) for f in ARM_FIELDS), _cell(per_seed_multipliers(r)),
                                 _cell(trial.get("reference"))])
    else:
        print_results(rows)


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
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    out.print(f"MLflow UI on http://{host}:{port} for {mlflow_uri} (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow_uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    raise typer.Exit(subprocess.call(cmd, env=env))


