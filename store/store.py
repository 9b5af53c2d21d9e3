"""The results store: SynPro's own SQL record of studies, trials, arms and learning curves.

Comparisons are answered here with a few SQL joins rather than by pulling runs through MLflow, so
they stay fast past thousands of runs. Every write is an idempotent upsert in its own short
transaction: a retried trial or a re-logged curve lands on the same rows, and a killed worker loses
at most the call in flight.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (Connection, Engine, Float, and_, case, cast, create_engine, event, exists, func, null,
                        select, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from store.schema import (ARM_STATES, TRIAL_STATES, Arm, Evaluation, Fit, FitTrial, RefreshRound, Study, Trial,
                          utcnow)
from synpro import ledger
from synpro.display import finite
from synpro.core.faults import kill_point
from synpro.core.secrets import hide, mask
from synpro.errors import InputError
from synpro.pareto import non_dominated

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Arbitrary constant naming the PostgreSQL advisory lock that serialises schema upgrades.
_MIGRATION_LOCK = 0x5A5E_0001
# Alembic's `context` and `op` are module-global proxies: one upgrade at a time per process.
_ALEMBIC_LOCK = threading.Lock()
# Execution option telling the SQLite "begin" hook to take the write lock up front.
_WRITE_LOCK = "synpro_write_lock"
_URL_HINT = "write sqlite:///path/to/results.db or postgresql+psycopg://user:password@host:5432/dbname"
_POINT_KEYS = {"tokens", "step", "val_loss", "train_loss", "effective_tokens", "effective_tokens_extrapolated"}


def alembic_config() -> Config:
    """Alembic settings pointing inside the package; no alembic.ini needed.

    To write a new revision, put an open connection to an upgraded store in
    ``cfg.attributes["connection"]`` and call ``alembic.command.revision(cfg, msg, autogenerate=True)``.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to head, so a newer SynPro opens a store an older one wrote.

    Parallel workers may open a new store at once: the upgrade runs under a lock (an advisory
    lock on PostgreSQL, the write lock on SQLite) and re-reads the revision once it holds it.
    """
    cfg = alembic_config()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    with _ALEMBIC_LOCK, engine.connect().execution_options(**{_WRITE_LOCK: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _create_engine(url: str) -> Engine:
    """An engine for `url`, or an InputError saying what is wrong with the URL."""
    shown = mask(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError.one(f"malformed database URL {shown!r}", key="store.url", hint=_URL_HINT) from None
    if parsed.drivername in ("postgres", "postgresql"):  # SQLAlchemy's default driver is psycopg2; we ship psycopg 3
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InputError.one(f"unsupported database {parsed.get_backend_name()!r} in {shown!r}; "
                             "the store runs on SQLite or PostgreSQL", key="store.url", hint=_URL_HINT)
    if parsed.get_backend_name() == "sqlite" and parsed.host:
        raise InputError.one(f"SQLite URL {shown!r} names a host ({parsed.host!r}); a file path needs three slashes",
                             key="store.url", hint=_URL_HINT)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError.one(f"cannot create the folder for {shown!r}: {exc.strerror}", key="store.url",
                                 hint="check the path and its permissions") from None
    try:
        engine = create_engine(parsed, pool_pre_ping=parsed.get_backend_name() == "postgresql")
    except (NoSuchModuleError, ImportError) as exc:
        hint = "for PostgreSQL: pip install 'synpro[postgres]' and write postgresql+psycopg://..."
        raise InputError.one(f"no database driver for {parsed.drivername!r} ({shown!r}): {exc}", key="store.url",
                             hint=hint) from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """WAL (readers don't block the writer), a busy timeout, enforced foreign keys, explicit BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit transactions skip SELECTs and DDL; we issue BEGIN ourselves instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        # Durable across a killed process (not a power cut) and far fewer fsyncs per short transaction.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE_LOCK) else "BEGIN")


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL once; the mode is stored in the file, so later opens only read it.

    SQLite answers a journal-mode change that races another new connection with "database is
    locked" at once, ignoring the busy timeout, so workers opening a brand-new store retry here.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _iso(moment: datetime) -> str:
    """ISO 8601 in UTC; SQLite hands timestamps back without their zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def _number(value: float | None) -> float | None:
    """NaN becomes NULL on every backend (SQLite would do so silently, PostgreSQL would keep NaN)."""
    return None if value is None or math.isnan(value) else float(value)


def _mean(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _any(flags: list[bool | None]) -> bool | None:
    known = [f for f in flags if f is not None]
    return any(known) if known else None


def _arm_over_seeds(per_seed: dict[int, dict], summary: dict | None) -> dict[str, Any]:
    """One arm of one trial in the results: means over its seeds, the trial analysis's multiplier
    statistics (mean, interval paired by seed, method), and every seed's own values under `per_seed`.

    Rows written before replicates (no analysis) keep their one stored multiplier, without interval."""
    rows = [per_seed[s] for s in sorted(per_seed)]
    states = {r["state"] for r in rows}
    state = "finished" if states == {"finished"} else "failed" if "failed" in states else "running"
    arm = {"kind": rows[0]["kind"], "state": state, "final_val_loss": _mean([r["final_val_loss"] for r in rows]),
           "tokens_seen": rows[0]["tokens_seen"], "unique_tokens": rows[0]["unique_tokens"],
           "effective_tokens": _mean([r["effective_tokens"] for r in rows]),
           "effective_tokens_extrapolated": _any([r["effective_tokens_extrapolated"] for r in rows]),
           "multiplier_vs_repetition": _mean([r["multiplier_vs_repetition"] for r in rows]),
           **{key: _mean([r[key] for r in rows])
              for key in ("final_accuracy", "effective_tokens_accuracy", "multiplier_accuracy")},
           "effective_tokens_accuracy_extrapolated": _any([r["effective_tokens_accuracy_extrapolated"] for r in rows]),
           "multiplier_ci": None, "n_seeds": len(rows), "multiplier_method": None, "multiplier_extrapolated": None,
           "mlflow_run_id": rows[0]["mlflow_run_id"],
           **{key: _mean([r[key] for r in rows if r.get(key) is not None])
              for key in ("synthetic_share", "synthetic_tokens", "gpu_hours", "cpu_core_hours")}}
    if summary is not None:
        arm.update({key: summary.get(key) for key in ("multiplier_vs_repetition", "multiplier_ci",
                                                       "multiplier_method", "multiplier_extrapolated", "n_seeds")})
    arm["per_seed"] = {str(s): {k: v for k, v in per_seed[s].items() if k not in ("kind", "unique_tokens")}
                       for s in sorted(per_seed)}
    return arm


def best_trial(results: list[dict], objective: dict[str, Any]) -> dict | None:
    """The trial with the best finite objective value, else the last trial that has arms.

    A multi-objective study's best is a Pareto set (`pareto_optimal` in the results); the one trial
    picked here is the Pareto-optimal trial best on the primary objective."""
    scored = [t for t in results if t["objective_value"] is not None and math.isfinite(t["objective_value"])
              and t.get("pareto_optimal", True)]
    if scored:
        pick = max if objective.get("direction") == "maximize" else min
        return pick(scored, key=lambda t: t["objective_value"])
    with_arms = [t for t in results if t["arms"]]
    return with_arms[-1] if with_arms else None


def _values(values: list[Any] | None) -> list[float] | None:
    """A trial's stored objective values if every one is finite (NaN is stored as null)."""
    if not values or any(v is None for v in values):
        return None
    return [float(v) for v in values]


def mark_pareto(trials: list[dict], objective: dict[str, Any]) -> None:
    """Mark each trial of a multi-objective study `pareto_optimal`: finished, every value finite, and
    no such trial better on every objective. Single-objective trials are left as they are."""
    if "objectives" not in (objective or {}):
        return
    directions = [o["direction"] for o in objective["objectives"]]
    scored = [t for t in trials if "objective_values" in t]
    points = [_values(t["objective_values"]) if t["state"] == "finished" else None for t in scored]
    eligible = [i for i, p in enumerate(points) if p is not None]
    front = non_dominated([points[i] for i in eligible], directions)
    for t in scored:
        t["pareto_optimal"] = False
    for i, on_front in zip(eligible, front):
        scored[i]["pareto_optimal"] = on_front


def _check_state(state: str, allowed: tuple[str, ...], what: str) -> None:
    if state not in allowed:
        raise ValueError(f"{what} state must be one of {', '.join(allowed)}; got {state!r}")


class Store:
    """Open (creating and upgrading as needed) the results store at a SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _create_engine(url)
        try:
            upgrade(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            hide(self.engine.url.password)
            reason = mask(reason)
            raise InputError.one(
                f"cannot open the results store {mask(url)!r}: {reason}", key="store.url",
                hint="check that the server is running and reachable, the database exists (createdb NAME), "
                     "the user may connect, and for SQLite that the file's folder is writable") from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _insert(self, model: type[Study | Trial | Arm | Evaluation | Fit | RefreshRound]) -> Any:
        """The dialect's INSERT, the one that has ON CONFLICT DO UPDATE."""
        return (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(model)

    # ---- writes -------------------------------------------------------------------------------

    def upsert_study(self, name: str, spec_yaml: str, objective: dict, mlflow_run_id: str | None = None) -> int:
        now = utcnow()
        stmt = self._insert(Study).values(name=name, spec_yaml=spec_yaml, objective=objective,
                                          mlflow_run_id=mlflow_run_id, created_at=now, updated_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=[Study.name], set_={
            "spec_yaml": stmt.excluded.spec_yaml,
            "objective": stmt.excluded.objective,
            "mlflow_run_id": func.coalesce(stmt.excluded.mlflow_run_id, Study.mlflow_run_id),
            "updated_at": stmt.excluded.updated_at,
        }).returning(Study.id)
        with self.engine.begin() as conn:
            return conn.execute(stmt).scalar_one()

    def upsert_trial(self, study_id: int, params_hash: str, params: dict, *, optuna_number: int | None,
                     state: str = "running", mlflow_run_id: str | None = None) -> int:
        """Record an attempt at a trial; a retry with the same params lands on the same row.

        A new running attempt restarts the clock and clears the previous attempt's outcome.
        """
        _check_state(state, TRIAL_STATES, "trial")
        now = utcnow()
        stmt = self._insert(Trial).values(
            study_id=study_id, params_hash=params_hash, params=params, optuna_number=optuna_number, state=state,
            mlflow_run_id=mlflow_run_id, heartbeat_at=now, started_at=now,
            finished_at=None if state == "running" else now)
        changes: dict[str, Any] = {
            "params": stmt.excluded.params,
            "state": stmt.excluded.state,
            "optuna_number": func.coalesce(stmt.excluded.optuna_number, Trial.optuna_number),
            "mlflow_run_id": func.coalesce(stmt.excluded.mlflow_run_id, Trial.mlflow_run_id),
            "heartbeat_at": stmt.excluded.heartbeat_at,
            "finished_at": stmt.excluded.finished_at,
        }
        if state == "running":
            changes |= {"started_at": stmt.excluded.started_at, "objective_value": None, "objective_values": null()}
        stmt = stmt.on_conflict_do_update(index_elements=[Trial.study_id, Trial.params_hash], set_=changes)
        with self.engine.begin() as conn:
            return conn.execute(stmt.returning(Trial.id)).scalar_one()

    def _update_one(self, stmt: Any, what: str, row_id: int) -> None:
        with self.engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                raise LookupError(f"no {what} with id {row_id} in the store")

    def heartbeat(self, trial_id: int) -> None:
        self._update_one(update(Trial).where(Trial.id == trial_id).values(heartbeat_at=utcnow()), "trial", trial_id)

    def abandon_trial(self, trial_id: int) -> bool:
        """A trial whose worker died: running becomes failed; a row that finished stays as it is."""
        stmt = update(Trial).where(Trial.id == trial_id, Trial.state == "running").values(
            state="failed", finished_at=utcnow())
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def finish_trial(self, trial_id: int, state: str, objective_value: float | None = None, *,
                     objective_values: list[float] | None = None) -> None:
        """End a trial. `objective_values` (the primary first) replace `objective_value`: with several,
        all are kept; with one, it is the objective value and the study reads as single-objective."""
        _check_state(state, TRIAL_STATES[1:], "a finished trial's")
        several = objective_values is not None and len(objective_values) > 1
        if objective_values:
            objective_value = objective_values[0]
        now = utcnow()
        stmt = update(Trial).where(Trial.id == trial_id).values(
            state=state, objective_value=_number(objective_value),
            objective_values=[_number(v) for v in objective_values] if several else null(),
            finished_at=now, heartbeat_at=now)
        self._update_one(stmt, "trial", trial_id)

    def upsert_arm(self, trial_id: int, name: str, kind: str, config_hash: str, unique_tokens: int,
                   total_tokens: int, mlflow_run_id: str | None = None, *, seed: int = 0) -> int:
        """Register an arm about to run at one training seed ((trial, name, seed) is its row).

        An arm that already finished with this config keeps its results; with a changed config it
        starts over as running and its old curve is dropped, so curves never mix two configs.
        """
        stale = select(Arm.id).where(Arm.trial_id == trial_id, Arm.name == name, Arm.seed == seed,
                                     Arm.config_hash != config_hash)
        stmt = self._insert(Arm).values(trial_id=trial_id, name=name, seed=seed, kind=kind, config_hash=config_hash,
                                        unique_tokens=unique_tokens, total_tokens=total_tokens, state="running",
                                        mlflow_run_id=mlflow_run_id)
        keep = and_(Arm.config_hash == stmt.excluded.config_hash, Arm.state == "finished")
        changes: dict[str, Any] = {
            column: stmt.excluded[column] for column in ("kind", "config_hash", "unique_tokens", "total_tokens")}
        changes["mlflow_run_id"] = func.coalesce(stmt.excluded.mlflow_run_id, Arm.mlflow_run_id)
        changes["state"] = case((keep, Arm.state), else_=stmt.excluded.state)
        for result in ("final_val_loss", "tokens_seen", "effective_tokens", "effective_tokens_extrapolated",
                       "multiplier_vs_repetition", "final_accuracy", "effective_tokens_accuracy",
                       "effective_tokens_accuracy_extrapolated", "multiplier_accuracy", "details"):
            changes[result] = case((keep, getattr(Arm, result)), else_=null())
        stmt = stmt.on_conflict_do_update(index_elements=[Arm.trial_id, Arm.name, Arm.seed], set_=changes)
        with self.engine.begin() as conn:
            conn.execute(Evaluation.__table__.delete().where(Evaluation.arm_id.in_(stale)))
            conn.execute(RefreshRound.__table__.delete().where(RefreshRound.arm_id.in_(stale)))
            return conn.execute(stmt.returning(Arm.id)).scalar_one()

    def add_evaluations(self, arm_id: int, points: list[dict]) -> int:
        """Upsert curve points keyed by (arm, tokens seen); re-adding a point updates it in place."""
        rows: dict[int, dict[str, Any]] = {}
        for point in points:
            unknown = set(point) - _POINT_KEYS
            missing = {"tokens", "step", "val_loss"} - set(point)
            if unknown or missing:
                raise ValueError(f"evaluation point {point!r}: missing {sorted(missing)}, unknown {sorted(unknown)}")
            rows[int(point["tokens"])] = {
                "arm_id": arm_id, "tokens": int(point["tokens"]), "step": int(point["step"]),
                "val_loss": _number(point["val_loss"]), "train_loss": _number(point.get("train_loss")),
                "effective_tokens": _number(point.get("effective_tokens")),
                "effective_tokens_extrapolated": point.get("effective_tokens_extrapolated")}
        if not rows:
            return 0
        stmt = self._insert(Evaluation)
        stmt = stmt.on_conflict_do_update(index_elements=[Evaluation.arm_id, Evaluation.tokens], set_={
            column: stmt.excluded[column]
            for column in ("step", "val_loss", "train_loss", "effective_tokens", "effective_tokens_extrapolated")})
        with self.engine.begin() as conn:
            # One row order for every writer, so concurrent upserts of overlapping curves can't deadlock.
            conn.execute(stmt, [rows[tokens] for tokens in sorted(rows)])
        return len(rows)

    def add_round(self, arm_id: int, round_: int, start_tokens: int, grpo: dict[str, list[dict]]) -> None:
        """A refresh of the arm (round >= 1): where pretraining resumed and each operation's GRPO rows
        (non-finite numbers stored as null); recording a round again replaces it."""
        stmt = self._insert(RefreshRound).values(arm_id=arm_id, round=round_, start_tokens=start_tokens,
                                                 grpo=finite(grpo))
        stmt = stmt.on_conflict_do_update(index_elements=[RefreshRound.arm_id, RefreshRound.round], set_={
            "start_tokens": stmt.excluded.start_tokens, "grpo": stmt.excluded.grpo})
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def set_arm_result(self, arm_id: int, *, final_val_loss: float, tokens_seen: int,
                       effective_tokens: float | None, effective_tokens_extrapolated: bool | None,
                       multiplier_vs_repetition: float | None, state: str = "finished",
                       details: dict[str, Any] | None = None) -> None:
        """An arm's outcome; `details` (JSON, non-finite numbers stored as null) is this seed's analysis."""
        _check_state(state, ARM_STATES, "arm")
        stmt = update(Arm).where(Arm.id == arm_id).values(
            final_val_loss=_number(final_val_loss), tokens_seen=tokens_seen, effective_tokens=_number(effective_tokens),
            effective_tokens_extrapolated=effective_tokens_extrapolated,
            multiplier_vs_repetition=_number(multiplier_vs_repetition), state=state,
            details=null() if details is None else finite(details))
        self._update_one(stmt, "arm", arm_id)
        kill_point("store.arm_result")

    def set_trial_analysis(self, trial_id: int, analysis: dict[str, Any]) -> None:
        """The trial's analysis (reference, per-arm seed statistics, noise floor), replacing any earlier."""
        stmt = update(Trial).where(Trial.id == trial_id).values(analysis=finite(analysis))
        self._update_one(stmt, "trial", trial_id)

    def add_accuracy(self, arm_id: int, points: list[dict]) -> None:
        """Downstream scores of evaluated checkpoints, onto their curve points (keyed by tokens seen):
        {tokens, task_scores, accuracy, effective_tokens_accuracy, effective_tokens_accuracy_extrapolated}."""
        with self.engine.begin() as conn:
            for point in sorted(points, key=lambda p: p["tokens"]):
                conn.execute(update(Evaluation).where(Evaluation.arm_id == arm_id,
                                                      Evaluation.tokens == int(point["tokens"])).values(
                    task_scores={k: _number(v) for k, v in point["task_scores"].items()},
                    accuracy=_number(point["accuracy"]),
                    effective_tokens_accuracy=_number(point.get("effective_tokens_accuracy")),
                    effective_tokens_accuracy_extrapolated=point.get("effective_tokens_accuracy_extrapolated")))

    def set_arm_accuracy(self, arm_id: int, *, final_accuracy: float | None, effective_tokens_accuracy: float | None,
                         effective_tokens_accuracy_extrapolated: bool | None,
                         multiplier_accuracy: float | None) -> None:
        stmt = update(Arm).where(Arm.id == arm_id).values(
            final_accuracy=_number(final_accuracy), effective_tokens_accuracy=_number(effective_tokens_accuracy),
            effective_tokens_accuracy_extrapolated=effective_tokens_accuracy_extrapolated,
            multiplier_accuracy=_number(multiplier_accuracy))
        self._update_one(stmt, "arm", arm_id)

    def add_fit(self, study_id: int, *, arm: str | None, law: str, constants: dict[str, float],
                ci: dict[str, tuple[float, float]] | None, interval: dict[str, Any] | None,
                identified: dict[str, dict[str, Any]] | None, residual_spread: float | None,
                points_per_free_constant: float | None, loss: float, n_points: int, inputs_hash: str,
                settings: dict[str, Any], residuals: list[float], trial_ids: list[int]) -> int:
        """Upsert a fit keyed by (study, law, inputs_hash) and link the trials it used.

        Re-fitting the same inputs updates the row (and makes it the latest); links are replaced.
        `ci` None (or empty) is stored as NULL: no interval. A zero-width interval is a ValueError:
        it would read as certainty the fit does not have.
        """
        flat = [name for name, (lo, hi) in (ci or {}).items() if not lo < hi]
        if flat:
            raise ValueError(f"zero-width or inverted interval for {', '.join(flat)}: store no interval instead")
        stmt = self._insert(Fit).values(
            study_id=study_id, arm=arm, law=law, constants=constants,
            ci={k: [float(lo), float(hi)] for k, (lo, hi) in ci.items()} if ci else null(),
            interval=interval if interval else null(), identified=null() if identified is None else identified,
            residual_spread=_number(residual_spread), points_per_free_constant=_number(points_per_free_constant),
            loss=float(loss), n_points=n_points, inputs_hash=inputs_hash, settings=settings,
            residuals=[float(r) for r in residuals], created_at=utcnow())
        stmt = stmt.on_conflict_do_update(index_elements=[Fit.study_id, Fit.law, Fit.inputs_hash], set_={
            column: stmt.excluded[column]
            for column in ("arm", "constants", "ci", "interval", "identified", "residual_spread",
                           "points_per_free_constant", "loss", "n_points", "settings", "residuals", "created_at")})
        with self.engine.begin() as conn:
            fit_id = conn.execute(stmt.returning(Fit.id)).scalar_one()
            conn.execute(FitTrial.__table__.delete().where(FitTrial.fit_id == fit_id))
            if trial_ids:
                conn.execute(FitTrial.__table__.insert(),
                             [{"fit_id": fit_id, "trial_id": t} for t in sorted(set(trial_ids))])
        return fit_id

    # ---- reads --------------------------------------------------------------------------------

    def finished_arm(self, trial_id: int, name: str, config_hash: str) -> bool:
        """Whether a resume may skip this arm: it finished, and with this very config."""
        query = select(exists().where(Arm.trial_id == trial_id, Arm.name == name,
                                      Arm.config_hash == config_hash, Arm.state == "finished"))
        with self.engine.begin() as conn:
            return bool(conn.execute(query).scalar_one())

    def trial_id(self, study: str, params_hash: str) -> int:
        """The id of a study's trial by its params hash (LookupError if there is none)."""
        query = select(Trial.id).join(Study, Trial.study_id == Study.id).where(
            Study.name == study, Trial.params_hash == params_hash)
        with self.engine.begin() as conn:
            found = conn.execute(query).scalar_one_or_none()
        if found is None:
            raise LookupError(f"study {study!r} has no trial {params_hash}")
        return found

    def complete_trials(self, study: str, arms: list[str], seeds: list[int] | None = None) -> set[str]:
        """The params hashes of the study's trials that are finished with every named arm finished
        (at every one of `seeds`; default: one row per arm) and holding a result: what "N/N trials
        complete" counts."""
        rows = [Arm.trial_id == Trial.id, Arm.name.in_(arms), Arm.state == "finished", Arm.tokens_seen.is_not(None)]
        if seeds is not None:
            rows.append(Arm.seed.in_(seeds))
        finished_arms = select(func.count(Arm.id)).where(*rows).scalar_subquery()
        expected = len(set(arms)) * (len(set(seeds)) if seeds is not None else 1)
        query = (select(Trial.params_hash).join(Study, Trial.study_id == Study.id)
                 .where(Study.name == study, Trial.state == "finished", finished_arms == expected))
        with self.engine.begin() as conn:
            return set(conn.execute(query).scalars())

    def stored_result(self, trial_id: int, arms: list[str],
                      seeds: list[int] | None = None) -> tuple[bool, list[float] | None]:
        """(whether the trial is finished with every named arm stored with a result, its objective
        values: one, or a multi-objective trial's all; None unless every one is a number)."""
        query = select(Trial.state, Trial.objective_value, Trial.objective_values).where(Trial.id == trial_id)
        with self.engine.begin() as conn:
            row = conn.execute(query).one_or_none()
        if row is None or row.state != "finished":
            return False, None
        values = _values(row.objective_values if row.objective_values is not None else [row.objective_value])
        return not self.unfinished_arms(trial_id, arms, seeds), values

    def unfinished_arms(self, trial_id: int, arms: list[str], seeds: list[int] | None = None) -> list[str]:
        """Which of these arms the trial has not stored as finished with a result (at every one of
        `seeds`; default: at any seed)."""
        query = select(Arm.name, Arm.seed).where(Arm.trial_id == trial_id, Arm.state == "finished",
                                                 Arm.tokens_seen.is_not(None))
        with self.engine.begin() as conn:
            stored = {tuple(row) for row in conn.execute(query)}
        if seeds is None:
            return [a for a in dict.fromkeys(arms) if a not in {name for name, _ in stored}]
        return [a for a in dict.fromkeys(arms) if any((a, s) not in stored for s in seeds)]

    def results(self, study: str | None = None) -> list[dict]:
        """Trials with their arms' outcomes: the JSON contract of `synpro results --format json`.

        One outer-join query for any number of trials, ordered by study then Optuna trial number.
        """
        query = (
            select(Study.name.label("study"), Trial.id.label("trial_id"), Trial.optuna_number, Trial.params_hash,
                   Trial.params, Trial.state, Trial.objective_value, Trial.objective_values, Study.objective,
                   Trial.mlflow_run_id, Trial.analysis,
                   Arm.name.label("arm"), Arm.seed, Arm.kind, Arm.state.label("arm_state"), Arm.final_val_loss,
                   Arm.tokens_seen, Arm.unique_tokens, Arm.effective_tokens, Arm.effective_tokens_extrapolated,
                   Arm.multiplier_vs_repetition, Arm.final_accuracy, Arm.effective_tokens_accuracy,
                   Arm.effective_tokens_accuracy_extrapolated, Arm.multiplier_accuracy,
                   Arm.mlflow_run_id.label("arm_mlflow_run_id"), Arm.details)
            .join(Trial, Trial.study_id == Study.id)
            .outerjoin(Arm, Arm.trial_id == Trial.id)
            .order_by(Study.name, Trial.optuna_number.nulls_last(), Trial.id, Arm.id))
        if study is not None:
            query = query.where(Study.name == study)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows and study is not None:
                self._require(conn, study)
        trials: dict[int, dict] = {}
        objectives: dict[str, dict] = {}
        analyses: dict[int, dict] = {}
        seeds: dict[tuple[int, str], dict[int, dict]] = {}
        for row in rows:
            trial = trials.get(row.trial_id)
            if trial is None:
                analysis = analyses[row.trial_id] = row.analysis or {}
                trial = trials[row.trial_id] = {
                    "study": row.study, "trial": row.optuna_number, "params_hash": row.params_hash,
                    "params": row.params, "state": row.state, "objective_value": row.objective_value,
                    "mlflow_run_id": row.mlflow_run_id, "reference": analysis.get("reference"),
                    "noise_floor": analysis.get("noise_floor"), "usage": analysis.get("usage"), "arms": {}}
                if "objectives" in (row.objective or {}):  # a multi-objective study's trial (see mark_pareto)
                    trial["objective_values"] = row.objective_values
                objectives[row.study] = row.objective
            if row.arm is not None:
                seeds.setdefault((row.trial_id, row.arm), {})[row.seed] = {
                    "kind": row.kind, "state": row.arm_state, "final_val_loss": row.final_val_loss,
                    "tokens_seen": row.tokens_seen, "unique_tokens": row.unique_tokens,
                    "effective_tokens": row.effective_tokens,
                    "effective_tokens_extrapolated": row.effective_tokens_extrapolated,
                    "multiplier_vs_repetition": row.multiplier_vs_repetition,
                    "final_accuracy": row.final_accuracy,
                    "effective_tokens_accuracy": row.effective_tokens_accuracy,
                    "effective_tokens_accuracy_extrapolated": row.effective_tokens_accuracy_extrapolated,
                    "multiplier_accuracy": row.multiplier_accuracy,
                    "mlflow_run_id": row.arm_mlflow_run_id, **(row.details or {})}
        for (trial_id, arm), per_seed in seeds.items():
            trials[trial_id]["arms"][arm] = _arm_over_seeds(per_seed, analyses[trial_id].get("arms", {}).get(arm))
        for trial in trials.values():
            ledger.add_costs(trial["arms"])
        for name, objective in objectives.items():
            mark_pareto([t for t in trials.values() if t["study"] == name], objective)
        return list(trials.values())

    def curves(self, study: str, arm: str | None = None) -> list[dict]:
        """Learning-curve points of a study (optionally one arm), ordered by trial, arm (a row per
        seed), then tokens."""
        return self._per_arm(Evaluation, [
            Arm.kind, Evaluation.tokens, Evaluation.step, Evaluation.val_loss, Evaluation.train_loss,
            Evaluation.effective_tokens, Evaluation.effective_tokens_extrapolated, Evaluation.accuracy,
            Evaluation.effective_tokens_accuracy, Evaluation.task_scores], Evaluation.tokens, study, arm)

    def rounds(self, study: str, arm: str | None = None) -> list[dict]:
        """Refresh rounds of a study's arms (optionally one arm): trial, params_hash, arm, seed, round,
        start_tokens and grpo ({operation: per-step rows}), ordered by trial, arm, then round."""
        return self._per_arm(RefreshRound, [RefreshRound.round, RefreshRound.start_tokens, RefreshRound.grpo],
                             RefreshRound.round, study, arm)

    def _per_arm(self, table, columns: list, then, study: str, arm: str | None) -> list[dict]:
        """Rows of a per-arm table (curve points, refresh rounds) of a study, optionally one arm: trial,
        params_hash, arm and seed, then `columns`; ordered by trial, arm, then `then`."""
        query = (
            select(Trial.optuna_number.label("trial"), Trial.params_hash, Arm.name.label("arm"), Arm.seed, *columns)
            .join(Arm, table.arm_id == Arm.id)
            .join(Trial, Arm.trial_id == Trial.id)
            .join(Study, Trial.study_id == Study.id)
            .where(Study.name == study)
            .order_by(Trial.optuna_number.nulls_last(), Trial.id, Arm.id, then))
        if arm is not None:
            query = query.where(Arm.name == arm)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                self._require(conn, study, arm)
        return [row._asdict() for row in rows]

    def studies(self) -> list[dict]:
        """Each study with its trial counts; created_at as an ISO 8601 UTC string."""
        query = (
            select(Study.name, func.count(Trial.id).label("n_trials"),
                   func.count(Trial.id).filter(Trial.state == "finished").label("n_finished"), Study.created_at)
            .outerjoin(Trial, Trial.study_id == Study.id)
            .group_by(Study.id, Study.name, Study.created_at)
            .order_by(Study.name))
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
        return [{"name": r.name, "n_trials": r.n_trials, "n_finished": r.n_finished, "created_at": _iso(r.created_at)}
                for r in rows]

    def study(self, name: str) -> dict:
        """A study's row: id, name, spec_yaml, objective, mlflow_run_id."""
        query = select(Study.id, Study.name, Study.spec_yaml, Study.objective, Study.mlflow_run_id).where(
            Study.name == name)
        with self.engine.begin() as conn:
            row = conn.execute(query).one_or_none()
            if row is None:
                self._require(conn, name)
        return row._asdict()

    def fit_points(self, study: str) -> list[dict]:
        """Every evaluation of a study's finished arms that a scaling law can place (a finite loss
        after at least one token), with the trial's params (for its model size) and the arm's
        unique tokens."""
        query = (
            select(Trial.id.label("trial_id"), Trial.optuna_number.label("trial"), Trial.params,
                   Arm.name.label("arm"), Arm.kind, Arm.unique_tokens, Evaluation.tokens, Evaluation.val_loss)
            .join(Arm, Evaluation.arm_id == Arm.id)
            .join(Trial, Arm.trial_id == Trial.id)
            .join(Study, Trial.study_id == Study.id)
            .where(Study.name == study, Arm.state == "finished", Evaluation.val_loss.is_not(None),
                   Evaluation.tokens > 0)
            .order_by(Trial.optuna_number.nulls_last(), Trial.id, Arm.id, Evaluation.tokens))
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                self._require(conn, study)
        return [row._asdict() for row in rows]

    def fits(self, study: str, arm: str | None = None) -> list[dict]:
        """A study's fits, oldest first, each with the Optuna numbers of the trials it used."""
        query = (select(Fit.__table__).join(Study, Fit.study_id == Study.id).where(Study.name == study)
                 .order_by(Fit.created_at, Fit.id))
        if arm is not None:
            query = query.where(Fit.arm == arm)
        links = (select(FitTrial.fit_id, Trial.optuna_number).join(Trial, FitTrial.trial_id == Trial.id)
                 .join(Fit, FitTrial.fit_id == Fit.id).join(Study, Fit.study_id == Study.id)
                 .where(Study.name == study).order_by(Trial.optuna_number))
        with self.engine.begin() as conn:
            fits = conn.execute(query).all()
            if not fits:
                self._require(conn, study)
            trials: dict[int, list[int | None]] = {}
            for fit_id, number in conn.execute(links):
                trials.setdefault(fit_id, []).append(number)
        return [{"id": f.id, "study": study, "arm": f.arm, "law": f.law, "constants": f.constants,
                 "ci": None if f.ci is None else {k: tuple(v) for k, v in f.ci.items()}, "interval": f.interval,
                 "identified": f.identified, "residual_spread": f.residual_spread,
                 "points_per_free_constant": f.points_per_free_constant, "loss": f.loss, "n_points": f.n_points,
                 "inputs_hash": f.inputs_hash, "settings": f.settings, "residuals": f.residuals,
                 "created_at": _iso(f.created_at), "trials": trials.get(f.id, [])} for f in fits]

    def compare(self, study: str | None = None) -> list[dict]:
        """Arms side by side: per (study, arm), aggregates over its trials (means over every seed's
        row), the latest fitted R_D* with its interval (`r_d_star_ci`: [low, high] or None) and
        identification (`r_d_star_identified`: {identified, reason}, None on fits that predate it),
        and the multiplier of the study's best trial by its objective (`multiplier_trial`): its mean
        over seeds `multiplier_vs_repetition`, `multiplier_ci`, `n_seeds`, `multiplier_method`, `per_seed`;
        and the measured ledger over its trials (`mean_gpu_hours`, `mean_cpu_core_hours`,
        `mean_cost_per_m_effective_gained` in `cost_unit`; synpro.ledger).

        Two grouped queries joined in SQL (arms aggregated; the newest fit per arm that has an
        R_D_star picked with a window function), so the answer stays one round trip at any size.
        """
        finished = Arm.state == "finished"
        per_arm = (
            select(Study.id.label("study_id"), Study.name.label("study"), Arm.name.label("arm"),
                   func.min(Arm.kind).label("kind"), func.count(func.distinct(Arm.trial_id)).label("n_trials"),
                   func.count(func.distinct(Arm.trial_id)).filter(finished).label("n_finished"),
                   func.count(func.distinct(Arm.seed)).label("n_seeds"),
                   func.avg(Arm.final_val_loss).label("mean_final_loss"),
                   func.min(Arm.final_val_loss).label("best_final_loss"),
                   func.avg(Arm.effective_tokens).label("mean_effective_tokens"),
                   func.avg(Arm.multiplier_vs_repetition).label("mean_multiplier"),
                   func.avg(Arm.final_accuracy).label("mean_final_accuracy"),
                   func.avg(Arm.effective_tokens_accuracy).label("mean_effective_tokens_accuracy"),
                   func.avg(Arm.multiplier_accuracy).label("mean_multiplier_accuracy"),
                   func.avg(cast(Arm.total_tokens, Float) / Arm.unique_tokens).label("mean_epochs"),
                   # How many trials each mean rests on (a mean of one trial's value is not every trial's).
                   *(func.count(func.distinct(Arm.trial_id)).filter(column.is_not(None)).label(f"n_trials_{name}")
                     for name, column in (("loss", Arm.final_val_loss), ("effective_tokens", Arm.effective_tokens),
                                          ("multiplier", Arm.multiplier_vs_repetition),
                                          ("accuracy", Arm.final_accuracy),
                                          ("effective_tokens_accuracy", Arm.effective_tokens_accuracy),
                                          ("multiplier_accuracy", Arm.multiplier_accuracy))),
                   func.min(Arm.id).label("first_arm"))
            .join(Trial, Trial.study_id == Study.id)
            .join(Arm, Arm.trial_id == Trial.id)
            .group_by(Study.id, Study.name, Arm.name))
        if study is not None:
            per_arm = per_arm.where(Study.name == study)
        per_arm = per_arm.subquery()
        r_d_star = Fit.constants["R_D_star"].as_float()
        ranked = (
            select(Fit.study_id, Fit.arm, Fit.id.label("fit_id"), r_d_star.label("r_d_star"),
                   Fit.ci[("R_D_star", 0)].as_float().label("r_d_star_low"),
                   Fit.ci[("R_D_star", 1)].as_float().label("r_d_star_high"),
                   Fit.identified[("R_D_star", "identified")].as_boolean().label("r_d_star_identified"),
                   Fit.identified[("R_D_star", "reason")].as_string().label("r_d_star_reason"),
                   func.row_number().over(partition_by=(Fit.study_id, Fit.arm),
                                          order_by=(Fit.created_at.desc(), Fit.id.desc())).label("rank"))
            .where(r_d_star.is_not(None))
            .subquery())
        query = (
            select(per_arm, ranked.c.fit_id, ranked.c.r_d_star, ranked.c.r_d_star_low, ranked.c.r_d_star_high,
                   ranked.c.r_d_star_identified, ranked.c.r_d_star_reason)
            .outerjoin(ranked, and_(ranked.c.study_id == per_arm.c.study_id, ranked.c.arm == per_arm.c.arm,
                                    ranked.c.rank == 1))
            .order_by(per_arm.c.study, per_arm.c.first_arm))
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows and study is not None:
                self._require(conn, study)
        compared = []
        for row in rows:
            found = {key: value for key, value in row._asdict().items() if key not in ("study_id", "first_arm")}
            low, high = found.pop("r_d_star_low"), found.pop("r_d_star_high")
            found["r_d_star_ci"] = None if low is None or high is None else [low, high]
            flag, reason = found.pop("r_d_star_identified"), found.pop("r_d_star_reason")
            found["r_d_star_identified"] = None if flag is None else {"identified": flag, "reason": reason}
            compared.append(found)
        results = {name: self.results(name) for name in {c["study"] for c in compared}}
        best = {name: best_trial(trials, self.study(name)["objective"] or {}) for name, trials in results.items()}
        for found in compared:
            found.update(ledger.study_costs(results[found["study"]], found["arm"]))
            trial = best[found["study"]]
            arm = (trial or {}).get("arms", {}).get(found["arm"])
            found["multiplier_trial"] = trial["trial"] if arm else None
            for key in ("multiplier_vs_repetition", "multiplier_ci", "n_seeds", "multiplier_method"):
                found[key] = arm[key] if arm else (found["n_seeds"] if key == "n_seeds" else None)
            found["per_seed_multiplier"] = (
                {s: v["multiplier_vs_repetition"] for s, v in arm["per_seed"].items()} if arm else {})
        return compared

    def _require(self, conn: Connection, study: str, arm: str | None = None) -> None:
        """Turn an empty answer caused by a misspelt study or arm name into an InputError."""
        known = conn.execute(select(Study.name).order_by(Study.name)).scalars().all()
        if study not in known:
            raise InputError.one(f"no study named {study!r} in the results store", key="study",
                                 hint=f"known studies: {', '.join(known)}" if known else "the store is empty")
        if arm is None:
            return
        arms = conn.execute(select(Arm.name).distinct().join(Trial).join(Study).where(Study.name == study)
                            .order_by(Arm.name)).scalars().all()
        if arm not in arms:
            raise InputError.one(f"study {study!r} has no arm named {arm!r}", key="arm",
                                 hint=f"its arms: {', '.join(arms)}" if arms else "it has no arms yet")
