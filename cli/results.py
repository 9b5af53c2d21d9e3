"""Commands that read what sweeps stored: results (the UIs are in cli/ui.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from cli.app import (ARM_FIELDS, RESULT_COLUMNS, ColumnsOpt, FloorOpt, Format, WorkdirOpt, app, guarded,
                     multi_objective, parse_columns, per_seed_multipliers, print_results, store_url,
                     with_caveats)
from synpro.display import finite


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
