"""Every table and index, in one place (SQLAlchemy Core). Migrations under ``migrations/`` create them;
a test checks that the migrated database matches this module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "assignments",
    "audit_log",
    "customers",
    "decisions",
    "erasures",
    "events",
    "experiment_units",
    "experiments",
    "exposures",
    "inventory",
    "metadata",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zone type)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite stores the text SQLAlchemy's DATETIME writes ("2026-11-02 09:00:00.000000", UTC); a
        # decision writes several, and ``isoformat`` in C makes the same string without the two
        # Python-level steps (asserted equal in tests/store).
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_ID = String(128)
_NAME = String(64)
_JSON = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
_BIGID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

decisions = Table(
    "decisions",
    metadata,
    Column("decision_id", String(32), primary_key=True),
    Column("request_id", _ID, nullable=False, unique=True),
    Column("user_id", _ID, nullable=False),
    Column("trigger", _NAME, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("decided_at", UTCDateTime(), nullable=False),
    Column("catalog_version", String(32), nullable=False),
    # Digest of the request as sent; a replay with another digest is ALREADY_EXISTS.
    Column("fingerprint", String(64), nullable=False),
    # The whole answer (actions and rejections), so a replay returns exactly what was sent.
    Column("payload", _JSON, nullable=False),
    Index(None, "user_id", "occurred_at"),
)

# On PostgreSQL, exposures, assignments and events are partitioned by month on occurred_at (migration
# 0007, ``nextbest.store.partitions``): there their primary keys are (id, occurred_at) and events are
# unique on (event_id, occurred_at), plus a trigger that keeps event_id unique across partitions — a
# partitioned table's unique constraints must include the partition key. SQLite has them as declared here.

# The exposure log: one row per action chosen for a customer, the contact history policy reads.
exposures = Table(
    "exposures",
    metadata,
    Column("exposure_id", _BIGID, primary_key=True, autoincrement=True),
    Column("decision_id", String(32), ForeignKey("decisions.decision_id"), nullable=False),
    Column("user_id", _ID, nullable=False),
    Column("action_id", _NAME, nullable=False),
    Column("flow", _NAME, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("action_class", String(16), nullable=False),
    Column("trigger", _NAME, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("send_at", UTCDateTime(), nullable=False),
    Column("score", Float, nullable=False),
    Column("catalog_version", String(32), nullable=False),
    # A pending action (send_at in the future) can be cancelled: preempted by a higher-priority decision
    # (cancelled_by = its decision id) or ended by an event (cancelled_by = the event id).
    Column("cancelled_at", UTCDateTime()),
    Column("cancelled_by", _ID),
    Column("cancel_reason", String(512)),
    # The scoring features (float64, in the order of nextbest.models.features.LOGGED): a training set
    # is a query over what production saw.
    Column("features", LargeBinary),
    Index(None, "user_id", "occurred_at"),
    Index(None, "decision_id"),
)

# Experiment exposures: one row per decision x experiment x in-scope action, for treated units and, with
# the action they would have received (the counterfactual), for held-out ones.
assignments = Table(
    "assignments",
    metadata,
    Column("assignment_id", _BIGID, primary_key=True, autoincrement=True),
    Column("decision_id", String(32), ForeignKey("decisions.decision_id"), nullable=False),
    Column("user_id", _ID, nullable=False),
    Column("experiment_id", _NAME, nullable=False),
    Column("arm_id", _NAME, nullable=False),
    Column("bucket", Float, nullable=False),
    Column("hash_version", Integer, nullable=False),
    Column("seed", String(128), nullable=False),
    Column("probability", Float, nullable=False),
    Column("held_out", Boolean, nullable=False),
    Column("action_id", _NAME, nullable=False),
    Column("flow", _NAME, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("send_at", UTCDateTime(), nullable=False),
    Column("parameters", _JSON, nullable=False),
    Column("score", Float, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("catalog_version", String(32), nullable=False),
    Column("features", LargeBinary),
    # Covering on PostgreSQL: a report groups an experiment's exposures by customer from the index alone,
    # in customer order (an index-only scan, no hash of every exposure).
    Index(None, "experiment_id", "user_id", "occurred_at", postgresql_include=["arm_id"]),
    Index(None, "decision_id"),
)

# What each experiment looked like when first seen running: arms and weights may not change under the
# same seed (see nextbest.store.registry.ExperimentRegistry.register_experiments).
experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", _NAME, primary_key=True),
    Column("seed", String(128), nullable=False),
    Column("hash_version", Integer, nullable=False),
    Column("fingerprint", String(32), nullable=False),
    Column("definition", _JSON, nullable=False),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("seq", _BIGID, primary_key=True, autoincrement=True),
    Column("event_id", _ID, nullable=False, unique=True),
    Column("user_id", _ID, nullable=False),
    Column("type", String(32), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("value", Float, nullable=False, default=0.0),
    Column("channel", String(16)),
    Column("decision_id", String(32)),
    Column("order_id", _ID),
    # The rest of the event (items, product ids, consent flag, bounce kind, properties).
    Column("details", _JSON, nullable=False),
    # Covering on PostgreSQL: a report joins each customer's events from the index alone.
    Index(None, "user_id", "type", "occurred_at", postgresql_include=["value"]),
)

# Customer state folded from events (see nextbest.state.customer); one row per customer.
customers = Table(
    "customers",
    metadata,
    Column("user_id", _ID, primary_key=True),
    Column("first_seen_at", UTCDateTime()),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("orders_count", Integer, nullable=False, default=0),
    Column("refunds_count", Integer, nullable=False, default=0),
    Column("revenue_total", Float, nullable=False, default=0.0),
    Column("last_order_at", UTCDateTime()),
    Column("last_engagement_at", UTCDateTime()),
    # {channel: {consent, consent_at, opted_in_at, unsubscribed_at, hard_bounced_at, complained_at}}
    Column("channels", _JSON, nullable=False),
    # {event_type: ISO time of the latest such event}
    Column("last_events", _JSON, nullable=False),
    # {hour of week (UTC, Monday 00:00 = 0): opens and clicks}
    Column("engagement_hours", _JSON),
    # Bumped by every write that changes what a decision for this customer would see (an event folded
    # in; a decision that logs an exposure or cancels one). A decision commits only if the version is
    # still the one it read: replicas and processes deciding for the same customer cannot both act on
    # the same state (optimistic concurrency; the loser decides again).
    Column("version", BigInteger, nullable=False, default=0, server_default="0"),
)

# The latest stock status of each product, from out_of_stock / back_in_stock events.
inventory = Table(
    "inventory",
    metadata,
    Column("product_id", _ID, primary_key=True),
    Column("in_stock", Boolean, nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),
    Column("event_id", _ID, nullable=False),
)

# Each experiment unit's first exposure, kept by the group commit as assignments are written (migration
# 0009, ``nextbest.store.units``): the arm and time of the unit's first assignment, and the time it was
# first seen in another arm (NULL while it has one arm). A lift report groups these rows, one per unit,
# instead of the unit's exposures; as of any moment T the unit is counted when first_at <= T, and
# excluded (seen in several arms) when mixed_at <= T.
experiment_units = Table(
    "experiment_units",
    metadata,
    Column("experiment_id", _NAME, primary_key=True),
    Column("user_id", _ID, primary_key=True),
    Column("arm_id", _NAME, nullable=False),
    Column("first_at", UTCDateTime(), nullable=False),
    Column("mixed_at", UTCDateTime()),
)

# What erasures removed from experiments, without whom: per erasure, experiment and arm (the arm of the
# unit's first assignment; "__multiple__" when it was seen in several), the units taken out. Lift reports
# say how many of an experiment's units were erased.
erasures = Table(
    "erasures",
    metadata,
    Column("erasure_id", _BIGID, primary_key=True, autoincrement=True),
    Column("experiment_id", _NAME, nullable=False),
    Column("arm_id", _NAME, nullable=False),
    Column("units", Integer, nullable=False),
    Column("erased_at", UTCDateTime(), nullable=False),
    Index(None, "experiment_id"),
)

# Every admin call and erasure, appended and never changed (triggers refuse UPDATE and DELETE): who (the
# caller's principal), when, what (the call and its outcome, never a customer id), and the catalog or
# model versions before and after.
audit_log = Table(
    "audit_log",
    metadata,
    Column("audit_id", _BIGID, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("principal", String(256), nullable=False),
    Column("action", _NAME, nullable=False),
    Column("detail", _JSON, nullable=False),
    Column("before", String(512)),
    Column("after", String(512)),
    Index(None, "at"),
)
