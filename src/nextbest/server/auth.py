"""Who is calling: bearer tokens and client certificates mapped to roles, checked in one interceptor.

Callers are listed in a tokens file (``--tokens-file``, reloaded on SIGHUP and when it changes) and/or in
``NEXTBEST_TOKENS``, one entry a line (``;`` also separates entries in the variable)::

    # name      roles            credential
    crm         decide,events    sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    crm         decide,events    token:a-second-token-during-a-rotation
    billing     decide           subject:CN=billing,O=Example

``token:SECRET`` is a bearer token (16 characters or more), ``sha256:HEX`` the SHA-256 of one (so the
server need not hold the token itself), ``subject:SUBJECT`` a client certificate's subject as
``openssl x509 -noout -subject -nameopt RFC2253`` prints it (mutual TLS, ``--tls-client-ca``). Only the
SHA-256 of each token is kept in memory, compared with :func:`hmac.compare_digest` against every entry.

Servicers ask :func:`current_principal` during a call for the caller's name (for audit records).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar, copy_context
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc

from nextbest.errors import NextbestError
from nextbest.server.interceptors import UnaryInterceptor, relay

__all__ = [
    "ANONYMOUS",
    "AccessControl",
    "AccessList",
    "AuthConfigError",
    "AuthInterceptor",
    "Principal",
    "Role",
    "current_principal",
    "parse_access",
    "required_role",
]

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"

# Set by the auth interceptor for the duration of one call, in the thread that runs the handler.
_principal: ContextVar[str] = ContextVar("nextbest_principal", default=ANONYMOUS)


def current_principal() -> str:
    """The caller of the call being handled: the token's name, or the client certificate's subject
    (``CN=billing,O=Example``); ``"anonymous"`` when authentication is off or outside a call."""
    return _principal.get()


class Role(StrEnum):
    DECIDE = "decide"  # NextAction (and batch decisions)
    EVENTS = "events"  # RecordEvents
    REPORT = "report"  # GetLiftReport
    ADMIN = "admin"  # every AdminService method


_DECISION_SERVICE = "/nextbest.api.v1.DecisionService/"
_ADMIN_SERVICE = "/nextbest.api.v1.AdminService/"
_METHOD_ROLES = {
    f"{_DECISION_SERVICE}NextAction": Role.DECIDE,
    f"{_DECISION_SERVICE}NextActionBatch": Role.DECIDE,
    f"{_DECISION_SERVICE}RecordEvents": Role.EVENTS,
    f"{_DECISION_SERVICE}GetLiftReport": Role.REPORT,
}


def required_role(method: str) -> Role | None:
    """The role a nextbest method needs; None for one that declares none (it is refused: fail closed)."""
    if method.startswith(_ADMIN_SERVICE):
        return Role.ADMIN
    return _METHOD_ROLES.get(method)


class AuthConfigError(NextbestError):
    """A tokens file, ``NEXTBEST_TOKENS`` or a TLS setting is unusable; the message says where and why
    (and never quotes a secret)."""

    status = "FAILED_PRECONDITION"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: frozenset[Role]


_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_MIN_TOKEN = 16


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class AccessList:
    """Token digests and certificate subjects, each with the principal it names."""

    tokens: tuple[tuple[bytes, Principal], ...] = ()
    subjects: tuple[tuple[str, Principal], ...] = ()

    def __len__(self) -> int:
        return len(self.tokens) + len(self.subjects)

    def by_token(self, token: str) -> Principal | None:
        digest = token_digest(token)
        found = None
        for candidate, principal in self.tokens:  # every entry, so the time does not say which one matched
            if hmac.compare_digest(candidate, digest):
                found = principal
        return found

    def by_subject(self, subject: str) -> Principal | None:
        for candidate, principal in self.subjects:
            if candidate == subject:
                return principal
        return None

    def __add__(self, other: AccessList) -> AccessList:
        return AccessList(self.tokens + other.tokens, self.subjects + other.subjects)


def parse_access(text: str, source: str, *, separators: str = "\n") -> AccessList:
    """Parses entries (see the module docstring); raises :class:`AuthConfigError` naming every bad line by
    ``source:line``. ``separators``: the characters that end an entry."""
    problems: list[str] = []
    tokens: list[tuple[bytes, Principal]] = []
    subjects: list[tuple[str, Principal]] = []
    seen: dict[bytes | str, str] = {}
    for number, raw in enumerate(re.split(f"[{re.escape(separators)}]", text), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        try:
            name, key, principal = _parse_entry(line)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if key in seen and seen[key] != name:
            problems.append(f"{where}: the same credential already names {seen[key]!r}")
        seen[key] = name
        if isinstance(key, bytes):
            tokens.append((key, principal))
        else:
            subjects.append((key, principal))
    if problems:
        raise AuthConfigError("; ".join(problems))
    return AccessList(tuple(tokens), tuple(subjects))


def _parse_entry(line: str) -> tuple[str, bytes | str, Principal]:
    """``NAME ROLES CREDENTIAL`` -> (name, token digest or certificate subject, principal); ValueError
    says what is wrong without quoting the credential."""
    parts = line.split(None, 2)
    if len(parts) < 3:
        raise ValueError("expected NAME ROLES CREDENTIAL")
    name, roles_text, credential = parts
    if not _NAME.fullmatch(name):
        raise ValueError("name must be 1-64 of A-Z a-z 0-9 _ . @ -")
    roles: set[Role] = set()
    for role in roles_text.split(","):
        try:
            roles.add(Role(role))
        except ValueError:
            raise ValueError(f"unknown role {role[:20]!r} (roles: {', '.join(Role)})") from None
    kind, _, value = credential.partition(":")
    if kind == "token":
        if len(value) < _MIN_TOKEN or any(c.isspace() for c in value):
            raise ValueError(f"a token needs {_MIN_TOKEN} or more characters and no spaces")
        return name, token_digest(value), Principal(name, frozenset(roles))
    if kind == "sha256":
        if not _HEX64.fullmatch(value):
            raise ValueError("sha256: needs 64 hex digits (the sha256sum of the token)")
        return name, bytes.fromhex(value), Principal(name, frozenset(roles))
    if kind == "subject":
        subject = value.strip()
        if not subject:
            raise ValueError("subject: needs a certificate subject such as CN=billing")
        # A certificate's caller is known by its subject (the name column only labels the line).
        return name, subject, Principal(subject, frozenset(roles))
    raise ValueError("credential must start with token:, sha256: or subject:")


class AccessControl:
    """The access list in force: ``NEXTBEST_TOKENS`` plus the tokens file, swapped whole on
    :meth:`reload` (SIGHUP) and when the file changes (checked every ``poll`` seconds). A file that no
    longer parses is reported and the previous list stays in force."""

    def __init__(self, inline: str | None, path: Path | None, *, poll: float = 1.0) -> None:
        self._inline = parse_access(inline, "NEXTBEST_TOKENS", separators="\n;") if inline else AccessList()
        self._path = path
        self._poll = poll
        self._stamp = self._file_stamp()
        self.current = self._inline + self._read_file()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _read_file(self) -> AccessList:
        if self._path is None:
            return AccessList()
        try:
            text = self._path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise AuthConfigError(f"cannot read --tokens-file {self._path}: {why}") from None
        return parse_access(text, str(self._path))

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Reads the tokens file again; True when the new list is in force."""
        self._stamp = self._file_stamp()
        try:
            access = self._inline + self._read_file()
        except AuthConfigError as exc:
            logger.error("tokens not reloaded, the previous ones stay in force: %s", exc)
            return False
        self.current = access
        logger.info("tokens reloaded: %d entries", len(access))
        return True

    def start(self) -> None:
        if self._path is not None and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="nextbest-tokens", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self._poll):
            if self._file_stamp() != self._stamp:
                self.reload()

    def identify(self, context: Any) -> tuple[Principal | None, str]:
        """The caller of ``context``'s call, or None and why not (never quoting the token)."""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    return None, "malformed authorization header (expected 'Bearer TOKEN')"
                principal = self.current.by_token(token.strip())
                return principal, "" if principal else "unknown token"
        subjects = (context.auth_context() or {}).get("x509_subject")
        if subjects:
            subject = subjects[0].decode("utf-8", "replace")
            principal = self.current.by_subject(subject)
            return principal, "" if principal else f"certificate subject {subject!r} has no roles"
        return None, "no bearer token or client certificate"


class _Throttle:
    """At most ``burst`` log lines per ``period`` seconds; the lines held back are counted in the next."""

    def __init__(self, burst: int = 10, period: float = 10.0) -> None:
        self._burst, self._period = burst, period
        self._lock = threading.Lock()
        self._start = 0.0
        self._count = 0
        self._held = 0

    def allow(self) -> int | None:
        """None: hold this line back; otherwise how many were held back since the last one logged."""
        with self._lock:
            now = time.monotonic()
            if now - self._start >= self._period:
                self._start, self._count = now, 0
            if self._count >= self._burst:
                self._held += 1
                return None
            self._count += 1
            held, self._held = self._held, 0
            return held


class AuthInterceptor(UnaryInterceptor):
    """UNAUTHENTICATED without a known token or certificate, PERMISSION_DENIED without the method's role;
    both logged (rate-limited, without the token). Only nextbest's methods are checked: health and
    reflection stay open."""

    def __init__(self, access: AccessControl) -> None:
        super().__init__()
        self.access = access
        self._throttle = _Throttle()

    def _wrap(self, handler: Any, method: str) -> Any:
        if (
            handler is not None
            and handler.unary_unary is None
            and handler.unary_stream is None
            and method.startswith("/nextbest.")
        ):
            logger.error("refusing %s: client-streaming methods are not covered by authentication", method)
            return None  # UNIMPLEMENTED rather than unchecked
        return super()._wrap(handler, method)

    def _check(self, path: str, role: Role | None, context: grpc.ServicerContext) -> Principal:
        """The caller, when it may call ``path``; otherwise the call is aborted (abort raises)."""
        principal, why = self.access.identify(context)
        if principal is None:
            self._log("unauthenticated call to %s from %s: %s", path, context.peer(), why)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"unauthenticated: {why}")
        elif role is None or role not in principal.roles:
            needs = f"role {role.value!r}" if role else "a role no one has (none is declared for it)"
            self._log("permission denied: %s called %s, which needs %s", principal.name, path, needs)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{principal.name} lacks {needs}")
        else:
            return principal
        raise AssertionError("unreachable: abort raises")

    def wrap_unary(self, inner: Callable[[Any, Any], Any], path: str) -> Callable[[Any, Any], Any]:
        role = required_role(path)

        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            principal = self._check(path, role, context)
            reset = _principal.set(principal.name)
            try:
                return inner(request, context)
            finally:
                _principal.reset(reset)

        return checked

    def wrap_stream(
        self, inner: Callable[[Any, Any], Iterator[Any]], path: str
    ) -> Callable[[Any, Any], Iterator[Any]]:
        role = required_role(path)

        def checked(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # Checked when gRPC calls the method, before it asks for the first message. The stream's
            # code runs in steps, each time gRPC asks for a message: every step runs in a context of
            # the call's own where the principal is set, never leaking into the thread's.
            principal = self._check(path, role, context)
            call = copy_context()
            call.run(_principal.set, principal.name)
            return relay(call.run(inner, request, context), call.run)

        return checked

    def _log(self, message: str, *args: Any) -> None:
        held = self._throttle.allow()
        if held is None:
            return
        if held:
            message += " (%d similar lines held back)"
            args = (*args, held)
        logger.warning(message, *args)


def describe(access: AccessList) -> Iterable[str]:
    """Names and roles, for the start-up log line (no credentials)."""
    for principal in sorted({p for _, p in access.tokens + access.subjects}, key=lambda p: p.name):
        yield f"{principal.name}({','.join(sorted(principal.roles))})"
