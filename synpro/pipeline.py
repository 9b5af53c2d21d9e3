"""One trial: run its stage graph, then the analysis (effective tokens) and the records (store, MLflow).

The orchestrator is the only place that talks to the store and the tracker: stages write their own
folders and know nothing of either. A killed trial re-run from the top skips every finished stage
(their manifests) and re-logs nothing twice (store rows are upserts keyed by tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from synpro import ledger, plots
from synpro.display import finite
from synpro.effective import (ACCURACY, Curve, Multiplier, OracleInverse, TailDEff, effective_curve,
                              first_pass_calibration, seed_multiplier, tail_d_eff, tail_multiplier)
from synpro.errors import InputError
from synpro.generation import SyntheticSet
from synpro.plan import ArmPlan, TrialPlan, plan_trial
from synpro.spec import Spec
from synpro.stages import Runner, Stage, read_manifest
from synpro.stages.extra import ExtraStage
from synpro.stages.pretrain import ORGANIC
from synpro.stages.synthesize import SynthesizeStage
from synpro.tracking import RUN_COLOR_TAG, RUN_COLORS, Tracker, params_label, run_name
from synpro.training import Callback, EvalPoint, TrainResult
from store import Store


@dataclass
class ArmOutcome:
    """One arm at one training seed."""

    name: str
    kind: str
    seed: int
    arm_id: int
    result: TrainResult
    unique_tokens: int
    mlflow_run_id: str | None
    effective: list[tuple[int, float, bool]] = field(default_factory=list)  # (tokens, D_eff, extrapolated)
    tail: TailDEff | None = None  # D_eff at the end: the mean over the last k checkpoints
    multiplier: Multiplier | None = None
    # Downstream evaluation: one row per evaluated snapshot ({tokens, metrics: {"acc/<task>", "acc/avg"}}),
    # D_eff by average accuracy at those points, and the multiplier by accuracy.
    scores: list[dict[str, Any]] = field(default_factory=list)
    effective_accuracy: list[tuple[int, float, bool]] = field(default_factory=list)
    multiplier_accuracy: float | None = None
    evaluation: Any = None  # the evaluate stage over every round's snapshots (None without eval tasks)
    synthetic_similarity: float | None = None  # of the sets its last round trained on (None: it trains on none)
    synthetic: dict[str, Any] = field(default_factory=dict)  # what its synthetic data was (`synthetic_usage`)
    stages: list[Stage] = field(default_factory=list)  # its pretraining rounds
    usage: dict[str, Any] = field(default_factory=dict)  # measured device-hours of all it ran (`_measure`)

    @property
    def ran(self) -> list[Stage]:
        """Its rounds and its evaluation: everything upstream of them is what it ran."""
        return [*self.stages, *([self.evaluation] if self.evaluation is not None else [])]

    def details(self) -> dict[str, Any]:
        """What the store keeps beside the numbers (arms.details): the tail D_eff the multiplier
        divides, how both were computed, and the epochs each source was read."""
        return {"tail_effective_tokens": self.tail.d_eff if self.tail else None,
                "tail_checkpoints": self.tail.n_points if self.tail else None,
                "multiplier_method": self.multiplier.method if self.multiplier else None,
                "multiplier_extrapolated": self.multiplier.extrapolated if self.multiplier else None,
                "epochs_per_source": self.result.epochs_per_source,
                **({} if self.synthetic_similarity is None else {"synthetic_similarity": self.synthetic_similarity}),
                **self.synthetic, **self.usage, **self.accuracy_basis()}

    def accuracy_basis(self) -> dict[str, Any]:
        """Item counts and chance levels of the last scored snapshot: what `synpro.caveats` judges an
        accuracy against."""
        last = self.scores[-1] if self.scores else {}
        return {"accuracy_items": last["items"], "accuracy_chance": last["chance"]} if last.get("chance") else {}

    def summary(self) -> dict[str, Any]:
        """This seed's results; `effective_tokens` is D_eff at the last checkpoint (comparable with
        `tokens_seen`), the multiplier divides tail means (`details`)."""
        _, d_eff, extrapolated = self.effective[-1] if self.effective else (None, None, None)
        return {
            "kind": self.kind,
            "seed": self.seed,
            "final_val_loss": self.result.curve[-1].val_loss,
            "tokens_seen": self.result.tokens_seen,
            "unique_tokens": self.unique_tokens,
            "effective_tokens": d_eff,
            "effective_tokens_extrapolated": extrapolated,
            "multiplier_vs_repetition": self.multiplier.multiplier if self.multiplier else None,
            "final_accuracy": self.scores[-1]["metrics"]["acc/avg"] if self.scores else None,
            "effective_tokens_accuracy": self.effective_accuracy[-1][1] if self.effective_accuracy else None,
            "effective_tokens_accuracy_extrapolated": (self.effective_accuracy[-1][2] if self.effective_accuracy
                                                       else None),
            "multiplier_accuracy": self.multiplier_accuracy,
            **self.details(),
            "mlflow_run_id": self.mlflow_run_id,
        }


Outcomes = dict[tuple[str, int], ArmOutcome]  # by (arm name, training seed)


@dataclass
class TrialOutcome:
    """Every arm at every seed, and the trial's analysis (see `analyze`)."""

    arms: Outcomes
    analysis: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The trial's results as JSON: per arm its seed statistics and each seed's own values."""
        arms: dict[str, Any] = {}
        for (name, seed), outcome in self.arms.items():
            arm = arms.setdefault(name, {**self.analysis["arms"].get(name, {}), "per_seed": {}})
            arm["per_seed"][str(seed)] = outcome.summary()
        return {"reference": self.analysis["reference"], "noise_floor": self.analysis["noise_floor"], "arms": arms}


@dataclass
class TrialContext:
    store: Store
    tracker: Tracker
    trial_id: int
    trial_run_id: str | None
    progress: bool = True
    params: dict[str, Any] = field(default_factory=dict)  # the trial's searched params: on every arm run


class _CurveSink(Callback):
    """Streams each evaluation to the store and MLflow while the arm trains."""

    def __init__(self, ctx: TrialContext, arm_id: int, run_id: str | None):
        self.ctx, self.arm_id, self.run_id = ctx, arm_id, run_id

    def on_eval(self, point: EvalPoint) -> None:
        self.ctx.store.add_evaluations(self.arm_id, [_point_row(point)])
        self.ctx.store.heartbeat(self.ctx.trial_id)
        _log_curve(self.ctx.tracker, self.run_id, [point])


def _log_curve(tracker: Tracker, run_id: str | None, points: list[EvalPoint]) -> None:
    tracker.log_series(run_id, {key: [(p.tokens, getattr(p, key)) for p in points] for key in ("val_loss", "train_loss")})


def _point_row(point: EvalPoint) -> dict[str, Any]:
    return {"tokens": point.tokens, "step": point.step, "val_loss": point.val_loss, "train_loss": point.train_loss}


def record_synthetic(plan: TrialPlan, runner: Runner, ctx: TrialContext) -> None:
    """Make every synthetic set the trial's first rounds need (refresh rounds make theirs as they come,
    see `_rounds`), refuse unusable ones, and log their metrics."""
    for stage in plan.graph:
        if isinstance(stage, SynthesizeStage):
            synthetic = runner.run(stage)
            require_output(plan.spec, stage, synthetic, 0)
            op = stage.op_name
            ctx.tracker.log_values(ctx.trial_run_id, {f"synthetic/{op}/{k}": v for k, v in synthetic.metrics.items()})
            ctx.tracker.log_dict(ctx.trial_run_id, synthetic.stats, f"synthetic/{op}/stats.json")
            ctx.tracker.log_table(ctx.trial_run_id, synthetic.samples(20), f"synthetic/{op}/samples.json")


def require_sets(spec: Spec, stage: Stage, runner: Runner, round_: int, arm: str | None = None) -> None:
    """Make the synthetic sets a pretraining round reads and refuse unusable ones, before it trains."""
    for upstream in stage.inputs.values():
        if isinstance(upstream, SynthesizeStage):
            require_output(spec, upstream, runner.run(upstream), round_, arm)


def require_output(spec: Spec, stage: SynthesizeStage, synthetic: SyntheticSet, round_: int,
                   arm: str | None = None) -> None:
    """A set with less usable output than one training sequence is bad input, not an arm equal to
    repetition: the loader trains on whole `seq_len` windows, so such a set would never be seen.
    Every set a round trains on is checked here: the first round's, the initial sets and every refresh's."""
    seq_len = spec.training.seq_len
    if synthetic.shard.n_tokens >= seq_len:
        return
    op, stats = stage.op_name, synthetic.stats
    passed, windows = stats.get("passed", 0), stats.get("windows", 0)
    failures = {k: v for k, v in stats.get("failures", {}).items() if v}
    trained = "generator" in stage.inputs
    generator = f"GRPO-trained generator ({stage.inputs['generator'].dirname})" if trained else "generator"
    where = f"round {round_}" + (f" of arm {arm!r}" if arm else "")
    raise InputError.one(
        f"the {generator} produced too little usable {op!r} output to train on in {where}: {passed} of "
        f"{windows} windows passed the filters (pass rate {passed / windows if windows else 0:.0%}), "
        f"{synthetic.shard.n_tokens} tokens, less than one training sequence (training.seq_len = {seq_len}); "
        f"rejected: {', '.join(f'{k}: {v}' for k, v in failures.items()) or 'no reasons recorded'}; "
        f"see {synthetic.records}",
        file=spec.source_file, key=f"generation.operations.{op}",
        hint=("the GRPO run taught the generator to fail the filters: check its rewards (rewards.weights, "
              "rewards.length.min_ratio), grpo.lr and grpo.steps, and its held-out pass rate per step; " if trained
              else "") +
             "rewrite more of the pool (raise generation.max_windows or drop it); 'truncated' means "
             "generation.generator.max_new_tokens is too small for the windows (or lower generation.window_tokens); "
             "otherwise check the model and the prompt")


def _shards(stage: Stage, runner: Runner) -> dict[str, Any]:
    inputs = {name: runner.run(upstream) for name, upstream in stage.inputs.items()}
    return dict(zip(stage.config["mixture"], stage.shards(inputs)))


def _unique_tokens(stage: Stage, shards: dict[str, Any]) -> int:
    """The organic pool, plus the oracle's extra pool (every other source rewrites organic)."""
    return sum(shard.n_tokens for name, shard in shards.items()
               if name == ORGANIC or isinstance(stage.inputs.get(name), ExtraStage))


def synthetic_similarity(stage: Stage, runner: Runner) -> float | None:
    """The mean MiniLM similarity to the source over the passed outputs of the synthetic sets a
    pretraining stage trains on, as their generation measured it (`similarity_mean` of each set)."""
    sets = [runner.run(s) for s in stage.inputs.values() if isinstance(s, SynthesizeStage)]
    scored = [(s.metrics["similarity_mean"], s.stats["passed"]) for s in sets if s.stats["passed"]]
    passed = sum(n for _, n in scored)
    return sum(mean * n for mean, n in scored) / passed if passed else None


def synthetic_usage(stages: list[Stage], runner: Runner) -> dict[str, Any]:
    """What an arm's synthetic data was, so no number rests on a mixture nobody can see: the synthetic
    tokens it trained on over all its rounds and their share of every token it saw (0 for an arm without
    sets), and per set its size, tokens seen, filter pass rate and its generator's last held-out pass
    rate (None: an untrained generator, or no held-out evaluation)."""
    from synpro.grpo.trainer import read_metrics

    seen: dict[str, int] = {}
    sets: dict[str, dict[str, Any]] = {}
    for stage in stages:
        for name, tokens in runner.run(stage).tokens_per_source.items():
            seen[name] = seen.get(name, 0) + tokens
        for name, upstream in stage.inputs.items():
            if not isinstance(upstream, SynthesizeStage) or name in sets:
                continue
            made = runner.run(upstream)
            generator = upstream.inputs.get("generator")
            evals = [r for r in read_metrics(runner.folder(generator)) if r.get("kind") == "eval"] if generator else []
            sets[name] = {"operation": upstream.op_name, "set": runner.folder(upstream).name,
                          "shard": made.shard.name, "tokens": made.shard.n_tokens,
                          "pass_rate": made.stats.get("pass_rate"),
                          "heldout_pass_rate": evals[-1]["pass_rate"] if evals else None}
    total = sum(seen.values())
    for row in sets.values():  # the loader counts tokens by shard name
        row["tokens_seen"] = seen.get(row.pop("shard"), 0)
    synthetic = sum(row["tokens_seen"] for row in sets.values())
    return {"synthetic_tokens": synthetic, "synthetic_share": synthetic / total if total else 0.0,
            "synthetic_sets": sets}


def _rounds(arm: ArmPlan, runner: Runner, callbacks: list, on_round: Any = None) -> tuple[TrainResult, list[Stage]]:
    """Train the arm round by round (one round unless its recipe refreshes); finished rounds load.
    Each round's synthetic sets are made and checked (`require_sets`) before it trains."""
    builder = arm.builder
    rounds = arm.arm.rounds(builder)
    stages = [next(rounds)]
    while True:
        require_sets(builder.spec, stages[-1], runner, len(stages) - 1, arm.name)
        result = runner.run(stages[-1], callbacks=callbacks)
        try:
            stages.append(rounds.send(result))
        except StopIteration:
            return result, stages
        if on_round is not None:
            for upstream in stages[-1].inputs.values():  # the refresh first, so the round can report it
                runner.run(upstream)
            on_round(stages[-1], result, len(stages) - 1)


def run_arm(plan: TrialPlan, arm: ArmPlan, runner: Runner, ctx: TrialContext) -> ArmOutcome:
    """Train the arm round by round (one round unless its recipe refreshes), streaming its curve."""
    stage = arm.stage
    shards = _shards(stage, runner)
    unique = _unique_tokens(stage, shards)
    # Named by what differs between the runs a chart overlays: arm, searched params, seed.
    name = run_name(arm.name, params_label(ctx.params), f"seed {arm.seed}")
    tags = {"synpro.trial": plan.params_hash, "synpro.arm": arm.name, "synpro.seed": str(arm.seed)}
    run_id = ctx.tracker.run("arm", name, tags, parent_id=ctx.trial_run_id)
    arms = list(dict.fromkeys(a.name for a in plan.arms))  # a colour per arm, the same in every trial
    ctx.tracker.set_tags(run_id, {RUN_COLOR_TAG: RUN_COLORS[arms.index(arm.name) % len(RUN_COLORS)]})
    arm_id = ctx.store.upsert_arm(ctx.trial_id, arm.name, arm.spec.kind, arm.key, unique, plan.total_tokens,
                                  mlflow_run_id=run_id, seed=arm.seed)
    ctx.tracker.log_params(run_id, {**ctx.params, "arm": arm.name, "kind": arm.spec.kind, "seed": arm.seed,
                                    "unique_tokens": unique,
                                    "total_tokens": plan.total_tokens, "stage_key": arm.key,
                                    "sources": {name: s.n_tokens for name, s in shards.items()},
                                    **{f"arm.{k}": v for k, v in (arm.spec.model_extra or {}).items()}})
    sink = _CurveSink(ctx, arm_id, run_id)
    try:
        result, stages = _rounds(arm, runner, [sink], lambda stage, ended, round_: _log_round(
            stage, runner, ended, round_, arm_id, (run_id, name, tags), ctx))
    except BaseException:
        ctx.tracker.finish(run_id, "KILLED")
        raise
    # A resumed or cached arm may have points the sink never saw; the store gets them all in _record.
    _log_curve(ctx.tracker, run_id, result.curve)
    ctx.tracker.log_values(run_id, {k: v for k, v in (("tokens_per_second", result.tokens_per_second),
                                                       ("mfu", result.mfu)) if v is not None})
    evaluation = arm.builder.evaluate(stages, label=arm.name)
    return ArmOutcome(arm.name, arm.spec.kind, arm.seed, arm_id, result, unique, run_id, evaluation=evaluation,
                      synthetic_similarity=synthetic_similarity(stages[-1], runner),
                      synthetic=synthetic_usage(stages, runner), stages=stages)


def _log_round(stage, runner: Runner, ended: TrainResult, round_: int, arm_id: int,
               arm_run: tuple[str | None, str, dict[str, str]], ctx: TrialContext) -> None:
    """A refresh: where the previous round ended (a tag on the arm's run), and what each stage that made
    the new round reported (the probe's reference loss, each generator's GRPO curves and held-out pass
    rate, the new sets), each stage on a child run of its own, so GRPO's steps never share an axis with
    the arm's tokens; the store keeps the round with its GRPO curves for the report."""
    from synpro.grpo.trainer import read_metrics

    run_id, arm_name, arm_tags = arm_run
    ctx.tracker.set_tags(run_id, {f"synpro.round.{round_}.start_tokens": ended.tokens_seen})
    grpo: dict[str, list[dict]] = {}
    for upstream in _new_upstream(stage):
        folder = runner.folder(upstream)
        what = f"{upstream.kind} {upstream.label}" if upstream.label else upstream.kind
        child = ctx.tracker.run("refresh", run_name(f"round {round_} {what}", arm_name),
                                {**arm_tags, "synpro.round": str(round_), "synpro.stage": upstream.key},
                                parent_id=run_id)
        metrics = (read_manifest(folder) or {}).get("metrics", {})
        series = {}
        if upstream.kind == "grpo":
            rows = grpo[upstream.label or upstream.key] = read_metrics(folder)  # rewards, KL, pass rate per step
            for key in sorted({k for row in rows for k, v in row.items()
                               if k != "step" and isinstance(v, (int, float))}):
                series[f"grpo/{key}"] = [(row["step"], row[key]) for row in rows if key in row]
        ctx.tracker.log_series(child, series, {f"{upstream.kind}/{k}": v for k, v in metrics.items()
                                               if isinstance(v, (int, float)) and not isinstance(v, bool)})
        ctx.tracker.finish(child)
    ctx.store.add_round(arm_id, round_, ended.tokens_seen, grpo)


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


def _reference_info(plan: TrialPlan) -> dict[str, Any]:
    """Which curve effective tokens invert, as the results say it."""
    kind = plan.spec.reference.kind
    if kind == "fixed":
        return {"kind": kind, "arm": plan.reference_name, "params": plan.spec.reference.params}
    # `best`: the trial's own oracle until the sweep ends and `apply_best_reference` recomputes.
    return {"kind": kind, "arm": plan.reference_name, **({"provisional": True} if kind == "best" else {})}


def _repetition(plan: TrialPlan) -> str | None:
    return next((a.name for a in plan.arms if a.spec.kind == "repetition"), None)


def analyze(plan: TrialPlan, outcomes: Outcomes, references: dict[int, TrainResult] | None = None,
            reference_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Effective tokens of every arm against the reference of its seed, and the trial's analysis.

    D_eff inverts the reference curve, its power-law tail fitted past the warmup; each arm's D_eff
    at the end is the mean over its last `analysis.tail_checkpoints` checkpoints and its multiplier
    the ratio of that to repetition's at the same seed (`synpro.effective.tail_multiplier`); per
    arm, the mean over seeds with a 95% interval paired by seed (`seed_multiplier`). The noise
    floor: repetition's first-pass calibration and the reference's tail fit, per seed.
    `references` (seed -> the reference arm's result) defaults to the trial's own reference arms.
    """
    if references is None:
        references = {seed: outcomes[(a.name, seed)].result for seed, a in plan.references.items()}
    info = reference_info or _reference_info(plan)
    analysis: dict[str, Any] = {"reference": info, "tail_checkpoints": plan.spec.analysis.tail_checkpoints,
                                "arms": {}, "noise_floor": None}
    if not references:
        return analysis
    k, warmup = plan.spec.analysis.tail_checkpoints, plan.spec.training.warmup_tokens
    inverses = {seed: OracleInverse(Curve.from_points(_seen(result)), tail_from_tokens=warmup)
                for seed, result in references.items()}
    for outcome in outcomes.values():
        inverse = inverses.get(outcome.seed)
        if inverse is None:
            continue
        arm = Curve.from_points(_seen(outcome.result))
        d_eff, extrapolated = inverse(arm.values)
        outcome.effective = [(int(t), float(d), bool(x)) for t, d, x in zip(arm.tokens, d_eff, extrapolated)]
        outcome.tail = tail_d_eff(outcome.effective, k) if outcome.effective else None
    floor: dict[str, Any] = {"oracle_tail": {str(s): inv.tail_fit.to_dict() for s, inv in inverses.items()}}
    analysis["noise_floor"] = floor
    repetition = _repetition(plan)
    if repetition is None:
        return analysis
    base = {seed: o for (name, seed), o in outcomes.items() if name == repetition and o.tail is not None}
    first_pass = plan.spec.resolved_budget().trained_unique
    floor["first_pass_calibration"] = {str(s): first_pass_calibration(o.effective, first_pass).to_dict()
                                       for s, o in sorted(base.items())}
    names = dict.fromkeys(name for name, _ in outcomes)
    for name in names:
        arm_seeds = {seed: o for (n, seed), o in outcomes.items() if n == name and o.tail is not None}
        for seed, outcome in arm_seeds.items():
            if seed in base:
                outcome.multiplier = tail_multiplier(outcome.effective, base[seed].effective, k)
        stats = seed_multiplier({s: o.tail for s, o in arm_seeds.items()}, {s: o.tail for s, o in base.items()})
        per_seed = sorted({o.multiplier.method for o in arm_seeds.values() if o.multiplier})
        analysis["arms"][name] = {**stats.to_dict(), "multiplier_extrapolated": stats.extrapolated,
                                  "multiplier_method": f"{'/'.join(per_seed) or '-'} per seed, {stats.method} over seeds"}
    return analysis


def attach_accuracy(plan: TrialPlan, runner: Runner, outcomes: Outcomes) -> None:
    """Evaluate every arm's snapshots on the downstream tasks; D_eff and the multiplier by average
    accuracy, inverting the reference arm's accuracy curve of the same seed like its loss curve."""
    for outcome in outcomes.values():
        if outcome.evaluation is not None:
            outcome.scores = runner.run(outcome.evaluation)
    k, repetition = plan.spec.analysis.tail_checkpoints, _repetition(plan)
    for seed, reference in plan.references.items():
        scored = outcomes[(reference.name, seed)]
        if not scored.scores:
            continue
        oracle = _accuracy_points(scored)
        for (_, s), outcome in outcomes.items():
            if s == seed and outcome.scores:
                outcome.effective_accuracy = [tuple(p) for p in effective_curve(
                    oracle, _accuracy_points(outcome), metric=ACCURACY)]
        base = outcomes.get((repetition, seed)) if repetition else None
        for (_, s), outcome in outcomes.items():
            if s == seed and base is not None and base.effective_accuracy and outcome.effective_accuracy:
                value = tail_multiplier(outcome.effective_accuracy, base.effective_accuracy, k).multiplier
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
    series = {name: [(row["tokens"], row["metrics"][name]) for row in outcome.scores if name in row["metrics"]]
              for name in outcome.scores[-1]["metrics"]}
    series["effective_tokens_accuracy"] = [(t, d) for t, d, _ in outcome.effective_accuracy if math.isfinite(d)]
    ctx.tracker.log_series(outcome.mlflow_run_id, series)
    summary = outcome.summary()
    ctx.store.set_arm_accuracy(outcome.arm_id, final_accuracy=summary["final_accuracy"],
                               effective_tokens_accuracy=summary["effective_tokens_accuracy"],
                               effective_tokens_accuracy_extrapolated=summary["effective_tokens_accuracy_extrapolated"],
                               multiplier_accuracy=summary["multiplier_accuracy"])


def _multiplier_curve(outcome: ArmOutcome, repetition: ArmOutcome | None, k: int) -> list[tuple[int, float]]:
    """The multiplier along training, as at the end: at each checkpoint both arms reach, the
    tail-mean ratio over the k checkpoints up to it (`tail_multiplier`)."""
    if repetition is None:
        return []
    shared = sorted({t for t, _, _ in outcome.effective} & {t for t, _, _ in repetition.effective})
    points = []
    for t in shared:
        ratio = tail_multiplier([p for p in outcome.effective if p[0] <= t],
                                [p for p in repetition.effective if p[0] <= t], k).multiplier
        if math.isfinite(ratio):
            points.append((t, ratio))
    return points


def _store_outcome(outcome: ArmOutcome, store: Store) -> None:
    effective = {t: (d, x) for t, d, x in outcome.effective}
    store.add_evaluations(outcome.arm_id, [
        {**_point_row(p), "effective_tokens": effective.get(p.tokens, (None, None))[0],
         "effective_tokens_extrapolated": effective.get(p.tokens, (None, None))[1]}
        for p in outcome.result.curve])
    summary = outcome.summary()
    store.set_arm_result(outcome.arm_id, final_val_loss=summary["final_val_loss"],
                         tokens_seen=summary["tokens_seen"], effective_tokens=summary["effective_tokens"],
                         effective_tokens_extrapolated=summary["effective_tokens_extrapolated"],
                         multiplier_vs_repetition=summary["multiplier_vs_repetition"], details=outcome.details())


def _record(plan: TrialPlan, outcome: ArmOutcome, outcomes: Outcomes, ctx: TrialContext) -> None:
    _store_outcome(outcome, ctx.store)
    _record_accuracy(outcome, ctx)
    run_id = outcome.mlflow_run_id
    repetition = outcomes.get((_repetition(plan), outcome.seed)) if _repetition(plan) else None
    ctx.tracker.log_series(run_id, {
        "effective_tokens": [(t, d) for t, d, _ in outcome.effective if math.isfinite(d)],
        "multiplier_vs_repetition": _multiplier_curve(outcome, repetition, plan.spec.analysis.tail_checkpoints),
    }, ledger.metrics(outcome.usage))
    ctx.tracker.log_dict(run_id, finite(outcome.summary()), "result.json")
    ctx.tracker.finish(run_id)


def _floor_values(analysis: dict[str, Any]) -> dict[str, float]:
    """The noise floor as scalars for the trial's MLflow run (per seed)."""
    floor = analysis["noise_floor"] or {}
    values = {f"noise_floor/first_pass_calibration/seed{s}": c["ratio"]
              for s, c in floor.get("first_pass_calibration", {}).items()}
    for seed, tail in floor.get("oracle_tail", {}).items():
        values |= {f"noise_floor/oracle_tail/seed{seed}/{k}": tail[k] for k in ("E", "B", "beta", "r2")}
    return {k: v for k, v in values.items() if v is not None and math.isfinite(v)}


def _record_analysis(analysis: dict[str, Any], ctx: TrialContext) -> None:
    ctx.store.set_trial_analysis(ctx.trial_id, analysis)
    ctx.tracker.log_dict(ctx.trial_run_id, finite(analysis), "analysis.json")
    ctx.tracker.log_values(ctx.trial_run_id, _floor_values(analysis) | ledger.metrics(analysis.get("usage") or {}))


def _label(plan: TrialPlan, name: str, seed: int) -> str:
    return f"{name} (seed {seed})" if len(plan.seeds) > 1 else name


def _log_figures(plan: TrialPlan, outcomes: Outcomes, ctx: TrialContext) -> None:
    first = plan.seeds[0]
    reference = _label(plan, plan.reference_name, first) if plan.reference_name else None
    which = f", {params_label(ctx.params)}" if ctx.params else ""
    figures = {"loss_curves.png": plots.loss_figure(
        {_label(plan, n, s): [(p.tokens, p.val_loss) for p in o.result.curve] for (n, s), o in outcomes.items()},
        reference, f"Learning curves{which}")}
    if reference:
        figures["effective_tokens.png"] = plots.effective_figure(
            {_label(plan, n, s): o.effective for (n, s), o in outcomes.items()}, reference,
            f"Effective tokens{which} (hollow = extrapolated)")
    for path, fig in figures.items():
        ctx.tracker.log_figure(ctx.trial_run_id, fig, path)
        plots.close(fig)


def run_trial(plan: TrialPlan, ctx: TrialContext) -> TrialOutcome:
    from synpro.executors import make_executor

    runner = Runner(plan.stages_dir, progress=ctx.progress, executor=make_executor(plan.spec))
    record_synthetic(plan, runner, ctx)
    parallel = plan.spec.executor.parallel
    if parallel > 1:  # ready stages first (every arm's first-round inputs), so the arms start training together
        _each(parallel, runner.run, list({s.key: s for a in plan.arms for s in a.stage.inputs.values()}.values()))
    outcomes = dict(zip([(arm.name, arm.seed) for arm in plan.arms],
                        _each(parallel, lambda arm: run_arm(plan, arm, runner, ctx), plan.arms)))
    analysis = analyze(plan, outcomes)
    _each(parallel, runner.run, [o.evaluation for o in outcomes.values() if o.evaluation is not None])
    attach_accuracy(plan, runner, outcomes)
    analysis["usage"] = _measure(plan, outcomes)
    for outcome in outcomes.values():
        _record(plan, outcome, outcomes, ctx)
    _record_analysis(analysis, ctx)
    _log_figures(plan, outcomes, ctx)
    return TrialOutcome(outcomes, analysis)


def _each(parallel: int, fn: Any, items: list) -> list:
    """`fn` over `items`, up to `parallel` at once (threads that wait on stage processes or jobs), in
    order. Every call ends before the first error is raised: no stage is left running unwatched."""
    if parallel <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="synpro-stage") as pool:
        futures = [pool.submit(fn, item) for item in items]
        wait(futures)
    return [f.result() for f in futures]


def _measure(plan: TrialPlan, outcomes: Outcomes) -> dict[str, Any]:
    """Each arm's ledger (the device-hours of everything it ran), and the trial's: each stage once."""
    for outcome in outcomes.values():
        outcome.usage = ledger.usage(plan.stages_dir, outcome.ran)
    return ledger.usage(plan.stages_dir, [s for o in outcomes.values() for s in o.ran])


def objective_values(plan: TrialPlan, trial: TrialOutcome) -> list[float]:
    """Each objective over seeds, the primary first: the mean multiplier (geometric, `seed_multiplier`),
    else the mean; NaN where an arm has no value."""
    out = []
    for _, objective in plan.spec.search.targets():
        if objective.metric == "multiplier_vs_repetition":
            value = trial.analysis["arms"].get(objective.arm, {}).get("multiplier_vs_repetition")
        else:
            values = [o.summary().get(objective.metric) for (n, _), o in trial.arms.items() if n == objective.arm]
            value = None if None in values or not values else sum(values) / len(values)
        out.append(float("nan") if value is None else float(value))
    return out


# ---- the study's best oracle as the reference ------------------------------------------------------

def _loaded_outcomes(plan: TrialPlan, trial_id: int, store: Store, runner: Runner) -> Outcomes:
    """A finished trial's arms read back from their stage folders (nothing is trained again)."""
    outcomes = {}
    for arm in plan.arms:
        result, stages = _rounds(arm, runner, [])
        unique = _unique_tokens(arm.stage, _shards(arm.stage, runner))
        arm_id = store.upsert_arm(trial_id, arm.name, arm.spec.kind, arm.key, unique, plan.total_tokens, seed=arm.seed)
        outcomes[(arm.name, arm.seed)] = ArmOutcome(arm.name, arm.spec.kind, arm.seed, arm_id, result, unique, None,
                                                    synthetic_similarity=synthetic_similarity(stages[-1], runner),
                                                    synthetic=synthetic_usage(stages, runner), stages=stages,
                                                    evaluation=arm.builder.evaluate(stages, label=arm.name))
    return outcomes


def apply_best_reference(spec: Spec, store: Store, *, progress: bool = False) -> dict[str, Any] | None:
    """`reference: best`: pick the finished trial whose oracle reached the lowest final val loss
    (mean over seeds), then recompute every finished trial's effective tokens, multipliers and
    objective against that oracle (per seed) in the store. Returns the reference used, or None."""
    study = spec.experiment.name
    finished = [t for t in store.results(study) if t["state"] == "finished"]
    oracle = next(a.name for a in spec.arms if a.kind == "oracle")
    scored = [t for t in finished if (t["arms"].get(oracle) or {}).get("final_val_loss") is not None]
    if not scored:
        return None
    best = min(scored, key=lambda t: t["arms"][oracle]["final_val_loss"])
    best_plan = plan_trial(spec.with_params(best["params"]))
    runner = Runner(best_plan.stages_dir, progress=progress)
    references = {a.seed: runner.run(a.stage) for a in best_plan.arms if a.name == oracle}
    info = {"kind": "best", "arm": oracle, "trial": best["trial"], "params": best["params"],
            "final_val_loss": best["arms"][oracle]["final_val_loss"]}
    for trial in finished:
        plan = plan_trial(spec.with_params(trial["params"]))
        trial_id = store.trial_id(study, plan.params_hash)
        outcomes = _loaded_outcomes(plan, trial_id, store, runner)
        analysis = analyze(plan, outcomes, references, info)
        analysis["usage"] = _measure(plan, outcomes)
        for outcome in outcomes.values():
            _store_outcome(outcome, store)
        store.set_trial_analysis(trial_id, analysis)
        store.finish_trial(trial_id, "finished",
                           objective_values=objective_values(plan, TrialOutcome(outcomes, analysis)))
    return info
