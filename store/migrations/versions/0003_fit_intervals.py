"""Fit intervals: a fitted constant is stored with how sure the fit is of it.

`ci` becomes nullable (no bootstrap, no interval) and loses the zero-width intervals that older
fits wrote for every constant without one; `interval` records how intervals were made,
`identified` whether the points pin each fitted constant down, and `residual_spread` /
`points_per_free_constant` what the fit had to go on. Rows written before this revision keep
NULL there: nothing assessed them (refit to assess).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_fits = sa.table("fits", sa.column("id", sa.Integer()), sa.column("ci", sa.JSON()))


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.alter_column("ci", existing_type=sa.JSON(), nullable=True)
        batch.add_column(sa.Column("interval", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("identified", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("residual_spread", sa.Double(), nullable=True))
        batch.add_column(sa.Column("points_per_free_constant", sa.Double(), nullable=True))
    conn = op.get_bind()
    for fit_id, ci in conn.execute(sa.select(_fits.c.id, _fits.c.ci)).all():
        kept = {name: ends for name, ends in (ci or {}).items() if ends[0] != ends[1]}
        if kept != ci:
            conn.execute(_fits.update().where(_fits.c.id == fit_id).values(ci=kept or sa.null()))


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(_fits.update().where(_fits.c.ci.is_(None)).values(ci={}))
    with op.batch_alter_table("fits") as batch:
        batch.drop_column("points_per_free_constant")
        batch.drop_column("residual_spread")
        batch.drop_column("identified")
        batch.drop_column("interval")
        batch.alter_column("ci", existing_type=sa.JSON(), nullable=False)
