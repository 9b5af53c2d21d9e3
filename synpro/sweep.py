"""`synpro sweep`: expand the spec with Optuna and run every trial, resumably.

Resume rules (method.md §5): a trial's identity is the hash of its resolved spec, so a retried or
re-sampled trial maps to the same store row and the same stage folders; trials left RUNNING by a
killed process are failed once their heartbeat is stale, and any failed trial is queued again (up
to `MAX_RETRIES`) because its finished stages make the retry cheap.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from synpro import search
from synpro.display import finite
from synpro.pipeline import TrialContext, apply_best_reference, objective_value, run_trial
from synpro.core.hashing import stable_hash
from synpro.plan import plan_trial
from synpro.spec import Spec
from synpro.stages import Runner
from synpro.stages.extra import ExtraStage
from synpro.stages.pools import PoolsStage
from synpro.tracking import NullTracker, Tracker
from store import Store

MAX_RETRIES = 2
PENDING = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)


@dataclass
class SweepSummary:
    study: str
    target_trials: int
    completed: int
    ran_now: int
    results: list[dict[str, Any]]


def _open_tracker(spec: Spec) -> Tracker:
    if not spec.tracking.enabled:
        return NullTracker()
    return Tracker(spec.mlflow_uri(), spec.experiment.name, spec.workdir / "mlartifacts")


def _open_study(spec: Spec) -> optuna.Study:
    optuna.logging.set_verbosity(logging.ERROR)  # failures reach the user through the CLI, once
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    storage = optuna.storages.RDBStorage(spec.optuna_url(), heartbeat_interval=spec.search.heartbeat_seconds,
                                         grace_period=spec.search.stale_after_seconds)
    space = stable_hash(spec.content_hash(), spec.search.sampler, spec.search.model_dump(mode="json")["params"])
    return optuna.create_study(study_name=f"{spec.experiment.name}-{space}", storage=storage,
                               sampler=search.sampler(spec), direction=spec.search.objective.direction,
                               load_if_exists=True)


def _params_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def _queue(study: optuna.Study, wanted: list[dict[str, Any]]) -> None:
    """Enqueue each wanted point that is neither pending nor finished, unless it failed too often."""
    trials = study.get_trials(deepcopy=False)
    settled = {_params_key(t.params) for t in trials if t.state in PENDING}
    failures = Counter(_params_key(t.params) for t in trials if t.state == TrialState.FAIL)
    for params in wanted:
        key = _params_key(params)
        if key not in settled and failures[key] <= MAX_RETRIES:
            study.enqueue_trial(params)
            settled.add(key)


def _wanted(spec: Spec, study: optuna.Study, target: int) -> list[dict[str, Any]]:
    """A grid is all its points, queued as fixed trials; other samplers retry their failed trials."""
    if spec.search.sampler == "grid":
        return search.grid_points(spec)[:target]
    return [dict(t.params) for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]


def _preflight(spec: Spec, progress: bool) -> None:
    """Build the first trial's data pools before anything is recorded: a too-small corpus is bad
    input, and must not leave a study, a trial or a run behind."""
    points = search.grid_points(spec) if spec.search.sampler == "grid" else [{}]
    plan = plan_trial(spec.with_params(points[0]))
    runner = Runner(plan.stages_dir, progress=progress)
    for stage in plan.graph:
        if isinstance(stage, (PoolsStage, ExtraStage)):
            runner.run(stage)


def _has_work(study: optuna.Study, spec: Spec) -> bool:
    """A grid is done when nothing is queued; other samplers can always propose another point."""
    return spec.search.sampler != "grid" or bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def run_sweep(spec: Spec, *, n_trials: int | None = None, progress: bool = True,
              announce: Callable[[str], None] = print) -> SweepSummary:
    spec.workdir.mkdir(parents=True, exist_ok=True)
    _preflight(spec, progress)
    (spec.workdir / "spec.yaml").write_text(spec.to_yaml())
    name = spec.experiment.name
    store = Store(spec.store_url())
    tracker = _open_tracker(spec)
    study_run = tracker.run("study", name, {"synpro.study": name})
    tracker.log_params(study_run, spec.flat())
    tracker.log_text(study_run, spec.to_yaml(), "spec.yaml")
    study_id = store.upsert_study(name, spec.to_yaml(), spec.search.objective.model_dump(), study_run)
    study = _open_study(spec)
    target = n_trials or search.n_trials(spec)

    def objective(trial: optuna.Trial) -> float:
        params = search.suggest(trial, spec.search)
        trial_spec = spec.with_params(params)
        plan = plan_trial(trial_spec)
        trial_run = tracker.run("trial", f"trial-{trial.number}",
                                {"synpro.study": name, "synpro.trial": plan.params_hash}, parent_id=study_run)
        tracker.log_params(trial_run, trial_spec.flat())
        tracker.log_text(trial_run, trial_spec.to_yaml(), "spec.yaml")
        trial_id = store.upsert_trial(study_id, plan.params_hash, params, optuna_number=trial.number,
                                      mlflow_run_id=trial_run)
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "spec as written"
        announce(f"trial {done + 1}/{target} (#{trial.number}): {shown}")
        ctx = TrialContext(store, tracker, trial_id, trial_run, progress)
        try:
            outcomes = run_trial(plan, ctx)
        except BaseException as exc:
            store.finish_trial(trial_id, "failed")
            tracker.finish(trial_run, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        value = objective_value(plan, outcomes)
        store.finish_trial(trial_id, "finished", value)
        tracker.log_dict(trial_run, finite(outcomes.summary()), "results.json")
        tracker.log_points(trial_run, "objective", [(0, value)])
        tracker.finish(trial_run)
        return value

    ran = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        _queue(study, _wanted(spec, study, target))
        completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if completed >= target or ran >= target * (1 + MAX_RETRIES) or not _has_work(study, spec):
            break
        study.optimize(objective, n_trials=1)
        ran += 1
    if spec.reference.kind == "best":  # the yardstick is known only now: recompute every trial against it
        reference = apply_best_reference(spec, store, progress=progress)
        tracker.log_dict(study_run, finite(reference), "reference.json")
    results = store.results(name)
    tracker.log_dict(study_run, finite(results), "results.json")
    tracker.finish(study_run)
    store.close()
    return SweepSummary(name, target, completed, ran, results)
