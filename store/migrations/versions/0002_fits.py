"""Fits: scaling laws fitted to a study's curves, and the trials each fit used.

The (study_id, arm, created_at) index serves "the latest fit of each arm" in comparisons; the
trial index serves the cascade when a trial is deleted.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(255), nullable=True),
        sa.Column("law", sa.String(64), nullable=False),
        sa.Column("constants", sa.JSON(), nullable=False),
        sa.Column("ci", sa.JSON(), nullable=False),
        sa.Column("loss", sa.Double(), nullable=False),
        sa.Column("n_points", sa.Integer(), nullable=False),
        sa.Column("inputs_hash", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("residuals", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_fits_study_id_studies", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_fits"),
        sa.UniqueConstraint("study_id", "law", "inputs_hash", name="uq_fits_study_id_law_inputs_hash"),
    )
    op.create_index("ix_fits_study_id_arm_created_at", "fits", ["study_id", "arm", "created_at"])
    op.create_table(
        "fit_trials",
        sa.Column("fit_id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["fit_id"], ["fits.id"], name="fk_fit_trials_fit_id_fits", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["trial_id"], ["trials.id"], name="fk_fit_trials_trial_id_trials",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("fit_id", "trial_id", name="pk_fit_trials"),
    )
    op.create_index("ix_fit_trials_trial_id", "fit_trials", ["trial_id"])


def downgrade() -> None:
    op.drop_index("ix_fit_trials_trial_id", table_name="fit_trials")
    op.drop_table("fit_trials")
    op.drop_index("ix_fits_study_id_arm_created_at", table_name="fits")
    op.drop_table("fits")
