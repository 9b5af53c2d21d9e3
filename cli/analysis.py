"""Commands that analyse stored results: fit scaling laws, compare arms, write a study report."""

from __future__ import annotations

import csv
import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from cli.app import (RESULT_COLUMNS, ColumnsOpt, FloorOpt, WorkdirOpt, app, guarded, out, parse_columns,
                     print_results, store_url, with_caveats)
from cli.tables import Column, fitted, render, width_of
from synpro import ledger
from synpro.core.fs import sqlite_url
from synpro.display import constant_interval, estimate, finite, fmt, identification, seed_estimate
from synpro.errors import InputError

StoreOpt = typer.Option(None, "--store", help="SQLAlchemy URL of the results store.")
_CSV_COLUMNS = {"N": "params", "D": "tokens", "U": "unique_tokens", "L": "loss"}


class LawName(str, Enum):
    chinchilla = "chinchilla"
    data_constrained = "data-constrained"


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


def _read_points(path: Path, law: str) -> dict[str, Any]:
    """The CSV's columns the law needs, as arrays; InputError naming the column or row at fault."""
    import numpy as np

    from synpro.scaling import LAWS

    needed = {key: _CSV_COLUMNS[key] for key in (*LAWS.get(law).inputs, "L")}
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError.one(f"cannot read the points: {exc.strerror}", file=str(path)) from None
    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [column for column in needed.values() if column not in header]
    if missing:
        raise InputError.one(f"missing column(s) {', '.join(missing)} (the header has: "
                             f"{', '.join(header) or 'nothing'})", file=str(path), line=1,
                             hint=f"the {law} law needs columns {','.join(needed.values())}")
    values: dict[str, list[float]] = {key: [] for key in needed}
    for row_number, row in enumerate(reader, start=1):
        for key, column in needed.items():
            raw = (row.get(column) or "").strip()
            try:
                value = float(raw)
            except ValueError:
                raise InputError.one(f"row {row_number}: {column} {raw!r} is not a number", file=str(path),
                                     line=reader.line_num, key=column) from None
            if not (math.isfinite(value) and value > 0):
                raise InputError.one(f"row {row_number}: {column} must be a finite positive number, got {raw!r}",
                                     file=str(path), line=reader.line_num, key=column)
            values[key].append(value)
    if not values["L"]:
        raise InputError.one("no data rows under the header", file=str(path), line=2)
    return {key: np.array(column) for key, column in values.items()}


def _parse_freeze(items: list[str]) -> dict[str, float]:
    frozen = {}
    for item in items:
        name, sep, raw = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            frozen[name.strip()] = float(raw)
        except ValueError:
            raise InputError.one(f"--freeze {item!r} is not NAME=VALUE with a numeric VALUE", key="freeze",
                                 hint="e.g. --freeze alpha=0.35266 --freeze E=1.8691") from None
    return frozen


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(finite(payload), indent=2) + "\n")


def _print_constants(title: str, summary: dict[str, Any]) -> None:
    """A fit's constants (a `FitResult.summary()`): each with its interval and identification, or
    marked frozen; then what the fit had to go on."""
    table = Table(title=title, title_justify="left")
    for column in ("constant", "estimate", f"{summary['settings']['ci_level']:.0%} interval", "identified", "how"):
        table.add_column(column, justify="right" if column == "estimate" else "left")
    tied = summary["settings"]["tie_exponents"]
    for name, value in summary["constants"].items():
        if name in summary["frozen"]:
            table.add_row(name, fmt(value), "-", "-", "frozen")
            continue
        table.add_row(name, fmt(value), constant_interval(name, summary["ci"], summary["interval"]),
                      identification(summary["identified"].get(name)),
                      "tied to alpha" if tied and name == "beta" else "fitted")
    out.print(table)
    out.print(f"Residual spread {summary['residual_spread']:.3g} (RMS of log predicted/observed); "
              f"{summary['points_per_free_constant']:.3g} points per free constant.", highlight=False)


def _print_intervals(n_boot: int, note: str = "") -> None:
    """Say where the intervals came from, or that there are none and how to get them."""
    if n_boot:
        out.print(f"Intervals: percentile bootstrap of {n_boot} refits{note}.", highlight=False)
    else:
        out.print("No intervals: no bootstrap ran (use --bootstrap N).", highlight=False)


def _fit_points(points: Path, law: LawName | None, frozen: dict[str, float], tie_exponents: bool,
                n_boot: int, format: TableOrJson) -> None:
    from synpro.scaling.fit import fit_law

    if law is None:
        raise InputError.one("say which law to fit: --law chinchilla or --law data-constrained", key="law")
    columns = _read_points(points, law.value)
    try:
        result = fit_law(law.value, columns["L"], N=columns["N"], D=columns["D"], U=columns.get("U"),
                         frozen=frozen, tie_exponents=tie_exponents, n_boot=n_boot)
    except InputError as exc:
        exc.file = str(points)
        raise
    if format is TableOrJson.json:
        _print_json(result.summary())
        return
    _print_constants(f"{result.law} law fitted to {result.n_points} points of {points} "
                     f"(fit loss {result.loss:.3g})", result.summary())
    _print_intervals(n_boot)


def _log_to_mlflow(workdir: Path, study: str, run_id: str, summaries: list[dict]) -> bool:
    """Attach the fits to the study's MLflow run when the workdir has a tracking store."""
    db = workdir / "mlflow.db"
    if not db.exists():
        return False
    from synpro.tracking import Tracker

    tracker = Tracker(sqlite_url(db), study, workdir / "mlartifacts")
    tracker.log_dict(run_id, summaries, "fits.json")
    tags = {}
    for s in summaries:
        if "R_D_star" in s["constants"]:  # the estimate stays a plain number; its interval and flag beside it
            tags[f"synpro.fit.R_D_star.{s['arm']}"] = f"{s['constants']['R_D_star']:.6g}"
            tags[f"synpro.fit.R_D_star_interval.{s['arm']}"] = constant_interval("R_D_star", s["ci"], s["interval"])
            tags[f"synpro.fit.R_D_star_identified.{s['arm']}"] = identification(s["identified"]["R_D_star"])
    tracker.set_tags(run_id, tags)
    return True


def _fit_study(url: str, workdir: Optional[Path], study: str, arm: Optional[str], frozen: dict[str, float],
               tie_exponents: bool, n_boot: Optional[int], format: TableOrJson) -> None:
    from store import Store
    from synpro.fits import fit_study, save_fits

    with Store(url) as db:
        fits = fit_study(db, study, arm=arm, frozen=frozen, tie_exponents=tie_exponents, n_boot=n_boot)
        ids = save_fits(db, study, fits)
        run_id = db.study(study)["mlflow_run_id"]
    summaries = [{"id": fit_id, **fit.summary()} for fit_id, fit in zip(ids, fits.all())]
    logged = bool(workdir and run_id and _log_to_mlflow(workdir, study, run_id, summaries))
    source = "--bootstrap" if n_boot is not None else "the spec's analysis.bootstrap"
    if format is TableOrJson.json:
        _print_json({"study": study, "fits": summaries, "skipped": fits.skipped,
                     "bootstrap": {"n": fits.n_boot, "from": source}})
        return
    table = Table(title=f"What a token of each arm is worth (study {study}; R_D* per arm with the base frozen, "
                        "no excess-parameter discount)", title_justify="left")
    for column in ("arm", "law", "points", "R_D*", "95% interval", "identified", "epochs", "D'/U [95%]", "D'/D",
                   "ceiling 1+R_D*", "fit id"):
        table.add_column(column, justify="left" if column in ("arm", "law", "identified") else "right")
    for s in summaries:
        r = s["constants"].get("R_D_star")
        table.add_row(s["arm"], s["law"], fmt(s["n_points"]), fmt(r),
                      "-" if r is None else constant_interval("R_D_star", s["ci"], s["interval"]),
                      "-" if r is None else identification(s["identified"]["R_D_star"]), fmt(s["epochs"]),
                      "-" if r is None else estimate(s["unique_value"], s["unique_value_ci"]),
                      fmt(s["token_value"]), fmt(s["ceiling"]), str(s["id"]))
    out.print(table)
    if fits.base is not None:
        _print_constants(f"Base constants, fitted on arm {fits.base.points.arm!r}", fits.base.result.summary())
    # Base constants not fitted: frozen in the base fit, or (no base fit) given for every arm.
    base_source = fits.base or (fits.arms[0] if fits.arms else None)
    settings = base_source.result.settings if base_source else {"frozen": {}, "frozen_why": {}}
    for name, value in settings["frozen"].items():
        out.print(f"[bold]{name}[/] frozen at {fmt(value)}: {settings['frozen_why'][name]}", highlight=False)
    for fit in fits.arms:
        out.print(f"{fit.points.arm}: residual spread {fit.result.residual_spread:.3g} (RMS log), "
                  f"{fit.result.points_per_free_constant:.3g} points per free constant", highlight=False)
    for name, why in fits.skipped.items():
        out.print(f"[yellow]{name}[/]: not fitted: {why}", highlight=False)
    _print_intervals(fits.n_boot, f" per fit (from {source}; 0 skips); R_D* intervals hold the base constants fixed")
    out.print(f"Saved {len(ids)} fit(s) to the store" + (" and the study's MLflow run." if logged else "."))


@app.command()
@guarded
def fit(
    points: Optional[Path] = typer.Option(None, "--points", help="CSV with columns params,tokens,unique_tokens,loss."),
    law: Optional[LawName] = typer.Option(None, "--law", help="Law to fit to --points."),
    workdir: Optional[Path] = WorkdirOpt,
    store: Optional[str] = StoreOpt,
    study: Optional[str] = typer.Option(None, "--study", help="Fit this study's stored runs, per arm."),
    arm: Optional[str] = typer.Option(None, "--arm", help="With --study: only this arm (plus the base)."),
    format: TableOrJson = typer.Option(TableOrJson.table, "--format", "-f", help="table or json."),
    tie_exponents: bool = typer.Option(False, "--tie-exponents", help="Fit one exponent for alpha and beta."),
    freeze: list[str] = typer.Option([], "--freeze", help="Hold a constant fixed: NAME=VALUE (repeatable)."),
    bootstrap: Optional[int] = typer.Option(
        None, "--bootstrap", min=0, help="Bootstrap refits for 95% intervals, run in parallel processes; 0: none "
                                         "(default: none for --points, the spec's analysis.bootstrap for --study)."),
) -> None:
    """Fit a scaling law to points in a CSV, or per-recipe laws to a study's stored runs.

    With --points, prints the fitted constants (JSON: "constants" keyed A, B, E, alpha, beta,
    R_D_star, R_N_star as the law has them; "ci" null without --bootstrap, else a low-high pair per
    fitted constant, with "interval" saying how; "identified" per fitted constant with a reason when
    not; "residual_spread", "points_per_free_constant", "loss"). With --study, fits the base law
    on the oracle's unique-data points (freezing what one model size cannot identify, and saying
    so), then R_D* for each other arm, bootstrapped by default, and saves the fits to the store.

    Examples:
      synpro fit --points runs.csv --law data-constrained --tie-exponents --bootstrap 200 --format json
      synpro fit --workdir runs/quickstart --study quickstart
    """
    frozen = _parse_freeze(freeze)
    if (points is None) == (study is None):
        raise InputError.one("give exactly one of --points FILE.csv or --study NAME", key="points",
                             hint="synpro fit --help shows both forms")
    if points is not None:
        if workdir or store or arm:
            raise InputError.one("--workdir, --store and --arm apply to --study fits, not to --points", key="points")
        _fit_points(points, law, frozen, tie_exponents, bootstrap or 0, format)
        return
    if law is not None:
        raise InputError.one("--law applies to --points; study fits use the base law plus R_D* per arm", key="law")
    _fit_study(store_url(workdir, store), workdir, study, arm, frozen, tie_exponents, bootstrap, format)


def _reports_dir(url: str) -> Path:
    """`reports/` beside a SQLite store (the workdir), else in the current folder."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).parent / "reports"
    return Path("reports")


def _write_figures(db: Any, study: str, folder: Path) -> list[Path]:
    from synpro import plots
    from synpro.report import study_figures

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in study_figures(db, study).items():
        figure.savefig(folder / name)
        plots.close(figure)
        written.append(folder / name)
    return written


def _pareto_front(db: Any, study: str) -> dict[str, Any] | None:
    """A multi-objective study's Pareto-optimal trials with their values (None: one objective)."""
    from synpro.report import objective_name

    objective = db.study(study)["objective"] or {}
    if "objectives" not in objective:
        return None
    return {"objectives": [f"{o['direction']} {objective_name(o)}" for o in objective["objectives"]],
            "trials": [{"trial": t["trial"], "values": t["objective_values"]} for t in db.results(study)
                       if t.get("pareto_optimal")]}


def _best_multiplier(row: dict[str, Any]) -> str:
    """The best trial's mean multiplier over seeds with its interval (`--format json`: each seed's)."""
    if row["multiplier_trial"] is None:
        return "-"
    return f"#{row['multiplier_trial']}: " + seed_estimate(row["multiplier_vs_repetition"], row["multiplier_ci"],
                                                             row["n_seeds"])


@app.command()
@guarded
def compare(
    workdir: Optional[Path] = WorkdirOpt,
    store: Optional[str] = StoreOpt,
    study: Optional[str] = typer.Option(None, "--study", help="Only this study (default: every study)."),
    out_dir: Optional[Path] = typer.Option(None, "--out",
                                           help="Folder for the PNG plots (default: the workdir's reports/)."),
    format: TableOrJson = typer.Option(TableOrJson.table, "--format", "-f", help="table or json."),
    across_trials: bool = typer.Option(False, "--across-trials", help="Means over trials per arm (each "
                                       "mean says how many trials it rests on) instead of a row per trial and arm."),
    columns: Optional[str] = ColumnsOpt,
    synthetic_floor: float = FloorOpt,
) -> None:
    """Compare arms side by side and write plots for each study: per trial (its searched params) and
    arm, the final loss, effective tokens, multiplier vs repetition, synthetic share and accuracy (with
    the caveats of `synpro results`); then per arm the latest fitted R_D* with its interval and whether
    the points identify it. Trials differ in what was searched, so they are not averaged unless
    --across-trials asks. JSON: "arms" (per arm, over trials), "trials" (the annotated results).

    Examples:
      synpro compare --workdir runs/quickstart --out reports/
      synpro compare --workdir runs/quickstart --across-trials
    """
    from store import Store
    from synpro.fits import token_worth, worth_interval

    url = store_url(workdir, store)
    folder = out_dir or _reports_dir(url)
    wanted = parse_columns(columns, RESULT_COLUMNS)
    with Store(url) as db:
        trials = with_caveats(db.results(study), db, synthetic_floor)
        rows = db.compare(study)
        for row in rows:
            row.update(token_worth(row["mean_epochs"], row["r_d_star"]),
                       unique_value_ci=worth_interval(row["mean_epochs"], row["r_d_star_ci"]))
        names = list(dict.fromkeys(r["study"] for r in rows))
        written = [path for name in names for path in _write_figures(db, name, folder / name)]
        fronts = {name: front for name in names if (front := _pareto_front(db, name)) is not None}
    if format is TableOrJson.json:
        _print_json({"arms": rows, "trials": trials, "plots": [str(p) for p in written],
                     **({"pareto": fronts} if fronts else {})})
        return
    if across_trials:
        with fitted(out):
            _print_across_trials(rows)
    else:
        print_results(trials, wanted, fit=BY_TRIAL, title="Arms side by side, per trial (means over seeds; D_eff "
                      "inverts the reference's curve; × repetition: tail-mean ratio, 95% interval paired by seed)")
        _print_fits(rows)
    costs = [([r["study"], r["arm"]], r) for r in rows if ledger.measured(r)]
    if costs:
        out.print(ledger.table("Measured cost (means over trials)", costs, ["study", "arm"], prefix="mean_"))
    for name, front in fronts.items():
        out.print(f"{name}: Pareto front over {'; '.join(front['objectives'])}: "
                  + (", ".join(f"#{t['trial']} ({', '.join(fmt(v) for v in t['values'])})" for t in front["trials"])
                     or "no finished trial yet"), highlight=False)
    for path in written:
        out.print(f"wrote {path}", highlight=False)


BY_TRIAL = ["trial", "params", "arm", "loss", "synthetic", "d_eff", "multiplier", "accuracy", "d_eff_acc",
            "multiplier_acc"]


def _print_fits(rows: list[dict[str, Any]]) -> None:
    """Per arm, the latest fitted R_D* (a fit over every trial's points) with its interval."""
    fitted = [r for r in rows if r["r_d_star"] is not None]
    if not fitted:
        out.print("No fitted R_D* yet: synpro fit --study NAME fits one per arm.")
        return
    table = Table(title="What a token of each arm is worth (latest fit over the study's points)", title_justify="left")
    for column in ("study", "arm", "epochs", "R_D* [95% interval]", "R_D* identified", "D'/U [95%]"):
        table.add_column(column, justify="left" if column in ("study", "arm", "R_D* identified") else "right")
    for r in fitted:
        table.add_row(r["study"], r["arm"], fmt(r["mean_epochs"]), estimate(r["r_d_star"], r["r_d_star_ci"]),
                      identification(r["r_d_star_identified"]), estimate(r["unique_value"], r["unique_value_ci"]))
    out.print(table)


def _over(r: dict[str, Any], key: str, count: str) -> str:
    """A mean over trials, saying how many trials it rests on when not all of them."""
    value = fmt(r[key])
    return value if r[key] is None or r.get(count) in (None, r["n_trials"]) else f"{value} ({r[count]}/{r['n_trials']} trials)"


ACROSS_TRIALS = [Column("study", "study", numeric=False, required=True), Column("arm", "arm", numeric=False, required=True),
                 Column("trials", "trials", rank=2), Column("loss", "mean final loss", numeric=False, rank=4),
                 Column("best_loss", "best final loss", rank=1), Column("d_eff", "mean D_eff", numeric=False, rank=3),
                 Column("multiplier", "× repetition", numeric=False, rank=6),
                 Column("best", "best trial × repetition [95%]", numeric=False, rank=5),
                 Column("epochs", "epochs", rank=0), Column("r_d_star", "R_D* [95% interval]", numeric=False, rank=3),
                 Column("identified", "R_D* identified", numeric=False, rank=1),
                 Column("unique_value", "D'/U [95%]", numeric=False, rank=2)]


def _print_across_trials(rows: list[dict[str, Any]]) -> None:
    cells = []
    for r in rows:
        fitted = r["r_d_star"] is not None
        cells.append({"study": r["study"], "arm": r["arm"], "trials": f"{r['n_finished']}/{r['n_trials']}",
                      "loss": _over(r, "mean_final_loss", "n_trials_loss"),
                      "best_loss": fmt(r["best_final_loss"]),
                      "d_eff": _over(r, "mean_effective_tokens", "n_trials_effective_tokens"),
                      "multiplier": _over(r, "mean_multiplier", "n_trials_multiplier"), "best": _best_multiplier(r),
                      "epochs": fmt(r["mean_epochs"]), "r_d_star": estimate(r["r_d_star"], r["r_d_star_ci"]),
                      "identified": identification(r["r_d_star_identified"]) if fitted else "-",
                      "unique_value": estimate(r["unique_value"], r["unique_value_ci"])})
    hidden = render(out, "Arms side by side (means over trials; D_eff inverts the oracle's loss curve)",
                    ACROSS_TRIALS, cells)
    if hidden:
        out.print(f"left out to fit {width_of(out)} columns: {', '.join(c.header for c in hidden)} (--format json "
                  "has everything)", highlight=False)
    if any(r["mean_final_accuracy"] is not None for r in rows):
        by_accuracy = Table(title="By downstream accuracy (D_eff inverts the oracle's average-accuracy curve)",
                            title_justify="left")
        for column in ("study", "arm", "mean accuracy", "mean D_eff (accuracy)", "× repetition (accuracy)"):
            by_accuracy.add_column(column, justify="left" if column in ("study", "arm") else "right")
        for r in rows:
            by_accuracy.add_row(r["study"], r["arm"], *(_over(r, key, count) for key, count in (
                ("mean_final_accuracy", "n_trials_accuracy"),
                ("mean_effective_tokens_accuracy", "n_trials_effective_tokens_accuracy"),
                ("mean_multiplier_accuracy", "n_trials_multiplier_accuracy"))))
        out.print(by_accuracy)
        out.print("Means by accuracy are raw: a row per trial (without --across-trials) says which accuracies are "
                  "at chance.", highlight=False)
    if not any(r["r_d_star"] is not None for r in rows):
        out.print("No fitted R_D* yet: synpro fit --study NAME fits one per arm.")


@app.command()
@guarded
def report(
    workdir: Optional[Path] = WorkdirOpt,
    store: Optional[str] = StoreOpt,
    study: str = typer.Option(..., "--study", help="The study to report on."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="The HTML file (default: reports/STUDY.html "
                                                                 "in the workdir)."),
) -> None:
    """Write one self-contained HTML page for a study: results with links to their MLflow runs, accuracy,
    each synthetic set's diagnostics (pass rate, rejections by reason, samples), comparison, fits, plots
    and the spec (folded).

    Example:  synpro report --workdir runs/quickstart --study quickstart --out quickstart.html
    """
    from store import Store
    from synpro.report import render_report

    url = store_url(workdir, store)
    path = out_file or _reports_dir(url) / f"{study}.html"
    with Store(url) as db:  # the workdir (given, or beside a SQLite store) holds the synthetic sets
        page = render_report(db, study, workdir=workdir or _reports_dir(url).parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    out.print(f"wrote {path} ({len(page) / 1e3:,.0f} kB)", highlight=False)
