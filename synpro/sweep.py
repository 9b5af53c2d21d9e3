"""`synpro sweep`: expand the spec with Optuna and run every point of it exactly once, resumably,
with any number of workers.

Rules (method.md §5):

- The store is the truth. A point is done when its store trial is finished with every arm stored
  with a result; "N/N trials complete" counts exactly that. Optuna is the queue.
- Every wanted point that is not done and not queued or running is queued once, keyed by the
  point itself (`fixed_params`: a waiting trial has no `params` yet). Queueing, reaping and taking
  the next trial happen under one lock of the Optuna database, so workers never take one point
  twice and never queue it twice.
- A RUNNING trial whose worker is gone (a dead process on this host, or no heartbeat for
  `stale_after_seconds` from another host) is failed with the reason recorded (Optuna user attr, the
  MLflow run's tags, the store row `failed`) and queued again, at most `MAX_RETRIES` times; the
  MLflow runs its worker left RUNNING end KILLED and are reused by the retry, whose finished stages
  make it cheap. Retries are counted per run of the sweep: running it again resumes every point. A
  worker whose queue is empty while others still run trials waits for them, so the workers together
  finish the study.
- SQLite cannot serve parallel workers (the method notes' "database is locked"): one sweep at a
  time holds an Optuna SQLite file and a second is refused at start with what to do instead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from synpro import search
from synpro.core.faults import kill_point
from synpro.core.preempt import Preempted
from synpro.core.fs import file_lock
from synpro.core.secrets import hide, mask
from synpro.errors import InputError
from synpro.display import finite
from synpro.core.hashing import stable_hash
from synpro.plan import plan_trial
from synpro.spec import Spec
from synpro.stages import Runner
from synpro.stages.extra import ExtraStage
from synpro.stages.pools import PoolsStage
from synpro.tracking import NullTracker, Tracker, params_label, run_name
from store import Store
from store.locks import db_lock, sqlite_file

MAX_RETRIES = 2
OWNER_ATTR = "synpro.owner"  # which process runs the trial: host:pid:start-time
HASH_ATTR = "synpro.params_hash"  # the store trial's identity
STORE_ID_ATTR = "synpro.store_trial_id"
REASON_ATTR = "synpro.fail_reason"
INTERRUPTED_ATTR = "synpro.interrupted"
_SERVER_DB_HINT = ("parallel workers need a server database: set store.url and store.optuna_url (or --store and "
                   "--optuna-storage) to PostgreSQL, e.g. postgresql+psycopg://user:password@host:5432/synpro")


@dataclass
class SweepSummary:
    study: str
    target_trials: int
    completed: int
    ran_now: int
    results: list[dict[str, Any]]
    given_up: list[dict[str, Any]] = field(default_factory=list)  # points that failed MAX_RETRIES + 1 times
    optuna_study: str = ""  # the study's name in the Optuna storage (what `optuna-dashboard` lists)


# ---- which process owns a trial ----------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (a pid reused later has another)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie is as dead as a reaped process


def owner_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid()) or ''}"


def local_owner_alive(token: str) -> bool | None:
    """Whether the owner process is alive; None when it ran on another host (only its heartbeat can tell)."""
    host, _, rest = token.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if Path("/proc/self/stat").exists():
        return _start_time(int(pid)) not in (None, "") and (not started or _start_time(int(pid)) == started)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _Heartbeat:
    """Beats for a trial from a thread, from the moment it is taken until it is told: in Optuna (so
    other workers see it alive) and, once it has a row, in the store."""

    def __init__(self, storage: Any, optuna_id: int, seconds: float):
        self.storage, self.optuna_id, self.seconds = storage, optuna_id, seconds
        self.store_row: tuple[Store, int] | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            with suppress(Exception):  # a missed beat only makes the trial look stale sooner
                self.storage.record_heartbeat(self.optuna_id)
                if self.store_row is not None:
                    self.store_row[0].heartbeat(self.store_row[1])
            if self.stop.wait(self.seconds):
                return

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


# ---- opening what a sweep writes to ------------------------------------------------------------


def _open_tracker(spec: Spec, owner: str) -> Tracker:
    if not spec.tracking.enabled:
        return NullTracker()
    return Tracker(spec.mlflow_uri(), spec.experiment.name, spec.workdir / "mlartifacts", owner=owner)


def _open_study(spec: Spec) -> optuna.Study:
    """Workers starting at once on a new database would each create Optuna's tables: one does, under a lock."""
    optuna.logging.set_verbosity(logging.ERROR)  # failures reach the user through the CLI, once
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    # We ask/tell under our queue lock and beat for the trial ourselves (_Heartbeat), not via optimize().
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    directions = [o.direction for _, o in spec.search.targets()]
    names = [f"{o.metric} of {o.arm}" for _, o in spec.search.targets()]  # Optuna's dashboard shows these
    with db_lock(spec.optuna_url(), "optuna-schema"):
        storage = optuna.storages.RDBStorage(spec.optuna_url(), heartbeat_interval=spec.search.heartbeat_seconds,
                                             grace_period=spec.search.stale_after_seconds)
        study = optuna.create_study(study_name=optuna_study_name(spec), storage=storage,
                                    sampler=search.sampler(spec), directions=directions, load_if_exists=True)
        if study.metric_names != names:
            study.set_metric_names(names)
        return study


def optuna_study_name(spec: Spec) -> str:
    """`<experiment>-<hash of the spec and its search space>`: a changed spec is a new Optuna study. A
    multi-objective study is another one too (its directions are fixed at creation); a single-objective
    one keeps the name it always had, so existing studies resume."""
    directions = [o.direction for _, o in spec.search.targets()]
    space = stable_hash(spec.content_hash(), spec.search.sampler, spec.search.model_dump(mode="json")["params"],
                        *([directions] if spec.search.multi else []))
    return f"{spec.experiment.name}-{space}"


def _hide_secrets(spec: Spec) -> None:
    """Register this run's literal secrets, so even a driver's message that quotes one is masked."""
    from sqlalchemy.engine import make_url

    for url in (spec.store_url(), spec.optuna_url(), spec.mlflow_uri()):
        with suppress(Exception):
            hide(make_url(url).password)
    hide(os.environ.get(spec.generation.generator.api_key_env))


def _preflight(spec: Spec, progress: bool) -> None:
    """Build the first trial's data pools before anything is recorded: a too-small corpus is bad
    input, and must not leave a study, a trial or a run behind. Workers sharing a workdir take
    turns, so the data is built once."""
    spec.workdir.mkdir(parents=True, exist_ok=True)
    with file_lock(spec.workdir / ".sweep-setup.lock"):
        points = search.grid_points(spec) if spec.search.sampler == "grid" else [{}]
        plan = plan_trial(spec.with_params(points[0]))
        from synpro.executors import make_executor

        runner = Runner(plan.stages_dir, progress=progress, executor=make_executor(plan.spec))
        for stage in plan.graph:
            if isinstance(stage, (PoolsStage, ExtraStage)):
                runner.run(stage)
        (spec.workdir / "spec.yaml").write_text(spec.masked().to_yaml())


def refuse_sqlite_parallel(spec: Spec, workers: int) -> None:
    path = sqlite_file(spec.optuna_url())
    if workers > 1 and path is not None:
        raise InputError.one(f"{workers} workers cannot share the Optuna SQLite database {path}", file=spec.source_file,
                             key="store.optuna_url", hint=_SERVER_DB_HINT)


# ---- the queue ---------------------------------------------------------------------------------


def _point(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The point a trial is for: its enqueued `fixed_params` (a waiting trial has no params yet)."""
    return trial.system_attrs.get("fixed_params") or trial.params


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


class _Sweep:
    """One worker's view of the study: what is done, what to queue, which trial to take next."""

    def __init__(self, spec: Spec, store: Store, tracker: Tracker, study: optuna.Study, target: int,
                 announce: Callable[[str], None]):
        self.spec, self.store, self.tracker, self.study = spec, store, tracker, study
        self.target, self.announce = target, announce
        self.arms = [a.name for a in spec.arms]
        self.seeds = spec.experiment.training_seeds()
        self.grid = spec.search.sampler == "grid"
        # The grid's wanted points and their store identities, computed once.
        self.points = search.grid_points(spec)[:target] if self.grid else []
        self.hashes = {_key(p): spec.with_params(p).content_hash() for p in self.points}
        self.given_up: list[dict[str, Any]] = []
        # Retries are counted per run of the sweep: a point whose earlier runs were killed (a power cut,
        # a user's kill) resumes when the sweep runs again, however often that happened before.
        self.started = datetime.now()

    def done(self, trials: list[optuna.trial.FrozenTrial]) -> set[str]:
        """Keys of the points whose store trial is complete (every arm stored with a result)."""
        complete = self.store.complete_trials(self.spec.experiment.name, self.arms, self.seeds)
        if self.grid:
            return {key for key, h in self.hashes.items() if h in complete}
        return {_key(_point(t)) for t in trials
                if t.state == TrialState.COMPLETE and t.user_attrs.get(HASH_ATTR) in complete}

    def reap(self) -> None:
        """Fail the RUNNING trials whose worker is gone, recording why, and end their MLflow runs."""
        storage = self.study._storage
        stale = set(storage._get_stale_trial_ids(self.study._study_id))  # Optuna has no public reader
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get(OWNER_ATTR, "")
            alive = local_owner_alive(owner)
            if alive is False:
                reason = f"its worker ({owner}) is gone"
            elif alive is None and trial._trial_id in stale:  # on another host only its heartbeat tells
                reason = f"no heartbeat for over {self.spec.search.stale_after_seconds} s (worker {owner or 'unknown'})"
            else:
                continue
            row = trial.user_attrs.get(STORE_ID_ATTR)
            stored, values = self.store.stored_result(row, self.arms, self.seeds) if row is not None else (False, None)
            try:
                storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, reason)
                if stored and values is not None:  # it died after storing everything: tell Optuna, don't redo it
                    storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, values=values)
                    self.announce(f"trial #{trial.number} ({_shown(_point(trial))}): {reason} after storing its "
                                  "result; completed from the store")
                    continue
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # it finished (or another worker failed it) meanwhile
            if row is not None:
                self.store.abandon_trial(row)
            if trial.user_attrs.get("synpro.mlflow_run_id"):
                with suppress(Exception):
                    self.tracker.set_tags(trial.user_attrs["synpro.mlflow_run_id"], {REASON_ATTR: reason})
            self.announce(f"trial #{trial.number} ({_shown(_point(trial))}) failed: {reason}")
        live = {t.user_attrs.get(OWNER_ATTR) for t in self.study.get_trials(deepcopy=False,
                                                                           states=(TrialState.RUNNING,))}
        self.tracker.end_orphans(lambda owner: local_owner_alive(owner) or owner in live)

    def queue(self, trials: list[optuna.trial.FrozenTrial], done: set[str]) -> None:
        """Enqueue each wanted point that is neither done nor pending, unless it failed too often."""
        pending = {_key(_point(t)) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
        # A user's Ctrl-C is no failure of the point: it does not use up a retry; nor does a trial an
        # earlier run of the sweep started.
        failures = Counter(_key(_point(t)) for t in trials
                           if t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED_ATTR)
                           and t.datetime_start is not None and t.datetime_start >= self.started)
        # A grid wants all its points; other samplers retry the points of their failed trials.
        wanted = self.points if self.grid else [_point(t) for t in trials if t.state == TrialState.FAIL]
        self.given_up = []
        for params in wanted:
            key = _key(params)
            if key in done or key in pending:
                continue
            if failures[key] > MAX_RETRIES:
                if params not in self.given_up:
                    self.given_up.append(params)
                continue
            self.study.enqueue_trial(params, user_attrs={"synpro.retry": failures[key]} if failures[key] else None)
            pending.add(key)

    def next_trial(self, budget_left: bool) -> tuple[optuna.Trial | None, int, int]:
        """Under the queue lock: reap, queue, and take a trial if one should run now.

        Returns (trial or None, points complete, trials other workers are running).
        """
        with db_lock(self.spec.optuna_url(), "optuna-queue"):
            self.reap()
            trials = self.study.get_trials(deepcopy=False)
            done = self.done(trials)
            self.queue(trials, done)
            trials = self.study.get_trials(deepcopy=False)
            completed = len(done)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            room = completed + running < self.target
            if not budget_left or completed >= self.target or not (waiting if self.grid else room):
                return None, completed, running
            trial = self.study.ask()
            trial.set_user_attr(OWNER_ATTR, self.tracker.owner or owner_token())
            self.study._storage.record_heartbeat(trial._trial_id)
            return trial, completed, running


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "spec as written"


# ---- running ------------------------------------------------------------------------------------


def run_sweep(spec: Spec, *, n_trials: int | None = None, progress: bool = True,
              announce: Callable[[str], None] = print) -> SweepSummary:
    """Run this worker until the study is complete (or nothing more can run); safe to start many."""
    _hide_secrets(spec)
    _preflight(spec, progress)
    sqlite_optuna = sqlite_file(spec.optuna_url())
    with (db_lock(spec.optuna_url(), "sweep", wait=False) if sqlite_optuna else suppress()) as held:
        if held is False:
            raise InputError.one(f"another synpro sweep is running on the Optuna SQLite database {sqlite_optuna}; "
                                 "SQLite cannot serve two workers", file=spec.source_file, key="store.optuna_url",
                                 hint=f"wait for it to finish, or: {_SERVER_DB_HINT}")
        return _run(spec, n_trials, progress, announce)


def _run(spec: Spec, n_trials: int | None, progress: bool, announce: Callable[[str], None]) -> SweepSummary:
    name = spec.experiment.name
    public = spec.masked()
    store = Store(spec.store_url())
    tracker = _open_tracker(spec, owner_token())
    study_run = tracker.run("study", name, {"synpro.study": name})
    try:
        tracker.log_params(study_run, public.flat())
        tracker.log_text(study_run, public.to_yaml(), "spec.yaml")
        study_id = store.upsert_study(name, public.to_yaml(), spec.search.record(), study_run)
        study = _open_study(spec)
        target = n_trials or search.n_trials(spec)
        sweep = _Sweep(spec, store, tracker, study, target, announce)
        ran = 0
        while True:
            trial, completed, running = sweep.next_trial(budget_left=ran < target * (1 + MAX_RETRIES))
            if trial is None:
                if running and completed < target:  # the rest is in other workers' hands: wait for them
                    time.sleep(spec.search.heartbeat_seconds)
                    continue
                break
            ran += 1
            with _Heartbeat(study._storage, trial._trial_id, spec.search.heartbeat_seconds) as heartbeat:
                params = search.suggest(trial, spec.search)
                announce(f"trial #{trial.number}: {_shown(params)} ({completed}/{target} complete so far)")
                _run_one(spec, public, trial, params, study_id, study_run, store, tracker, progress, heartbeat)
            kill_point("trial.told")
        if spec.reference.kind == "best":  # the yardstick is known only now: recompute every trial against it
            from synpro.pipeline import apply_best_reference

            reference = apply_best_reference(spec, store, progress=progress)
            tracker.log_dict(study_run, finite(reference), "reference.json")
        results = store.results(name)
        tracker.log_dict(study_run, finite(results), "results.json")
    except BaseException as exc:
        with suppress(Exception):  # a full disk may refuse this too; the original error matters more
            tracker.finish(study_run, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        with suppress(Exception):
            store.close()
        raise
    tracker.finish(study_run)
    store.close()
    return SweepSummary(name, target, completed, ran, results, sweep.given_up, study.study_name)


def _run_one(spec: Spec, public: Spec, trial: optuna.Trial, params: dict[str, Any], study_id: int,
             study_run: str | None, store: Store, tracker: Tracker, progress: bool, heartbeat: _Heartbeat) -> None:
    """One trial from start to `tell`; the store row is finished only once every arm is stored."""
    # Training and analysis (torch, scipy, matplotlib: seconds to import) load only when a trial runs,
    # so a sweep with nothing left to do starts and ends fast.
    from synpro.pipeline import TrialContext, objective_values, run_trial

    name, study = spec.experiment.name, trial.study
    trial_spec = spec.with_params(params)
    plan = plan_trial(trial_spec)
    trial.set_user_attr(HASH_ATTR, plan.params_hash)
    trial_run = tracker.run("trial", run_name(f"trial-{trial.number}", params_label(params)),
                            {"synpro.study": name, "synpro.trial": plan.params_hash}, parent_id=study_run)
    if trial_run:
        trial.set_user_attr("synpro.mlflow_run_id", trial_run)
    tracker.log_params(trial_run, public.with_params(params).flat())
    tracker.log_text(trial_run, public.with_params(params).to_yaml(), "spec.yaml")
    trial_id = store.upsert_trial(study_id, plan.params_hash, params, optuna_number=trial.number,
                                  mlflow_run_id=trial_run)
    trial.set_user_attr(STORE_ID_ATTR, trial_id)
    heartbeat.store_row = store, trial_id
    ctx = TrialContext(store, tracker, trial_id, trial_run, progress, params=params)
    try:
        kill_point("trial.start")
        outcomes = run_trial(plan, ctx)
        values = objective_values(plan, outcomes)
        missing = store.unfinished_arms(trial_id, [a.name for a in plan.arms], plan.seeds)
        if missing:
            raise RuntimeError(f"trial #{trial.number}: arms {missing} were not stored with a result")
        store.finish_trial(trial_id, "finished", objective_values=values)
        tracker.log_dict(trial_run, finite(outcomes.summary()), "results.json")
        named = zip(spec.search.targets(), values) if spec.search.multi else ()
        tracker.log_values(trial_run, {"objective": values[0],
                                       **{f"objective/{o.arm}/{o.metric}": value for (_, o), value in named}})
        tracker.finish(trial_run)
        kill_point("trial.stored")
    except BaseException as exc:
        reason = mask(f"{type(exc).__name__}: {exc}")[:500]
        with suppress(Exception):
            store.finish_trial(trial_id, "failed")
        with suppress(Exception):
            tracker.set_tags(trial_run, {REASON_ATTR: reason})
            tracker.finish(trial_run, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        with suppress(Exception):
            trial.set_user_attr(REASON_ATTR, reason)
            if isinstance(exc, (KeyboardInterrupt, Preempted)):  # no failure of the point: no retry used up
                trial.set_user_attr(INTERRUPTED_ATTR, True)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    # Only a worker that was taken for dead (a missed heartbeat) finds its trial failed already: its
    # result is stored all the same, and the point's retry will find every stage finished.
    told = all(v == v for v in values)  # a NaN objective (an undefined multiplier) fails the trial in Optuna
    study.tell(trial, values if told else None, state=None if told else TrialState.FAIL, skip_if_finished=True)


# ---- several local workers --------------------------------------------------------------------


def run_workers(spec: Spec, workers: int, *, n_trials: int | None = None, progress: bool = True,
                announce: Callable[[str], None] = print) -> tuple[SweepSummary, int]:
    """Start `workers` local worker processes on the spec's storage and wait for them.

    The spec travels to each worker through a pipe, never a file, so its passwords stay in memory.
    Returns the summary read back from the store and the worst exit code of the workers.
    """
    refuse_sqlite_parallel(spec, workers)
    _hide_secrets(spec)
    _preflight(spec, progress)
    payload = json.dumps({"spec": spec.to_dict(), "source_file": spec.source_file, "n_trials": n_trials})
    from synpro.executors.local import split_gpus, visible_gpus

    gpus = visible_gpus()  # each worker sees only its own share of this machine's GPUs
    shares = split_gpus(gpus, workers)
    procs = []
    for i in range(workers):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(shares[i])} if gpus else None
        proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--name", f"worker {i + 1}/{workers}"],
                                stdin=subprocess.PIPE, text=True, env=env)
        proc.stdin.write(payload)
        proc.stdin.close()
        procs.append(proc)
    announce(f"{workers} workers started (pids {', '.join(str(p.pid) for p in procs)})")
    codes = [proc.wait() for proc in procs]
    return summarize(spec, n_trials, ran=None), max(codes)


def summarize(spec: Spec, n_trials: int | None, ran: int | None) -> SweepSummary:
    """The study's standing, read from the store (what other workers did included)."""
    target = n_trials or search.n_trials(spec)
    with Store(spec.store_url()) as store:
        study = _open_study(spec)
        sweep = _Sweep(spec, store, NullTracker(), study, target, lambda _: None)
        trials = study.get_trials(deepcopy=False)
        done = sweep.done(trials)
        return SweepSummary(spec.experiment.name, target, len(done), ran or 0, store.results(spec.experiment.name),
                            optuna_study=optuna_study_name(spec))
