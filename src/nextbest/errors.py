"""One exception hierarchy. Each error names its gRPC status code by name, so the core imports no gRPC;
the server's error interceptor is the only place that turns these into statuses."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_VIOLATIONS",
    "AlreadyExistsError",
    "CatalogError",
    "DeadlineExceededError",
    "FieldViolation",
    "InvalidArgumentError",
    "NextbestError",
    "NotFoundError",
    "OverloadedError",
    "StartupError",
    "StoreUnavailableError",
]

# An INVALID_ARGUMENT carries its violations in the status message and in a google.rpc.BadRequest, both in
# the response headers, which a client caps (8 KB by default in gRPC): so at most this many violations,
# each field name and description cut short, and the message lists as many as fit in _MAX_MESSAGE.
MAX_VIOLATIONS = 20
_MAX_FIELD = 64
_MAX_DESCRIPTION = 120
_MAX_MESSAGE = 1500


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class NextbestError(Exception):
    """Base of every error nextbest raises on purpose. ``status`` is a ``grpc.StatusCode`` member name."""

    status = "INTERNAL"


class InvalidArgumentError(NextbestError):
    """The request is malformed; ``violations`` names every bad field."""

    status = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = [_short(v) for v in violations[:MAX_VIOLATIONS]]
        #: Violations left out of ``violations`` (see ``MAX_VIOLATIONS``).
        self.more = max(0, len(violations) - MAX_VIOLATIONS)
        parts: list[str] = []
        size = 0
        for v in self.violations:
            size += len(str(v)) + 2
            if size > _MAX_MESSAGE:
                break
            parts.append(str(v))
        untold = len(violations) - len(parts)
        if untold:
            parts.append(f"and {untold} more")
        super().__init__("; ".join(parts) or "invalid argument")


def _short(v: FieldViolation) -> FieldViolation:
    if len(v.field) <= _MAX_FIELD and len(v.description) <= _MAX_DESCRIPTION:
        return v
    description = v.description
    if len(description) > _MAX_DESCRIPTION:
        description = description[: _MAX_DESCRIPTION - 3] + "..."
    return FieldViolation(v.field[:_MAX_FIELD], description)


class AlreadyExistsError(NextbestError):
    status = "ALREADY_EXISTS"


class NotFoundError(NextbestError):
    status = "NOT_FOUND"


class ConflictError(NextbestError):
    """Other writes for the same customer kept landing while this call decided (another process or
    replica deciding for them, events folding in); nothing was written, and the call is safe to retry."""

    status = "ABORTED"


class DeadlineExceededError(NextbestError):
    """The caller's deadline passed, or would pass before the decision could be durably written; nothing
    was written."""

    status = "DEADLINE_EXCEEDED"


class OverloadedError(NextbestError):
    """The server is at its bound on concurrent calls; nothing was done, and the call is safe to retry."""

    status = "RESOURCE_EXHAUSTED"


class StoreUnavailableError(NextbestError):
    """The database could not be reached or the write failed; nothing was acknowledged."""

    status = "UNAVAILABLE"


class StartupError(NextbestError):
    """The server cannot start: a busy port, a database that does not answer or lacks nextbest's tables.
    The message is the one line an operator needs (never a gRPC status: no call was served)."""

    status = "FAILED_PRECONDITION"


class CatalogError(NextbestError):
    """The catalog is invalid. ``problems`` holds one line per problem: ``file: path: reason``."""

    status = "FAILED_PRECONDITION"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} catalog problem(s):\n" + "\n".join(self.problems))
