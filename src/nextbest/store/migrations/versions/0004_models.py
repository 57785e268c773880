"""Models: the scoring features logged with each exposure and experiment exposure, and each customer's
opens and clicks by hour of the week (what send time personalizes from).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.add_column(sa.Column("features", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("features", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("customers") as batch:
        batch.add_column(
            sa.Column("engagement_hours", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("engagement_hours")
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("features")
    with op.batch_alter_table("exposures") as batch:
        batch.drop_column("features")
