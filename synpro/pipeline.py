"""One trial: run its stage graph, then the analysis (effective tokens) and the records (store, MLflow).

The orchestrator is the only place that talks to the store and the tracker: stages write their own
folders and know nothing of either. A killed trial re-run from the top skips every finished stage
(their manifests) and re-logs nothing twice (store rows are upserts keyed by tokens).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from synpro import plots
from synpro.effective import ACCURACY, effective_curve, tail_multiplier
from synpro.errors import InputError
from synpro.generation import SyntheticSet
from synpro.plan import ArmPlan, TrialPlan
from synpro.stages import Runner, read_manifest
from synpro.stages.extra import ExtraStage
from synpro.stages.pretrain import ORGANIC
from synpro.stages.synthesize import SynthesizeStage
from synpro.tracking import Tracker
from synpro.training import Callback, EvalPoint, TrainResult
from store import Store


@dataclass
class ArmOutcome:
    name: str
    kind: str
    arm_id: int
    result: TrainResult
    unique_tokens: int
    mlflow_run_id: str | None
    effective: list[tuple[int, float, bool]] = field(default_factory=list)  # (tokens, D_eff, extrapolated)
    multiplier: float | None = None
    # Downstream evaluation: one row per evaluated snapshot ({tokens, metrics: {"acc/<task>", "acc/avg"}}),
    # D_eff by average accuracy at those points, and the multiplier by accuracy.
    scores: list[dict[str, Any]] = field(default_factory=list)
    effective_accuracy: list[tuple[int, float, bool]] = field(default_factory=list)
    multiplier_accuracy: float | None = None
    evaluation: Any = None  # the evaluate stage over every round's snapshots (None without eval tasks)

    @property
    def final_effective(self) -> tuple[float | None, bool | None]:
        if not self.effective:
            return None, None
        _, d_eff, extrapolated = self.effective[-1]
        return d_eff, extrapolated

    def summary(self) -> dict[str, Any]:
        d_eff, extrapolated = self.final_effective
        return {
            "kind": self.kind,
            "final_val_loss": self.result.curve[-1].val_loss,
            "tokens_seen": self.result.tokens_seen,
            "unique_tokens": self.unique_tokens,
            "effective_tokens": d_eff,
            "effective_tokens_extrapolated": extrapolated,
            "multiplier_vs_repetition": self.multiplier,
            "final_accuracy": self.scores[-1]["metrics"]["acc/avg"] if self.scores else None,
            "effective_tokens_accuracy": self.effective_accuracy[-1][1] if self.effective_accuracy else None,
            "effective_tokens_accuracy_extrapolated": (self.effective_accuracy[-1][2] if self.effective_accuracy
                                                       else None),
            "multiplier_accuracy": self.multiplier_accuracy,
            "mlflow_run_id": self.mlflow_run_id,
        }


@dataclass
class TrialContext:
    store: Store
    tracker: Tracker
    trial_id: int
    trial_run_id: str | None
    progress: bool = True


class _CurveSink(Callback):
    """Streams each evaluation to the store and MLflow while the arm trains."""

    def __init__(self, ctx: TrialContext, arm_id: int, run_id: str | None):
        self.ctx, self.arm_id, self.run_id = ctx, arm_id, run_id

    def on_eval(self, point: EvalPoint) -> None:
        self.ctx.store.add_evaluations(self.arm_id, [_point_row(point)])
        self.ctx.store.heartbeat(self.ctx.trial_id)
        _log_curve(self.ctx.tracker, self.run_id, [point])


def _log_curve(tracker: Tracker, run_id: str | None, points: list[EvalPoint]) -> None:
    for key in ("val_loss", "train_loss"):
        tracker.log_points(run_id, key, [(p.tokens, getattr(p, key)) for p in points])


def _point_row(point: EvalPoint) -> dict[str, Any]:
    return {"tokens": point.tokens, "step": point.step, "val_loss": point.val_loss, "train_loss": point.train_loss}


def record_synthetic(plan: TrialPlan, runner: Runner, ctx: TrialContext) -> None:
    """Make every synthetic set the trial needs, refuse unusable ones, and log their metrics."""
    for stage in plan.graph:
        if isinstance(stage, SynthesizeStage):
            synthetic = runner.run(stage)
            _require_output(plan, stage.op_name, synthetic)
            op = stage.op_name
            ctx.tracker.log_values(ctx.trial_run_id, {f"synthetic/{op}/{k}": v for k, v in synthetic.metrics.items()})
            ctx.tracker.log_dict(ctx.trial_run_id, synthetic.stats, f"synthetic/{op}/stats.json")
            ctx.tracker.log_table(ctx.trial_run_id, synthetic.samples(20), f"synthetic/{op}/samples.json")


def _require_output(plan: TrialPlan, op: str, synthetic: SyntheticSet) -> None:
    """A set with less usable output than one training sequence is bad input, not an arm equal to
    repetition: the loader trains on whole `seq_len` windows, so such a set would never be seen."""
    seq_len = plan.spec.training.seq_len
    if synthetic.shard.n_tokens >= seq_len:
        return
    stats = synthetic.stats
    failures = {k: v for k, v in stats.get("failures", {}).items() if v}
    raise InputError.one(
        f"the generator produced too little usable {op!r} output to train on: {stats.get('passed', 0)} of "
        f"{stats.get('windows', 0)} windows passed the filters, {synthetic.shard.n_tokens} tokens, less than one "
        f"training sequence (training.seq_len = {seq_len}); rejected: "
        f"{', '.join(f'{k}: {v}' for k, v in failures.items()) or 'no reasons recorded'}; see {synthetic.records}",
        file=plan.spec.source_file, key=f"generation.operations.{op}",
        hint="rewrite more of the pool (raise generation.max_windows or drop it); 'truncated' means "
             "generation.generator.max_new_tokens is too small for the windows (or lower generation.window_tokens); "
             "otherwise check the model and the prompt")


def run_arm(plan: TrialPlan, arm: ArmPlan, runner: Runner, ctx: TrialContext) -> ArmOutcome:
    """Train the arm round by round (one round unless its recipe refreshes), streaming its curve."""
    stage = arm.stage
    inputs = {name: runner.run(upstream) for name, upstream in stage.inputs.items()}
    shards = dict(zip(stage.config["mixture"], stage.shards(inputs)))
    # Unique tokens: the organic pool, plus the oracle's extra pool (every other source rewrites organic).
    unique = sum(shard.n_tokens for name, shard in shards.items()
                 if name == ORGANIC or isinstance(stage.inputs.get(name), ExtraStage))
    run_id = ctx.tracker.run("arm", arm.name, {"synpro.trial": plan.params_hash, "synpro.arm": arm.name},
                             parent_id=ctx.trial_run_id)
    arm_id = ctx.store.upsert_arm(ctx.trial_id, arm.name, arm.spec.kind, arm.key, unique, plan.total_tokens,
                                  mlflow_run_id=run_id)
    ctx.tracker.log_params(run_id, {"arm": arm.name, "kind": arm.spec.kind, "unique_tokens": unique,
                                    "total_tokens": plan.total_tokens, "stage_key": arm.key,
                                    "sources": {name: s.n_tokens for name, s in shards.items()},
                                    **{f"arm.{k}": v for k, v in (arm.spec.model_extra or {}).items()}})
    sink = _CurveSink(ctx, arm_id, run_id)
    rounds = arm.arm.rounds(plan.builder)
    stages = [next(rounds)]
    try:
        while True:
            result = runner.run(stages[-1], callbacks=[sink])
            try:
                stages.append(rounds.send(result))
            except StopIteration:
                break
            _log_round(plan, stages[-1], runner, result, len(stages) - 1, run_id, ctx)
    except BaseException:
        ctx.tracker.finish(run_id, "KILLED")
        raise
    # A resumed or cached arm may have points the sink never saw; the store gets them all in _record.
    _log_curve(ctx.tracker, run_id, result.curve)
    evaluation = plan.builder.evaluate(stages, label=arm.name)
    return ArmOutcome(arm.name, arm.spec.kind, arm_id, result, unique, run_id, evaluation=evaluation)


def _log_round(plan: TrialPlan, stage, runner: Runner, ended: TrainResult, round_: int, run_id: str | None,
               ctx: TrialContext) -> None:
    """A refresh: where the previous round ended, and what each stage that made the new round reported
    (the probe's reference loss, each generator's GRPO curves and held-out pass rate, the new sets)."""
    ctx.tracker.set_tags(run_id, {f"synpro.round.{round_}.start_tokens": ended.tokens_seen})
    for upstream in _new_upstream(stage):
        folder = runner.folder(upstream)
        prefix = f"round{round_}/{upstream.kind}/{upstream.label or upstream.key}"
        metrics = (read_manifest(folder) or {}).get("metrics", {})
        ctx.tracker.log_values(run_id, {f"{prefix}/{k}": v for k, v in metrics.items()
                                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
        steps = folder / "metrics.jsonl"  # per-step curves (a GRPO stage's rewards, KL, pass rate)
        rows = [json.loads(line) for line in steps.read_text().splitlines() if line.strip()] if steps.exists() else []
        for key in sorted({k for row in rows for k, v in row.items() if k != "step" and isinstance(v, (int, float))}):
            ctx.tracker.log_points(run_id, f"{prefix}/{key}", [(row["step"], row[key]) for row in rows if key in row])


def _new_upstream(stage) -> list:
    """The stages a round brought in (all but the pools and the previous round), inputs first."""
    seen, out = set(), []

    def visit(s) -> None:
        for name, up in s.inputs.items():
            if name in ("pools", "parent") or up.key in seen:
                continue
            seen.add(up.key)
            visit(up)
            out.append(up)

    visit(stage)
    return out


def _seen(result: TrainResult) -> list[tuple[int, float]]:
    """Curve points after some training: D_eff is defined in log tokens, so the tokens=0 point is out."""
    return [(p.tokens, p.val_loss) for p in result.curve if p.tokens > 0]


def attach_effective_tokens(plan: TrialPlan, outcomes: dict[str, ArmOutcome]) -> None:
    """D_eff at every checkpoint by inverting the reference (oracle) curve; multipliers vs repetition."""
    if plan.reference is None:
        return
    oracle = _seen(outcomes[plan.reference.name].result)
    for outcome in outcomes.values():
        outcome.effective = [tuple(p) for p in effective_curve(oracle, _seen(outcome.result))]
    repetition = next((o for o in outcomes.values() if o.kind == "repetition"), None)
    if repetition is None:
        return
    base, _ = repetition.final_effective
    for outcome in outcomes.values():
        d_eff, _ = outcome.final_effective
        if base and d_eff is not None and math.isfinite(base) and base > 0:
            outcome.multiplier = d_eff / base


def attach_accuracy(plan: TrialPlan, runner: Runner, outcomes: dict[str, ArmOutcome]) -> None:
    """Evaluate every arm's snapshots on the downstream tasks; D_eff and the multiplier by average
    accuracy, inverting the reference arm's accuracy curve the same way as its loss curve."""
    for outcome in outcomes.values():
        if outcome.evaluation is not None:
            outcome.scores = runner.run(outcome.evaluation)
    if plan.reference is None or not outcomes[plan.reference.name].scores:
        return
    oracle = _accuracy_points(outcomes[plan.reference.name])
    for outcome in outcomes.values():
        if outcome.scores:
            outcome.effective_accuracy = [tuple(p) for p in effective_curve(oracle, _accuracy_points(outcome),
                                                                             metric=ACCURACY)]
    repetition = next((o for o in outcomes.values() if o.kind == "repetition" and o.effective_accuracy), None)
    for outcome in outcomes.values():
        if repetition is not None and outcome.effective_accuracy:
            value = tail_multiplier(outcome.effective_accuracy, repetition.effective_accuracy).multiplier
            outcome.multiplier_accuracy = value if math.isfinite(value) else None


def _accuracy_points(outcome: ArmOutcome) -> list[tuple[int, float]]:
    return [(row["tokens"], row["metrics"]["acc/avg"]) for row in outcome.scores if row["tokens"] > 0]


def _record_accuracy(outcome: ArmOutcome, ctx: TrialContext) -> None:
    if not outcome.scores:
        return
    effective = {t: (d, x) for t, d, x in outcome.effective_accuracy}
    ctx.store.add_accuracy(outcome.arm_id, [
        {"tokens": row["tokens"], "task_scores": row["metrics"], "accuracy": row["metrics"]["acc/avg"],
         "effective_tokens_accuracy": effective.get(row["tokens"], (None, None))[0],
         "effective_tokens_accuracy_extrapolated": effective.get(row["tokens"], (None, None))[1]}
        for row in outcome.scores])
    for name in outcome.scores[-1]["metrics"]:
        ctx.tracker.log_points(outcome.mlflow_run_id, name, [(row["tokens"], row["metrics"][name])
                                                             for row in outcome.scores if name in row["metrics"]])
    ctx.tracker.log_points(outcome.mlflow_run_id, "effective_tokens_accuracy",
                           [(t, d) for t, d, _ in outcome.effective_accuracy if math.isfinite(d)])
    summary = outcome.summary()
    ctx.store.set_arm_accuracy(outcome.arm_id, final_accuracy=summary["final_accuracy"],
                               effective_tokens_accuracy=summary["effective_tokens_accuracy"],
                               effective_tokens_accuracy_extrapolated=summary["effective_tokens_accuracy_extrapolated"],
                               multiplier_accuracy=summary["multiplier_accuracy"])


def _multiplier_curve(outcome: ArmOutcome, repetition: ArmOutcome | None) -> list[tuple[int, float]]:
    if repetition is None:
        return []
    base = {t: d for t, d, _ in repetition.effective if math.isfinite(d) and d > 0}
    return [(t, d / base[t]) for t, d, _ in outcome.effective if t in base and math.isfinite(d)]


def _record(outcome: ArmOutcome, outcomes: dict[str, ArmOutcome], ctx: TrialContext) -> None:
    effective = {t: (d, x) for t, d, x in outcome.effective}
    ctx.store.add_evaluations(outcome.arm_id, [
        {**_point_row(p), "effective_tokens": effective.get(p.tokens, (None, None))[0],
         "effective_tokens_extrapolated": effective.get(p.tokens, (None, None))[1]}
        for p in outcome.result.curve])
    run_id = outcome.mlflow_run_id
    ctx.tracker.log_points(run_id, "effective_tokens",
                           [(t, d) for t, d, _ in outcome.effective if math.isfinite(d)])
    repetition = next((o for o in outcomes.values() if o.kind == "repetition"), None)
    ctx.tracker.log_points(run_id, "multiplier_vs_repetition", _multiplier_curve(outcome, repetition))
    summary = outcome.summary()
    _record_accuracy(outcome, ctx)
    ctx.store.set_arm_result(outcome.arm_id, final_val_loss=summary["final_val_loss"],
                             tokens_seen=summary["tokens_seen"], effective_tokens=summary["effective_tokens"],
                             effective_tokens_extrapolated=summary["effective_tokens_extrapolated"],
                             multiplier_vs_repetition=summary["multiplier_vs_repetition"])
    ctx.tracker.log_dict(run_id, summary, "result.json")
    ctx.tracker.finish(run_id)


def _log_figures(plan: TrialPlan, outcomes: dict[str, ArmOutcome], ctx: TrialContext) -> None:
    reference = plan.reference.name if plan.reference else None
    figures = {"loss_curves.png": plots.loss_figure(
        {n: [(p.tokens, p.val_loss) for p in o.result.curve] for n, o in outcomes.items()}, reference)}
    if reference:
        figures["effective_tokens.png"] = plots.effective_figure({n: o.effective for n, o in outcomes.items()},
                                                                 reference)
    for path, fig in figures.items():
        ctx.tracker.log_figure(ctx.trial_run_id, fig, path)
        plots.close(fig)


def run_trial(plan: TrialPlan, ctx: TrialContext) -> dict[str, ArmOutcome]:
    runner = Runner(plan.stages_dir, progress=ctx.progress)
    record_synthetic(plan, runner, ctx)
    outcomes = {arm.name: run_arm(plan, arm, runner, ctx) for arm in plan.arms}
    attach_effective_tokens(plan, outcomes)
    attach_accuracy(plan, runner, outcomes)
    for outcome in outcomes.values():
        _record(outcome, outcomes, ctx)
    _log_figures(plan, outcomes, ctx)
    return outcomes


def objective_value(plan: TrialPlan, outcomes: dict[str, ArmOutcome]) -> float:
    objective = plan.spec.search.objective
    value = outcomes[objective.arm].summary()[objective.metric]
    return float("nan") if value is None else float(value)
