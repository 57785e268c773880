"""Each experiment unit's first exposure (``experiment_units``, see ``nextbest.store.units``), kept by the
group commit from now on and backfilled here from the stored assignments, so that a lift report groups
one row per unit instead of every exposure.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from nextbest.store.units import rebuild_units

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_units",
        sa.Column("experiment_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("arm_id", sa.String(64), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mixed_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("experiment_id", "user_id", name="pk_experiment_units"),
    )
    rebuild_units(op.get_bind())


def downgrade() -> None:
    op.drop_table("experiment_units")
