"""Decisions, exposures, events and customer state.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        _ts("occurred_at"),
        _ts("decided_at"),
        sa.Column("catalog_version", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name="pk_decisions"),
        sa.UniqueConstraint("request_id", name="uq_decisions_request_id"),
    )
    op.create_index("ix_decisions_user_id_occurred_at", "decisions", ["user_id", "occurred_at"])
    op.create_table(
        "exposures",
        sa.Column("exposure_id", _BIGID, nullable=False, autoincrement=True),
        sa.Column("decision_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("action_id", sa.String(64), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("action_class", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        _ts("occurred_at"),
        _ts("send_at"),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("catalog_version", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("exposure_id", name="pk_exposures"),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.decision_id"], name="fk_exposures_decision_id_decisions"
        ),
    )
    op.create_index("ix_exposures_user_id_occurred_at", "exposures", ["user_id", "occurred_at"])
    op.create_index("ix_exposures_decision_id", "exposures", ["decision_id"])
    op.create_table(
        "events",
        sa.Column("seq", _BIGID, nullable=False, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        _ts("occurred_at"),
        _ts("received_at"),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("decision_id", sa.String(32), nullable=True),
        sa.Column("order_id", sa.String(128), nullable=True),
        sa.Column("details", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )
    op.create_index("ix_events_user_id_type_occurred_at", "events", ["user_id", "type", "occurred_at"])
    op.create_table(
        "customers",
        sa.Column("user_id", sa.String(128), nullable=False),
        _ts("first_seen_at", nullable=True),
        _ts("updated_at"),
        sa.Column("orders_count", sa.Integer(), nullable=False),
        sa.Column("refunds_count", sa.Integer(), nullable=False),
        sa.Column("revenue_total", sa.Float(), nullable=False),
        _ts("last_order_at", nullable=True),
        _ts("last_engagement_at", nullable=True),
        sa.Column("channels", _JSON, nullable=False),
        sa.Column("last_events", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_customers"),
    )


def downgrade() -> None:
    op.drop_table("customers")
    op.drop_table("events")
    op.drop_table("exposures")
    op.drop_table("decisions")
