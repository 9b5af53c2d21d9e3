"""The Typer app and what every command shares: error handling, consoles, spec and store lookup."""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

# Our own rich bars report progress; the libraries' tqdm bars and info logs would only interleave.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402

from synpro.core.fs import sqlite_url  # noqa: E402
from synpro.core.preempt import Preempted  # noqa: E402
from synpro.core.secrets import mask  # noqa: E402
from synpro import ledger  # noqa: E402
from cli.tables import Column, fitted, render, unknown_columns, width_of  # noqa: E402
from synpro.caveats import (AT_CHANCE, BY_CONSTRUCTION, DEFAULT_FLOOR, annotate, percent, set_shares,  # noqa: E402
                            warning_lines)
from synpro.display import fmt, seed_estimate  # noqa: E402
from synpro.errors import InputError  # noqa: E402

app = typer.Typer(
    name="synpro",
    help="Declarative sweeps for synthetic pretraining data in the data-bound regime.\n\n"
         "Example:  synpro validate experiments/quickstart.yaml && synpro sweep experiments/quickstart.yaml",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit it
)


def _version(value: bool) -> None:
    if value:
        from synpro import __version__

        typer.echo(f"synpro {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print SynPro's version and exit.")) -> None:
    """Declarative sweeps for synthetic pretraining data in the data-bound regime."""
# Piped output (CI logs, `| less`) gets room for the results table instead of rich's 80 columns, unless
# COLUMNS says how wide the reader is.
_PIPED_WIDTH = None if "COLUMNS" in os.environ else 160
out = Console(width=None if sys.stdout.isatty() else _PIPED_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPED_WIDTH)

ERROR_LOG = Path(os.environ.get("SYNPRO_ERROR_LOG", Path.home() / ".cache" / "synpro" / "last-error.log"))


_RETRY = "then run the same command again: finished work is kept"
# errno -> (what happened, what to do): faults of the machine, not of SynPro or of the spec.
MACHINE_FAULTS = {
    errno.ENOSPC: ("the disk is full", f"free space on that disk (or point --workdir at a larger one), {_RETRY}"),
    errno.EDQUOT: ("the disk quota is exceeded", f"free space or raise the quota, {_RETRY}"),
    errno.EROFS: ("the file system is read-only", f"point --workdir (experiment.workdir) at a writable folder, {_RETRY}"),
    errno.EACCES: ("permission denied", f"make that path writable for this user or point --workdir elsewhere, {_RETRY}"),
    errno.EPERM: ("operation not permitted", f"make that path writable for this user or point --workdir elsewhere, "
                                             f"{_RETRY}"),
}
# The same faults as SQLite words them (it reports no errno and no file name).
_SQLITE_FAULTS = {"database or disk is full": errno.ENOSPC, "readonly database": errno.EROFS,
                  "unable to open database file": errno.EACCES}


def machine_fault(exc: BaseException) -> str | None:
    """The one-screen message for a full, read-only or forbidden disk anywhere in `exc`'s chain."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in MACHINE_FAULTS:
            what, todo = MACHINE_FAULTS[exc.errno]
            where = exc.filename if exc.filename is not None else "a file"
            return f"{where}: {what} ({exc.strerror or os.strerror(exc.errno)})\nhint: {todo}"
        for words, code in _SQLITE_FAULTS.items():
            if words in str(exc):
                what, todo = MACHINE_FAULTS[code]
                return f"a SQLite database (results store, Optuna or MLflow): {what} ({words})\nhint: {todo}"
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return None


def _wants_json(kwargs: dict[str, Any]) -> bool:
    """Whether the command was asked for JSON (`--format json`, whatever its parameter is called)."""
    return any(getattr(kwargs.get(name), "value", kwargs.get(name)) == "json" for name in ("format", "fmt"))


def _json_errors(errors: list[dict[str, Any]], hint: str | None = None) -> None:
    """Errors for scripts, on stdout where they read the JSON: {"errors": [{file, line, key, message}]}."""
    sys.stdout.write(json.dumps({"errors": errors, **({"hint": mask(hint)} if hint else {})}, indent=2) + "\n")


def _blame(exc: InputError, kwargs: dict[str, Any]) -> str:
    """The file an error without one is about: a flag's is the command line, anything else the spec the
    command was given (if any), never a made-up `<input>`."""
    if kwargs.get("spec_path") is not None and not any((p.key or "").startswith("--") for p in exc.problems):
        return str(kwargs["spec_path"])
    return "command line"


def guarded(command: Callable) -> Callable:
    """Turn user errors and machine faults into one screen and exit code 2, never a traceback; nothing
    printed or logged carries a secret."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            if exc.file is None:
                exc.file = _blame(exc, kwargs)
            err.print(f"[bold red]error:[/] {escape(mask(str(exc)))}", highlight=False, soft_wrap=True)
            if _wants_json(kwargs):
                _json_errors([{"file": exc.file, "line": p.line, "key": p.key, "message": mask(p.message)}
                              for p in exc.problems], exc.hint)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: finished work is kept; run the same command again to resume.")
            raise typer.Exit(130) from None
        except Preempted as exc:
            err.print(f"[yellow]pre-empted[/]: {escape(mask(str(exc)))}; its checkpoint is kept: run the same "
                      "command again to resume.", highlight=False, soft_wrap=True)
            raise typer.Exit(143) from None
        except typer.Exit:
            raise
        except Exception as exc:  # noqa: BLE001 - last resort: short message, full trace in a file
            fault = machine_fault(exc)
            if fault is not None:
                err.print(f"[bold red]error:[/] {escape(mask(fault))}", highlight=False, soft_wrap=True)
                if _wants_json(kwargs):
                    _json_errors([{"file": None, "line": None, "key": None, "message": mask(fault)}])
                raise typer.Exit(2) from None
            where = "not written (the error log's disk failed too)"
            try:
                ERROR_LOG.parent.mkdir(parents=True, exist_ok=True)
                ERROR_LOG.write_text(mask(traceback.format_exc()))
                where = f"in {ERROR_LOG}"
            except OSError:
                pass
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(mask(str(exc)))}\n"
                      f"The full traceback is {where}; finished work is kept.", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def load_spec_with(spec_path: Path, overrides: dict[str, Any], *, machine: bool = True):
    """Parse, apply command-line overrides, and resolve (plugins; with `machine`, also the corpus,
    budget, models and URLs on this machine)."""
    from synpro.resolve import resolve
    from synpro.spec import load_spec

    spec = load_spec(spec_path)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        try:
            spec = spec.with_params(overrides)
        except Exception as exc:  # pydantic ValidationError from a bad flag value
            raise InputError.one(f"bad command-line override: {exc}", file=str(spec_path)) from None
    resolve(spec, machine=machine)
    return spec


SpecArg = typer.Argument(..., exists=False, help="The experiment spec (YAML).", show_default=False)
WorkdirOpt = typer.Option(None, "--workdir", "-w", help="Where stages, stores and MLflow live (default: the spec's).")


def store_url(workdir: Optional[Path], store: Optional[str]) -> str:
    if store:
        return store
    if workdir is None:
        found = sorted(Path("runs").glob("*/synpro.db"))
        if len(found) != 1:
            raise InputError.one("say which results to read: --workdir DIR or --store URL"
                                 + (f" (found {len(found)} workdirs under runs/)" if found else ""))
        workdir = found[0].parent
    db = workdir / "synpro.db"
    if not db.exists():
        raise InputError.one(f"no results store at {db}", file=str(db),
                             hint="run `synpro sweep SPEC` first, or pass --store URL")
    return sqlite_url(db)


ColumnsOpt = typer.Option(None, "--columns", help="Comma-separated columns of the table, e.g. "
                          "arm,synthetic,multiplier,accuracy (trial and arm are always shown; default: all that "
                          "fit the terminal).")
FloorOpt = typer.Option(DEFAULT_FLOOR, "--synthetic-floor", min=0.0, max=1.0, help="Flag arms whose synthetic "
                        "share of training tokens is below this fraction: their multiplier is ≈ repetition by "
                        "construction.")


def parse_columns(value: Optional[str], columns: list[Column]) -> list[str] | None:
    """--columns as keys, InputError naming the unknown ones."""
    if value is None:
        return None
    wanted = [w.strip() for w in value.split(",") if w.strip()]
    unknown = unknown_columns(columns, wanted)
    if unknown:
        raise InputError.one(f"unknown column(s) {', '.join(unknown)}", key="--columns",
                             hint=f"choose among {','.join(c.key for c in columns)}")
    return wanted


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


ARM_FIELDS = ["final_val_loss", "tokens_seen", "unique_tokens", "effective_tokens",
              "effective_tokens_extrapolated", "multiplier_vs_repetition", "multiplier_ci", "n_seeds",
              "multiplier_method", "final_accuracy", "effective_tokens_accuracy", "multiplier_accuracy",
              "mlflow_run_id"]


def per_seed_multipliers(arm: dict[str, Any]) -> dict[str, Any]:
    """{seed: multiplier} of one arm of the results."""
    return {seed: values["multiplier_vs_repetition"] for seed, values in arm.get("per_seed", {}).items()}


def multi_objective(results: list[dict[str, Any]]) -> bool:
    """Whether any trial is a multi-objective study's (it has `objective_values` and `pareto_optimal`)."""
    return any("objective_values" in t for t in results)


def with_caveats(rows: list[dict[str, Any]], db: Any, floor: float = DEFAULT_FLOOR) -> list[dict[str, Any]]:
    """`Store.results()` rows with what each figure rests on (`synpro.caveats`), judged with each study's
    stored spec where the evaluations did not record their chance levels."""
    specs = {name: db.study(name)["spec_yaml"] for name in {t["study"] for t in rows}}
    return annotate(rows, floor=floor, spec_yaml=specs)


def _multiplier_cell(r: dict[str, Any]) -> str:
    cell = seed_estimate(r["multiplier_vs_repetition"], r["multiplier_ci"], r["n_seeds"])
    return f"{cell} {BY_CONSTRUCTION}" if r.get("synthetic_below_floor") and cell != "-" else cell


def _accuracy_cells(r: dict[str, Any]) -> list[str]:
    """accuracy, D_eff and × repetition by accuracy; at chance, the reason instead of a number."""
    if r.get("final_accuracy") is None:
        return ["-", "-", "-"]
    caveat = r.get("accuracy_caveat")
    accuracy = fmt(r["final_accuracy"]) + (f" ({AT_CHANCE})" if r.get("accuracy_at_chance") else "")
    if caveat:
        return [accuracy, caveat, caveat]
    return [accuracy, fmt(r.get("effective_tokens_accuracy")),
            r.get("multiplier_accuracy_caveat") or fmt(r.get("multiplier_accuracy"))]


RESULT_COLUMNS = [  # key, header, numeric, required, rank (the lowest goes first when the terminal is narrow)
    Column("trial", "trial", required=True), Column("params", "params", numeric=False, rank=3),
    Column("objectives", "objectives", numeric=False, rank=2), Column("pareto", "Pareto", rank=2),
    Column("arm", "arm", numeric=False, required=True), Column("loss", "val loss", rank=5),
    Column("seen", "tokens seen", rank=2), Column("unique", "unique", rank=1),
    Column("synthetic", "synth. share", rank=7), Column("synthetic_tokens", "synth. tokens", rank=3),
    Column("sets", "synth. share per set", numeric=False, rank=0),
    Column("d_eff", "D_eff", rank=6), Column("extrapolated", "extrap.", rank=1),
    Column("multiplier", "× repetition [95%]", numeric=False, rank=8),
    Column("per_seed", "per seed", numeric=False, rank=0), Column("accuracy", "accuracy", numeric=False, rank=5),
    Column("d_eff_acc", "D_eff (acc)", numeric=False, rank=4), Column("multiplier_acc", "× rep. (acc)",
                                                                        numeric=False, rank=4)]


RESULTS_TITLE = ("SynPro results (means over seeds; D_eff inverts the reference's curve, by loss and by accuracy; "
                 "× repetition: tail-mean ratio, 95% interval paired by seed)")


def _params(trial: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in trial["params"].items()) or "-"


def print_results(results: list[dict[str, Any]], columns: list[str] | None = None, *,
                  title: str = RESULTS_TITLE, fit: list[str] | None = None) -> None:
    """The results table at the terminal's width (COLUMNS read now): see `_print_results`."""
    with fitted(out):
        _print_results(results, columns, title=title, fit=fit)


def _print_results(results: list[dict[str, Any]], columns: list[str] | None = None, *,
                   title: str = RESULTS_TITLE, fit: list[str] | None = None) -> None:
    """The results table (rows annotated by `with_caveats`), fitted to the terminal, then a line per
    flagged arm and per column left out. `columns`: the user's choice; `fit`: the columns to fit to the
    terminal when there is none (default: all)."""
    pareto = multi_objective(results)  # two more columns: every objective's value, and * on the Pareto front
    rows = []
    for trial in results:
        params = _params(trial)
        for arm, r in trial["arms"].items():
            rows.append({
                "trial": str(trial["trial"]), "params": params, "arm": arm,
                "objectives": ", ".join(fmt(v) for v in trial.get("objective_values") or []) or "-",
                "pareto": "*" if trial.get("pareto_optimal") else "",
                **dict(zip(("loss", "seen", "unique", "d_eff", "extrapolated"),
                           (fmt(r.get(f)) for f in ARM_FIELDS[:5]))),
                "synthetic": percent(r.get("synthetic_share")), "synthetic_tokens": fmt(r.get("synthetic_tokens")),
                "sets": set_shares(r),
                "multiplier": _multiplier_cell(r),
                "per_seed": ", ".join(f"{s}: {fmt(v)}" for s, v in per_seed_multipliers(r).items()),
                **dict(zip(("accuracy", "d_eff_acc", "multiplier_acc"), _accuracy_cells(r)))})
            params = ""
    available = [c for c in RESULT_COLUMNS if (pareto or c.key not in ("objectives", "pareto"))
                 and (fit is None or columns is not None or c.key in fit)]
    hidden = render(out, title, available, rows, columns)
    if pareto:
        out.print("Pareto: * marks the trials no other finished trial beats on every objective (objectives in the "
                  "order of the spec's search.objectives).", highlight=False)
    if any(c.key == "params" for c in hidden):
        for trial in results:
            out.print(f"trial {trial['trial']}: {_params(trial)}", highlight=False)
    for line in warning_lines(results):
        out.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    if hidden and columns is None:
        out.print(f"left out to fit {width_of(out)} columns: {', '.join(c.key for c in hidden)} "
                  f"(--columns {','.join(c.key for c in available)} chooses; --format json has everything)",
                  highlight=False)
    references = {json.dumps(t.get("reference"), sort_keys=True) for t in results if t.get("reference")}
    for reference in references:
        out.print(f"reference: {reference}", highlight=False)
    costs = [([str(t["trial"]), arm], r) for t in results for arm, r in t["arms"].items() if ledger.measured(r)]
    if costs:
        out.print(ledger.table("Measured cost (means over seeds)", costs, ["trial", "arm"]))


