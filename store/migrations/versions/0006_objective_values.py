"""Multi-objective searches: every objective value of a trial.

`trials.objective_values` is a JSON list, the primary objective first (so it repeats
`objective_value`; NaN stored as null). NULL for single-objective studies and for rows written
before this revision, which is how the results tell the two apart.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("objective_values", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("objective_values")
