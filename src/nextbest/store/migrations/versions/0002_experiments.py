"""Experiment exposures (assignments) and the experiment registry.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "assignments",
        sa.Column("assignment_id", _BIGID, nullable=False, autoincrement=True),
        sa.Column("decision_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("experiment_id", sa.String(64), nullable=False),
        sa.Column("arm_id", sa.String(64), nullable=False),
        sa.Column("bucket", sa.Float(), nullable=False),
        sa.Column("hash_version", sa.Integer(), nullable=False),
        sa.Column("seed", sa.String(128), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("held_out", sa.Boolean(), nullable=False),
        sa.Column("action_id", sa.String(64), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        _ts("send_at"),
        sa.Column("parameters", _JSON, nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        _ts("occurred_at"),
        sa.Column("catalog_version", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("assignment_id", name="pk_assignments"),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.decision_id"], name="fk_assignments_decision_id_decisions"
        ),
    )
    op.create_index(
        "ix_assignments_experiment_id_user_id_occurred_at",
        "assignments",
        ["experiment_id", "user_id", "occurred_at"],
    )
    op.create_index("ix_assignments_decision_id", "assignments", ["decision_id"])
    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.String(64), nullable=False),
        sa.Column("seed", sa.String(128), nullable=False),
        sa.Column("hash_version", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("definition", _JSON, nullable=False),
        _ts("first_seen_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("experiment_id", name="pk_experiments"),
    )


def downgrade() -> None:
    op.drop_table("experiments")
    op.drop_table("assignments")
