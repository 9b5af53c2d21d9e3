"""Replicates: an arm row per training seed, and what the analysis says beside the numbers.

`arms.seed` (existing rows: seed 0, which is what they trained with unless the spec said
otherwise) joins the arm's identity, so the unique constraint becomes (trial_id, name, seed).
`arms.details` holds one seed's analysis (multiplier method and flags, epochs per source);
`trials.analysis` the trial's (reference used, per-arm seed statistics, noise floor). Both JSON,
NULL on rows written before this revision.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("arms") as batch:
        batch.add_column(sa.Column("seed", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))
        batch.drop_constraint("uq_arms_trial_id_name", type_="unique")
        batch.create_unique_constraint("uq_arms_trial_id_name_seed", ["trial_id", "name", "seed"])
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("analysis", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("analysis")
    op.execute("DELETE FROM arms WHERE seed <> 0")  # one row per (trial, name) is all the old schema holds
    with op.batch_alter_table("arms") as batch:
        batch.drop_constraint("uq_arms_trial_id_name_seed", type_="unique")
        batch.create_unique_constraint("uq_arms_trial_id_name", ["trial_id", "name"])
        batch.drop_column("details")
        batch.drop_column("seed")
