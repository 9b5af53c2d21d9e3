"""Downstream accuracy: per-checkpoint task scores, and effective tokens by accuracy beside loss.

Every new column is nullable: rows written before this revision (and specs without eval tasks)
simply have no accuracy.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ARM = [("final_accuracy", sa.Double()), ("effective_tokens_accuracy", sa.Double()),
        ("effective_tokens_accuracy_extrapolated", sa.Boolean()), ("multiplier_accuracy", sa.Double())]
_EVALUATION = [("task_scores", sa.JSON()), ("accuracy", sa.Double()), ("effective_tokens_accuracy", sa.Double()),
               ("effective_tokens_accuracy_extrapolated", sa.Boolean())]


def upgrade() -> None:
    for table, columns in (("arms", _ARM), ("evaluations", _EVALUATION)):
        with op.batch_alter_table(table) as batch:
            for name, type_ in columns:
                batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    for table, columns in (("arms", _ARM), ("evaluations", _EVALUATION)):
        with op.batch_alter_table(table) as batch:
            for name, _ in reversed(columns):
                batch.drop_column(name)
