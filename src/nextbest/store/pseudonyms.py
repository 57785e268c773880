"""Customer ids stored as a keyed HMAC (optional): the database never holds a raw customer id.

With a key, the store writes ``h1:`` + HMAC-SHA256(key, id) in hex wherever it would write the customer
id, and looks rows up by the same digest, so decisions, caps, journeys, snapshots and reports work as
before: each needs equal ids to be equal, never the id itself. Callers still send raw ids and get raw
ids back; experiment assignment still hashes the raw id (a pure function of the unit, the same with or
without a key).

Request, event and order ids are hashed too: callers build them from customer ids more often than not
(``customer-42-cart-7781``), and they are only ever compared for equality (idempotency, deduplication).
Free-form event properties are stored as sent.

Without a key every method returns its argument unchanged.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from pathlib import Path

from nextbest.domain import Decision, Event

__all__ = ["MIN_KEY_BYTES", "PREFIX", "CustomerIds", "load_key"]

# The version of the scheme, stored with every digest: a new scheme gets a new prefix.
PREFIX = "h1:"
MIN_KEY_BYTES = 16


def load_key(key: str | None, key_file: Path | None) -> bytes | None:
    """The HMAC key from its value or its file (exactly one may be given; surrounding whitespace is
    ignored), or None for raw ids. Raises ``ValueError`` saying what to fix."""
    if key and key_file:
        raise ValueError("give the customer id key or its file, not both")
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the customer id key file {key_file}: {exc.strerror}") from None
    if not key:
        if key_file is not None:
            raise ValueError(f"the customer id key file {key_file} is empty")
        return None
    raw = key.strip().encode()
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"the customer id key must be at least {MIN_KEY_BYTES} bytes (got {len(raw)})")
    return raw


class CustomerIds:
    """Maps ids to what the store keeps of them (``stored``), and domain objects to their stored form."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key

    @property
    def hashing(self) -> bool:
        return self._key is not None

    def stored(self, value: str) -> str:
        """The id as stored: its keyed digest, or itself without a key (empty stays empty)."""
        if self._key is None or not value:
            return value
        return PREFIX + hmac.digest(self._key, value.encode(), "sha256").hex()

    def decision(self, decision: Decision) -> Decision:
        """The decision with its customer and request ids as stored."""
        if self._key is None:
            return decision
        return replace(
            decision, user_id=self.stored(decision.user_id), request_id=self.stored(decision.request_id)
        )

    def event(self, event: Event) -> Event:
        """The event with its customer, event and order ids as stored."""
        if self._key is None:
            return event
        return replace(
            event,
            event_id=self.stored(event.event_id),
            user_id=self.stored(event.user_id),
            order_id=self.stored(event.order_id),
        )
