"""Refresh rounds: where an arm trained in rounds (SynPro) refreshed, and its generators' GRPO curves.

One row per (arm, round): the tokens its pretraining resumed at and, per operation, the GRPO run's
per-step metrics (JSON), read by `synpro report` and `synpro compare`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refresh_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("arm_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("start_tokens", sa.BigInteger(), nullable=False),
        sa.Column("grpo", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["arm_id"], ["arms.id"], name="fk_refresh_rounds_arm_id_arms", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_rounds"),
        sa.UniqueConstraint("arm_id", "round", name="uq_refresh_rounds_arm_id_round"),
    )


def downgrade() -> None:
    op.drop_table("refresh_rounds")
