"""Who is calling: bearer tokens and client certificates mapped to roles, checked in one interceptor.

Servicers ask :func:`current_principal` during a call for the caller's name (for audit records).
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["ANONYMOUS", "current_principal"]

ANONYMOUS = "anonymous"

# Set by the auth interceptor for the duration of one call, in the thread that runs the handler.
_principal: ContextVar[str] = ContextVar("nextbest_principal", default=ANONYMOUS)


def current_principal() -> str:
    """The caller of the call being handled: the token's name, or the client certificate's subject
    (``CN=billing,O=Example``); ``"anonymous"`` when authentication is off or outside a call."""
    return _principal.get()
