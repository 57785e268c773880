"""Customer scores (``customer_scores``, see ``nextbest.store.scores``): churn risk and purchase propensity
per customer, the model version and the customer version they were computed from, and when. Empty until
``nextbest score --all`` fills it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_scores",
        sa.Column(
            "user_id",
            sa.String(128),
            sa.ForeignKey("customers.user_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("churn_risk", sa.Float()),
        sa.Column("purchase_propensity", sa.Float()),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("customer_version", sa.BigInteger(), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("customer_scores")
