"""Contact policy: cancelled (preempted or exited) pending exposures, and product inventory.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cancelled_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("cancel_reason", sa.String(512), nullable=True))
    op.create_table(
        "inventory",
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("in_stock", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_inventory")),
    )


def downgrade() -> None:
    op.drop_table("inventory")
    with op.batch_alter_table("exposures") as batch:
        batch.drop_column("cancel_reason")
        batch.drop_column("cancelled_by")
        batch.drop_column("cancelled_at")
