"""Commands that run work: validate a spec, sweep it, generate a synthetic set."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from cli.app import Format, SpecArg, WorkdirOpt, app, guarded, load_spec_with, out, print_results, with_caveats
from synpro.core.secrets import mask
from synpro.errors import InputError


EXECUTOR_HELP = ("Where stages run, over the spec's executor.kind: local, slurm (a job per stage through submitit), "
                 "or the local executor's mode: inline (in this process), subprocess (a process per stage).")


def _executor_kind(value: Optional[str]) -> Optional[str]:
    from synpro.executors import KINDS

    if value is not None and value not in KINDS:
        raise InputError.one(f"--executor {value!r}: expected one of {', '.join(KINDS)}", key="--executor")
    return value


@app.command()
@guarded
def validate(spec_path: Path = SpecArg,
             format: Format = typer.Option(Format.table, "--format", "-f", help="table, or json for scripts "
                                           "(the resolved spec, budget, trial and stage counts)."),
             machine: bool = typer.Option(True, "--machine/--shape-only", help="Also check the corpus, budget, "
                                          "models and database drivers on this machine (--shape-only: a spec "
                                          "meant for another machine, e.g. a GPU cluster's).")) -> None:
    """Check a spec against the machine and print what it expands to; exit 2 with located errors.

    Checks plugins, the corpus (exists, holds text, can hold the budget), tokenizer and generator
    models (offline), store/Optuna/MLflow URLs and their drivers, and every grid point.

    Examples:
      synpro validate experiments/quickstart.yaml
      synpro validate experiments/paper-400m.yaml --shape-only --format json
    """
    from synpro import search
    from synpro.plan import plan_trial

    spec = load_spec_with(spec_path, {}, machine=machine)
    for point in search.grid_points(spec) if spec.search.sampler == "grid" else []:
        try:
            spec.with_params(point)
        except Exception as exc:  # noqa: BLE001
            raise InputError.one(f"grid point {point} gives an invalid spec: {exc}", file=str(spec_path),
                                 key="search.params") from None
    budget, training = spec.resolved_budget(), spec.training
    n_params = spec.model.non_embedding_params()
    stages = len(plan_trial(spec).graph) if machine else None  # keys fingerprint the generator's weights
    if format == Format.json:
        out.print_json(data={"spec": spec.to_dict(),
                             "budget": {"U": budget.unique, "T": budget.total, "N": n_params, "epochs": budget.epochs,
                                        "steps": budget.steps, "T_requested": budget.requested_total,
                                        "U_trained": budget.trained_unique, "extra": budget.extra},
                             "trials": search.n_trials(spec), "stages": stages})
        return
    table = Table(title=f"{spec_path}: valid", show_header=False, title_justify="left")
    rows = [
        ("experiment", f"{spec.experiment.name} (training seeds {spec.experiment.training_seeds()}, "
                       f"data seed {spec.experiment.resolved_data_seed()})"),
        ("workdir", str(spec.workdir)),
        ("corpus", f"{spec.corpus.source}: {spec.corpus.name if spec.corpus.source == 'builtin' else spec.corpus_path()}"),
        ("tokenizer", f"pretrained {spec.tokenizer.name}" if spec.tokenizer.kind == "pretrained"
         else f"BPE trained on the organic pool, vocab {spec.tokenizer.vocab_size:,}"),
        ("model", f"{spec.model.preset or 'custom'}: d={spec.model.d_model} L={spec.model.n_layers} "
                  f"N={n_params:,} non-embedding params"),
        ("budget", f"U={budget.unique:,} unique tokens, T={budget.total:,} total ({budget.epochs:.2f} epochs "
                   f"of U's {budget.trained_unique:,} tokens in whole {training.seq_len}-token sequences)"),
        ("steps", f"{budget.steps:,} of {training.tokens_per_step:,} tokens (T rounded up from "
                  f"{budget.requested_total:,} to whole steps)"),
        ("training", f"lr {training.lr:g} {training.schedule} after {training.warmup_tokens:,} warmup tokens, "
                     f"batch {training.batch_size}x{training.seq_len}, betas {tuple(training.betas)}, "
                     f"wd {training.weight_decay:g}, clip {training.grad_clip:g}, z-loss {training.z_loss:g}"),
        ("arms", ", ".join(f"{a.name} ({a.kind})" for a in spec.arms)),
        ("search", f"{spec.search.sampler} over {list(spec.search.params) or 'nothing'}"),
        ("trials", f"{search.n_trials(spec)}" + (f" ({stages} stages in the first)" if stages else "")),
        ("objective" if not spec.search.multi else "objectives (Pareto front)",
         "; ".join(f"{o.direction} {o.metric} of {o.arm}" for _, o in spec.search.targets())),
        ("reference", spec.reference.kind + (f" oracle at {spec.reference.params}" if spec.reference.params else "")
         + f"; multiplier from the last {spec.analysis.tail_checkpoints} checkpoints"),
        ("store", mask(spec.store_url())),
        ("optuna", mask(spec.optuna_url())),
        ("mlflow", mask(spec.mlflow_uri()) if spec.tracking.enabled else "disabled"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)


@app.command()
@guarded
def plan(spec_path: Path = SpecArg, workdir: Optional[Path] = WorkdirOpt,
         format: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
         executor: Optional[str] = typer.Option(None, "--executor", help=EXECUTOR_HELP),
         estimate: bool = typer.Option(False, "--estimate", help="Instead of the graph: each stage's FLOPs, memory "
                                       "per GPU and GPU-hours (CPU core-hours for data stages), totals per trial and "
                                       "per sweep; needs nothing of this machine (synpro/cost.py has the formulas)."),
         gpu: Optional[str] = typer.Option(None, "--gpu", help="With --estimate: H100, H100-PCIe, H200, B200, A100, "
                                           "A100-40GB, L40S, L4, MI300X, or cpu (core-hours); default H100, or "
                                           "cpu for a spec that asks for no GPU and trains under 50M parameters."),
         mfu: float = typer.Option(0.4, "--mfu", help="With --estimate: model FLOPs utilisation of training and "
                                   "scoring passes."),
         gen_mfu: float = typer.Option(0.1, "--gen-mfu", help="With --estimate: utilisation of generation "
                                       "(rollouts, synthesis; decoding is memory-bound).")) -> None:
    """Print a trial's stage graph (kind, key, inputs, folder, done, executor, resources, last job)
    without running anything; with --estimate, what each stage will cost.

    The spec as written is the first trial; grid points only change the stages they touch.

    Examples:
      synpro plan experiments/quickstart.yaml
      synpro plan experiments/quickstart.yaml --format json | jq '.[] | select(.done | not)'
      synpro plan experiments/paper-400m.yaml --estimate --gpu H100 --mfu 0.4
    """
    from synpro import search
    from synpro.plan import plan_trial

    if estimate:
        _print_estimate(spec_path, format, gpu, mfu, gen_mfu)
        return
    from synpro.executors import with_kind

    spec = with_kind(load_spec_with(spec_path, {"experiment.workdir": str(workdir) if workdir else None}),
                     _executor_kind(executor))
    points = search.grid_points(spec) if spec.search.sampler == "grid" else [{}]
    rows = plan_trial(spec.with_params(points[0])).describe()
    if format == Format.json:
        out.print_json(data=rows)
        return
    table = Table(title=f"stage graph of {spec_path} (first trial)", title_justify="left")
    for col in ("kind", "key", "arm", "inputs", "done", "executor", "resources", "path"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["kind"], row["key"], row["arm"] or row["label"] or "",
                      ", ".join(f"{n}={k}" for n, k in row["inputs"].items()), "yes" if row["done"] else "no",
                      row["executor"], " ".join(f"{k}={v}" for k, v in row["resources"].items()), row["path"])
    out.print(table)


def _print_estimate(spec_path: Path, format: Format, gpu: Optional[str], mfu: float, gen_mfu: float) -> None:
    """`plan --estimate`: the cost model's rows for the spec's first trial (shape-only: nothing is loaded)."""
    from synpro import cost, search

    spec = load_spec_with(spec_path, {}, machine=False)
    n = search.n_trials(spec)
    # A grid's trials each at their own point; other samplers' trials are unknown before they run: the spec as written.
    points = search.grid_points(spec)[:n] if spec.search.sampler == "grid" else [{}] * n
    trials = [spec.with_params(point) for point in points]
    dev = cost.device(gpu or cost.default_device(trials[0]))
    result = cost.estimate(trials[0], dev, cost.Assumptions(mfu=mfu, gen_mfu=gen_mfu), trials)
    if format == Format.json:
        out.print_json(data=result.to_json())
        return
    unit = "core-h" if dev.kind == "cpu" else "GPU-h"
    table = Table(title=f"cost estimate of {spec_path} (first trial) on {dev.name}", title_justify="left")
    for col in ("kind", "arm", "label", "FLOPs", "mem/device GB", "fits", unit, "wall h (GPUs)", "CPU core-h"):
        table.add_column(col, justify="left" if col in ("kind", "arm", "label", "fits") else "right")
    for s in result.stages:
        hours = s.cpu_core_hours if dev.kind == "cpu" else s.gpu_hours
        table.add_row(s.kind, s.arm, s.label, "-" if s.flops is None else f"{s.flops:.3g}",
                      "-" if s.memory_gb is None else f"{s.memory_gb:,.1f}",
                      {None: "", True: "yes", False: f"[red]NO (> {dev.memory_gb:g})[/]"}[s.fits],
                      "-" if s.flops is None else f"{hours:,.4g}",
                      f"{s.wall_hours:,.4g} ({s.gpus})" if s.wall_hours is not None else "-",
                      f"{s.cpu_core_hours:,.4g}" if s.flops is None else "-")
    out.print(table)
    totals = result.totals()
    n = totals["n_trials"]
    for scope, label in (("trial", "per trial"), ("sweep", f"per sweep ({n} trial{'' if n == 1 else 's'})")):
        t = totals[scope]
        out.print(f"total {label}: {t['flops']:.3g} FLOPs, {t['gpu_hours']:,.4g} GPU-hours on {dev.name}, "
                  f"{t['cpu_core_hours']:,.4g} CPU core-hours", highlight=False)
    a = result.assumptions
    out.print(f"assumed: {dev.name} at {dev.peak_flops / 1e12:g} TFLOP/s peak ({dev.source}); MFU {a.mfu:g} for "
              f"training and scoring, {a.gen_mfu:g} for generation; {a.chars_per_token:g} characters a token; "
              f"{a.prompt_tokens} instruction tokens a prompt; {a.request_tokens} tokens an lm-eval request; "
              f"{a.tokenize_per_core:,.0f} tokens/s a core to tokenize; completions at their maximum length; "
              "plateau refreshes at equal shares of T, up to refresh.max_rounds; LLM judges not counted; the sweep "
              "sums every trial (a grid: each at its own point), counting stages that trials share once per trial.",
              highlight=False, soft_wrap=True)
    if totals["over_memory"]:
        out.print(f"[red]over {dev.name}'s {dev.memory_gb:g} GB per device[/]: {', '.join(totals['over_memory'])}",
                  highlight=False)


@app.command()
@guarded
def sweep(
    spec_path: Path = SpecArg,
    workdir: Optional[Path] = WorkdirOpt,
    n_trials: Optional[int] = typer.Option(None, "--n-trials", "-n", min=1, help="Trials to complete in total."),
    store: Optional[str] = typer.Option(None, "--store", help="SQLAlchemy URL of the results store."),
    optuna_storage: Optional[str] = typer.Option(None, "--optuna-storage", help="Optuna storage URL."),
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Local worker processes (more than one needs "
                                "PostgreSQL for the store and Optuna; any number of sweeps may also share them)."),
    executor: Optional[str] = typer.Option(None, "--executor", help=EXECUTOR_HELP),
    parallel: Optional[int] = typer.Option(None, "--parallel", min=1, help="Stages of a trial at once (arms side "
                                           "by side, a process or Slurm job each), over the spec's executor.parallel."),
) -> None:
    """Run every trial of a spec (resumable: run it again to continue or to do nothing new).

    Examples:
      synpro sweep experiments/quickstart.yaml
      synpro sweep experiments/quickstart.yaml --parallel 2     # two arms train at once
      synpro sweep experiments/paper-400m.yaml --workers 4 --store postgresql+psycopg://user@host/synpro \\
        --optuna-storage postgresql+psycopg://user@host/synpro_optuna
    """
    from synpro.executors import with_kind

    spec = with_kind(load_spec_with(spec_path, {"experiment.workdir": str(workdir) if workdir else None,
                                                "store.url": store, "store.optuna_url": optuna_storage,
                                                "tracking.mlflow_uri": mlflow_uri}), _executor_kind(executor),
                     parallel)
    from synpro.sweep import MAX_RETRIES, run_sweep, run_workers

    announce = lambda line: out.rule(f"[bold]{escape(mask(line))}", align="left")  # noqa: E731
    if workers == 1:
        summary, code = run_sweep(spec, n_trials=n_trials, progress=progress, announce=announce), 0
    else:
        summary, code = run_workers(spec, workers, n_trials=n_trials, progress=progress, announce=announce)
    from store import Store

    with Store(spec.store_url()) as db:
        print_results(with_caveats(summary.results, db))
    for point in summary.given_up:
        out.print(f"[red]gave up on {escape(str(point))}[/]: it failed {MAX_RETRIES + 1} times (the reasons are on its Optuna "
                  "trials and MLflow runs, tag synpro.fail_reason)")
    ran = f"{summary.ran_now} run now" if workers == 1 else f"{workers} workers"
    out.print(f"{summary.completed}/{summary.target_trials} trials complete ({ran}). "
              f"Results: synpro results --workdir {spec.workdir}   MLflow UI: synpro ui --workdir {spec.workdir}")
    out.print(f"Optuna study: {summary.optuna_study} (dashboard: synpro ui --optuna --workdir {spec.workdir})",
              highlight=False)
    if code:
        raise typer.Exit(code)


@app.command(hidden=True)
@guarded
def worker(name: str = typer.Option("worker", "--name", help="How this worker labels its output.")) -> None:
    """One of `sweep --workers N`'s processes: its spec comes on stdin (a pipe, so secrets stay off disk)."""
    from synpro.spec import Spec
    from synpro.sweep import run_sweep

    job = json.loads(sys.stdin.read())
    spec = Spec.model_validate({**job["spec"], "source_file": job["source_file"]})
    summary = run_sweep(spec, n_trials=job["n_trials"], progress=False,
                        announce=lambda line: out.print(f"[{name}] {mask(line)}", highlight=False, markup=False))
    out.print(f"[{name}] done: ran {summary.ran_now} trial(s); {summary.completed}/{summary.target_trials} complete",
              highlight=False, markup=False)



@app.command()
@guarded
def generate(
    spec_path: Path = SpecArg,
    operation: str = typer.Option(..., "--operation", "-o", help="An operation of the spec's generation.operations "
                                  "(built in: rephrase, reformat)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-l", min=1, help="Rewrite at most this many windows "
                                        "in total (a later call with a larger limit continues)."),
    workdir: Optional[Path] = WorkdirOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Produce or extend one synthetic set on its own, and print where it lives and its metrics.

    Example:  synpro generate experiments/quickstart.yaml --operation rephrase --limit 20
    """
    spec = load_spec_with(spec_path, {"experiment.workdir": str(workdir) if workdir else None})
    from synpro.core.fs import dir_lock
    from synpro.generation.synthetic import load_set, make_set
    from synpro.stages.graph import GraphBuilder
    from synpro.stages import MANIFEST, Runner

    graph = GraphBuilder(spec, spec.budget.resolve(spec.model)[1])
    stage = graph.synthetic(operation)  # InputError for an operation the spec does not have
    runner = Runner(spec.workdir / "stages", progress=progress)
    if limit is None:  # the whole set: the same stage a sweep runs, so the sweep reuses it
        synthetic = runner.run(stage)
    else:  # a part of it, in the stage's folder: the sweep (or a call without --limit) continues it
        data = runner.run(graph.pools)
        folder = runner.folder(stage)
        with dir_lock(folder):
            done = (folder / MANIFEST).is_file()
            synthetic = load_set(folder) if done else make_set(spec, operation, data, folder, stage.config,
                                                               limit=limit, progress=progress)
    table = Table(title=f"synthetic set {synthetic.name} ({'complete' if synthetic.complete else 'partial'})",
                  show_header=False, title_justify="left")
    table.add_row("folder", str(synthetic.out_dir))
    table.add_row("records", str(synthetic.records))
    table.add_row("tokens", f"{synthetic.shard.n_tokens:,} in {synthetic.shard.n_docs:,} documents")
    for key, value in {**synthetic.stats, **synthetic.metrics}.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    out.print(table)
