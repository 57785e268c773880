"""One exception hierarchy. Each error names its gRPC status code by name, so the core imports no gRPC;
the server's error interceptor is the only place that turns these into statuses."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AlreadyExistsError",
    "CatalogError",
    "FieldViolation",
    "InvalidArgumentError",
    "NextbestError",
    "NotFoundError",
    "StoreUnavailableError",
]


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
        self.violations = list(violations)
        super().__init__("; ".join(str(v) for v in self.violations) or "invalid argument")


class AlreadyExistsError(NextbestError):
    status = "ALREADY_EXISTS"


class NotFoundError(NextbestError):
    status = "NOT_FOUND"


class ConflictError(NextbestError):
    """Other writes for the same customer kept landing while this call decided (another process or
    replica deciding for them, events folding in); nothing was written, and the call is safe to retry."""

    status = "ABORTED"


class StoreUnavailableError(NextbestError):
    """The database could not be reached or the write failed; nothing was acknowledged."""

    status = "UNAVAILABLE"


class CatalogError(NextbestError):
    """The catalog is invalid. ``problems`` holds one line per problem: ``file: path: reason``."""

    status = "FAILED_PRECONDITION"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} catalog problem(s):\n" + "\n".join(self.problems))
