"""ORM models of the results store: study -> trial -> arm -> evaluation (and refresh round), and fits of a
study's curves.

Migrations under store/migrations/versions must create exactly this schema; a test compares them
with Alembic's autogenerate so the two never drift apart.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TRIAL_STATES = ("running", "finished", "failed", "pruned")
ARM_STATES = ("running", "finished", "failed")

# Deterministic constraint names, so migrations can name what they alter and autogenerate can compare.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _state_check(states: tuple[str, ...]) -> CheckConstraint:
    allowed = ", ".join(f"'{s}'" for s in states)
    return CheckConstraint(f"state IN ({allowed})", name="state")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True), float: Double}


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    spec_yaml: Mapped[str] = mapped_column(Text)
    objective: Mapped[dict[str, Any]]
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Trial(Base):
    """One point of the search space; (study_id, params_hash) is its identity across retries."""

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "params_hash"),
        Index(None, "study_id", "state"),
        _state_check(TRIAL_STATES),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    params_hash: Mapped[str] = mapped_column(String(64))
    optuna_number: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    objective_value: Mapped[float | None]  # the primary objective's
    # A multi-objective study's trial: every objective's value, the primary first (NULL: one objective).
    objective_values: Mapped[list[float | None] | None] = mapped_column(JSON)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    # The trial's analysis: reference used, per-arm multiplier over seeds, noise floor (synpro.pipeline).
    analysis: Mapped[dict[str, Any] | None]
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Arm(Base):
    """One pretraining run inside a trial (repetition, oracle, ...) at one training seed; results
    land here when it ends."""

    __tablename__ = "arms"
    __table_args__ = (
        UniqueConstraint("trial_id", "name", "seed"),
        Index(None, "name"),
        _state_check(ARM_STATES),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    seed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    kind: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str] = mapped_column(String(64))
    unique_tokens: Mapped[int] = mapped_column(BigInteger)
    total_tokens: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    final_val_loss: Mapped[float | None]
    tokens_seen: Mapped[int | None] = mapped_column(BigInteger)
    effective_tokens: Mapped[float | None]
    effective_tokens_extrapolated: Mapped[bool | None]
    multiplier_vs_repetition: Mapped[float | None]
    # The same by downstream accuracy (the average over the spec's eval tasks; NULL without them).
    final_accuracy: Mapped[float | None]
    effective_tokens_accuracy: Mapped[float | None]
    effective_tokens_accuracy_extrapolated: Mapped[bool | None]
    multiplier_accuracy: Mapped[float | None]
    # This seed's analysis: multiplier method and extrapolation, epochs per source (synpro.pipeline).
    details: Mapped[dict[str, Any] | None]


class Evaluation(Base):
    """A validation point of an arm's learning curve, keyed by tokens seen so re-logging is idempotent."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("arm_id", "tokens"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arm_id: Mapped[int] = mapped_column(ForeignKey("arms.id", ondelete="CASCADE"))
    tokens: Mapped[int] = mapped_column(BigInteger)
    step: Mapped[int] = mapped_column(Integer)
    val_loss: Mapped[float | None]  # NULL: the loss was NaN (a diverged run), which SQLite can't hold
    train_loss: Mapped[float | None]
    effective_tokens: Mapped[float | None]
    effective_tokens_extrapolated: Mapped[bool | None]
    # Downstream evaluation of this checkpoint (NULL where it was not evaluated): {"acc/<task>": value},
    # their average, and D_eff by that average.
    task_scores: Mapped[dict[str, Any] | None]
    accuracy: Mapped[float | None]
    effective_tokens_accuracy: Mapped[float | None]
    effective_tokens_accuracy_extrapolated: Mapped[bool | None]


class RefreshRound(Base):
    """A refresh of an arm that trains in rounds (SynPro): where its pretraining resumed, and each
    generator's GRPO run per step (`grpo`: {operation: [metrics.jsonl rows]}, trl's per-step logs and
    the held-out evaluations), so the report can plot them away from the stage folders."""

    __tablename__ = "refresh_rounds"
    __table_args__ = (UniqueConstraint("arm_id", "round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arm_id: Mapped[int] = mapped_column(ForeignKey("arms.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    start_tokens: Mapped[int] = mapped_column(BigInteger)
    grpo: Mapped[dict[str, Any]]


class Fit(Base):
    """A scaling law fitted to a study's curves (one arm's, or pooled when `arm` is NULL).

    (study, law, inputs_hash) is its identity: the hash covers the points and the fit options,
    so fitting the same points the same way again updates this row instead of adding one.
    A fitted constant is stored with how sure the fit is of it: `ci` ({name: [low, high]}, never
    zero-width) and `interval` (method, n, level) are NULL without a bootstrap; `identified`
    ({name: {identified, reason}}) and the fit's residual spread are NULL only on rows written
    before they existed (revision 0003), which nothing has assessed.
    """

    __tablename__ = "fits"
    __table_args__ = (
        UniqueConstraint("study_id", "law", "inputs_hash"),
        Index(None, "study_id", "arm", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    arm: Mapped[str | None] = mapped_column(String(255))
    law: Mapped[str] = mapped_column(String(64))
    constants: Mapped[dict[str, Any]]
    ci: Mapped[dict[str, Any] | None]
    interval: Mapped[dict[str, Any] | None]
    identified: Mapped[dict[str, Any] | None]
    residual_spread: Mapped[float | None]
    points_per_free_constant: Mapped[float | None]
    loss: Mapped[float]
    n_points: Mapped[int] = mapped_column(Integer)
    inputs_hash: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]]
    residuals: Mapped[list[float]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FitTrial(Base):
    """Which trials' curves a fit used (deleting a trial deletes its links, not the fit)."""

    __tablename__ = "fit_trials"
    __table_args__ = (Index(None, "trial_id"),)

    fit_id: Mapped[int] = mapped_column(ForeignKey("fits.id", ondelete="CASCADE"), primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
