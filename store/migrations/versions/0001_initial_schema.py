"""Initial schema: studies, trials, arms, evaluations.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("spec_yaml", sa.Text(), nullable=False),
        sa.Column("objective", sa.JSON(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
        sa.UniqueConstraint("name", name="uq_studies_name"),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("params_hash", sa.String(64), nullable=False),
        sa.Column("optuna_number", sa.Integer(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("objective_value", sa.Double(), nullable=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("heartbeat_at", _TIMESTAMP, nullable=False),
        sa.Column("started_at", _TIMESTAMP, nullable=False),
        sa.Column("finished_at", _TIMESTAMP, nullable=True),
        sa.CheckConstraint("state IN ('running', 'finished', 'failed', 'pruned')", name="ck_trials_state"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_trials_study_id_studies", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_trials"),
        sa.UniqueConstraint("study_id", "params_hash", name="uq_trials_study_id_params_hash"),
    )
    op.create_index("ix_trials_study_id_state", "trials", ["study_id", "state"])
    op.create_table(
        "arms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("unique_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("final_val_loss", sa.Double(), nullable=True),
        sa.Column("tokens_seen", sa.BigInteger(), nullable=True),
        sa.Column("effective_tokens", sa.Double(), nullable=True),
        sa.Column("effective_tokens_extrapolated", sa.Boolean(), nullable=True),
        sa.Column("multiplier_vs_repetition", sa.Double(), nullable=True),
        sa.CheckConstraint("state IN ('running', 'finished', 'failed')", name="ck_arms_state"),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name="fk_arms_trial_id_trials", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_arms"),
        sa.UniqueConstraint("trial_id", "name", name="uq_arms_trial_id_name"),
    )
    op.create_index("ix_arms_name", "arms", ["name"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("arm_id", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("val_loss", sa.Double(), nullable=True),
        sa.Column("train_loss", sa.Double(), nullable=True),
        sa.Column("effective_tokens", sa.Double(), nullable=True),
        sa.Column("effective_tokens_extrapolated", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(["arm_id"], ["arms.id"], name="fk_evaluations_arm_id_arms", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
        sa.UniqueConstraint("arm_id", "tokens", name="uq_evaluations_arm_id_tokens"),
    )


def downgrade() -> None:
    op.drop_table("evaluations")
    op.drop_index("ix_arms_name", table_name="arms")
    op.drop_table("arms")
    op.drop_index("ix_trials_study_id_state", table_name="trials")
    op.drop_table("trials")
    op.drop_table("studies")
