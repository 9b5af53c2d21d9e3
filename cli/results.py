"""Commands that read what sweeps stored: results (the UIs are in cli/ui.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from cli.app import (ARM_FIELDS, Format, WorkdirOpt, app, guarded, multi_objective, out, per_seed_multipliers,
                     print_results, store_url)
from synpro.display import finite


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
    and the noise floor (JSON). A multi-objective study's trials also carry every objective's value
    (`objective_values`) and whether they are on the Pareto front (`pareto_optimal`).

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
        pareto = ["objective_values", "pareto_optimal"] if multi_objective(rows) else []
        writer.writerow(["study", "trial", "params", *pareto, "arm", *ARM_FIELDS, "per_seed_multiplier", "reference"])
        for trial in rows:
            for arm, r in trial["arms"].items():
                writer.writerow([trial["study"], trial["trial"], json.dumps(trial["params"]),
                                 *(_cell(trial.get(key)) for key in pareto), arm,
                                 *(_cell(r[f]) for f in ARM_FIELDS), _cell(per_seed_multipliers(r)),
                                 _cell(trial.get("reference"))])
    else:
        print_results(rows)
