"""Access control over real gRPC on loopback: every role boundary, TLS and mutual TLS, token rotation
without a restart, and the refusal to serve a non-loopback address open."""

from __future__ import annotations

import hashlib
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from nextbest.api.v1 import admin_service_pb2 as admin_pb
from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.cli import main
from nextbest.client import NextbestClient, make_event, timestamp
from nextbest.server import SERVICE_NAME, NextbestServer
from nextbest.server.auth import (
    AccessControl,
    AuthConfigError,
    AuthInterceptor,
    Role,
    current_principal,
    parse_access,
)
from nextbest.server.process import free_port
from nextbest.server.tls import check_exposure, is_loopback
from nextbest.settings import Settings
from tests.server.certs import Authority, Pem

TOKENS = {role: f"{role.value}-token-{uuid.uuid4().hex}" for role in Role}
WRONG = f"not-a-token-{uuid.uuid4().hex}"
SUBJECT = "CN=billing,O=nextbest tests"

# What each RPC needs, written out here rather than read from the server: a new RPC fails this test until
# its role is declared in both places.
EXPECTED_ROLES = {
    "/nextbest.api.v1.DecisionService/NextAction": Role.DECIDE,
    "/nextbest.api.v1.DecisionService/NextActionBatch": Role.DECIDE,
    "/nextbest.api.v1.DecisionService/RecordEvents": Role.EVENTS,
    "/nextbest.api.v1.DecisionService/GetLiftReport": Role.REPORT,
}


def _expected_role(path: str) -> Role:
    if path.startswith("/nextbest.api.v1.AdminService/"):
        return Role.ADMIN
    assert path in EXPECTED_ROLES, f"{path}: which role may call it? declare it in server/auth.py and here"
    return EXPECTED_ROLES[path]


def _tokens_file(path: Path, tokens: dict[Role, str], extra: str = "") -> Path:
    lines = ["# name roles credential"]
    for role, token in tokens.items():
        # Half the entries as the token's digest, so both forms are exercised.
        credential = (
            f"sha256:{hashlib.sha256(token.encode()).hexdigest()}"
            if role in (Role.EVENTS, Role.ADMIN)
            else f"token:{token}"
        )
        lines.append(f"{role.value}-caller {role.value} {credential}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n" + extra)
    tmp.replace(path)  # atomically, as an operator's rotation should
    return path


@dataclass(frozen=True)
class Pki:
    ca: Pem
    server: Pem
    client: Pem  # signed by the CA, its subject has the decide role
    stranger: Pem  # signed by the CA, its subject has no role
    foreign: Pem  # signed by another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority(directory / "ca", "nextbest-test-ca")
    other = Authority(directory / "other", "other-ca")
    return Pki(
        ca=ca.pem,
        server=ca.issue("localhost", server=True),
        client=ca.issue("billing", server=False),
        stranger=ca.issue("stranger", server=False),
        foreign=other.issue("billing", server=False),
    )


def _start(settings: Settings) -> NextbestServer:
    server = NextbestServer(settings)
    server.start()
    return server


@pytest.fixture(scope="module")
def auth_server(
    migrated: str, plain_catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NextbestServer]:
    tokens = _tokens_file(tmp_path_factory.mktemp("auth") / "tokens", TOKENS)
    server = _start(
        Settings(
            port=0,
            database_url=migrated,
            catalog=plain_catalog,
            workers=4,
            health_interval=0.2,
            tokens_file=tokens,
            reflection=False,
        )
    )
    yield server
    server.stop(grace=1.0)


def _request(path: str) -> Any:
    """A valid request for each RPC, so the right role gets an answer, not an error about the input."""
    now = datetime.now(UTC)
    if path.endswith("/NextAction"):
        return pb.NextActionRequest(
            request_id=uuid.uuid4().hex,
            user_id=f"auth-{uuid.uuid4().hex[:8]}",
            trigger="cart_abandoned",
            occurred_at=timestamp(now),
        )
    if path.endswith("/NextActionBatch"):
        return pb.NextActionBatchRequest(requests=[_request(path.removesuffix("Batch"))])
    if path.endswith("/RecordEvents"):
        return pb.RecordEventsRequest(events=[make_event("subscribed", "auth-user", now, channel="email")])
    if path.endswith("/GetLiftReport"):
        return pb.GetLiftReportRequest(experiment_id="no-such-experiment")
    service = admin_pb.DESCRIPTOR.services_by_name["AdminService"]
    method = service.methods_by_name[path.rsplit("/", 1)[1]]
    return getattr(admin_pb, method.input_type.name)()


def _methods() -> list[str]:
    paths = []
    for module, name in ((pb, "DecisionService"), (admin_pb, "AdminService")):
        service = module.DESCRIPTOR.services_by_name[name]
        paths += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return paths


def _call(channel: grpc.Channel, path: str, token: str | None) -> grpc.StatusCode:
    request = _request(path)
    call = channel.unary_unary(path, request_serializer=type(request).SerializeToString)
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    try:
        call(request, timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


CALLERS = {"no token": None, "wrong token": WRONG} | {f"{r.value} token": TOKENS[r] for r in Role}


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("path", _methods())
def test_every_rpc_needs_its_role(auth_server: NextbestServer, path: str, caller: str) -> None:
    token = CALLERS[caller]
    with grpc.insecure_channel(auth_server.address) as channel:
        code = _call(channel, path, token)
    if token is None or token == WRONG:
        assert code is grpc.StatusCode.UNAUTHENTICATED
    elif token == TOKENS[_expected_role(path)]:
        # The right role reaches the servicer: decisions and events succeed, an unknown experiment is
        # the report's own error, and nothing is refused for who called.
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        if path.rsplit("/", 1)[1] in (
            "NextAction",
            "NextActionBatch",
            "RecordEvents",
            "GetModels",
            "ReloadModels",
        ):
            assert code is grpc.StatusCode.OK, code
    else:
        assert code is grpc.StatusCode.PERMISSION_DENIED


def test_a_malformed_authorization_header_is_unauthenticated(auth_server: NextbestServer) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        request = _request("/nextbest.api.v1.DecisionService/NextAction")
        call = channel.unary_unary(
            "/nextbest.api.v1.DecisionService/NextAction", request_serializer=type(request).SerializeToString
        )
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10, metadata=(("authorization", f"Basic {TOKENS[Role.DECIDE]}"),))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in (info.value.details() or "")


def test_health_stays_open_and_reflection_can_be_switched_off(auth_server: NextbestServer) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(channel).get_services()
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_the_client_sends_its_token(auth_server: NextbestServer) -> None:
    with NextbestClient(auth_server.address, timeout=10, token=TOKENS[Role.DECIDE]) as client:
        assert client.next_action("auth-client", "cart_abandoned").decision_id
        with pytest.raises(grpc.RpcError) as info:
            client.lift_report("no-such-experiment")
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


# --- the principal, as a servicer sees it -----------------------------------------------------------------


@pytest.fixture
def whoami(pki: Pki) -> Iterator[tuple[str, AccessControl]]:
    """A bare gRPC server with the auth interceptor around a method that answers current_principal()."""
    entries = f"reporter report token:{TOKENS[Role.REPORT]}\nops admin token:{TOKENS[Role.ADMIN]}\n"
    entries += f"billing admin subject:{SUBJECT}"
    access = AccessControl(entries, None)
    server = grpc.server(ThreadPoolExecutor(max_workers=2), interceptors=[AuthInterceptor(access)])
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: current_principal().encode())
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("nextbest.api.v1.AdminService", {"Whoami": handler})]
    )
    credentials = grpc.ssl_server_credentials(
        [(pki.server.key.read_bytes(), pki.server.cert.read_bytes())],
        root_certificates=pki.ca.cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}", access
    server.stop(None)


def _whoami(address: str, pki: Pki, token: str | None, client: Pem | None = None) -> bytes:
    credentials = grpc.ssl_channel_credentials(
        pki.ca.cert.read_bytes(),
        client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None,
    )
    with grpc.secure_channel(address, credentials) as channel:
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        reply: bytes = channel.unary_unary("/nextbest.api.v1.AdminService/Whoami")(
            b"", timeout=10, metadata=metadata
        )
        return reply


def test_current_principal_names_the_token_or_the_certificate_subject(
    whoami: tuple[str, AccessControl], pki: Pki
) -> None:
    address, _ = whoami
    assert current_principal() == "anonymous"  # outside a call
    assert _whoami(address, pki, TOKENS[Role.ADMIN], pki.stranger) == b"ops"
    assert _whoami(address, pki, None, pki.client) == SUBJECT.encode()
    # A token, when sent, decides over the certificate.
    with pytest.raises(grpc.RpcError) as info:
        _whoami(address, pki, TOKENS[Role.REPORT], pki.client)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_refusals_are_logged_without_the_token(
    whoami: tuple[str, AccessControl], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    address, _ = whoami
    with caplog.at_level(logging.WARNING, logger="nextbest.server.auth"):
        for token in (WRONG, TOKENS[Role.REPORT]):
            with pytest.raises(grpc.RpcError):
                _whoami(address, pki, token, pki.stranger)
    text = caplog.text
    assert "unauthenticated call to /nextbest.api.v1.AdminService/Whoami" in text
    assert "unknown token" in text
    assert "reporter called /nextbest.api.v1.AdminService/Whoami, which needs role 'admin'" in text
    assert WRONG not in text
    assert TOKENS[Role.REPORT] not in text


# --- TLS and mutual TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_server(
    migrated: str, plain_catalog: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NextbestServer]:
    tokens = _tokens_file(
        tmp_path_factory.mktemp("mtls") / "tokens", TOKENS, extra=f"billing decide subject:{SUBJECT}\n"
    )
    server = _start(
        Settings(
            port=0,
            database_url=migrated,
            catalog=plain_catalog,
            workers=4,
            health_interval=0.2,
            tokens_file=tokens,
            tls_cert=pki.server.cert,
            tls_key=pki.server.key,
            tls_client_ca=pki.ca.cert,
        )
    )
    yield server
    server.stop(grace=1.0)


def _client(server: NextbestServer, **settings: Any) -> NextbestClient:
    return NextbestClient.from_settings(
        f"localhost:{server.port}", Settings(**settings), timeout=5, max_attempts=1
    )


def test_mtls_a_client_certificate_of_the_ca_is_its_subjects_roles(
    mtls_server: NextbestServer, pki: Pki
) -> None:
    with _client(
        mtls_server, tls_ca=pki.ca.cert, tls_client_cert=pki.client.cert, tls_client_key=pki.client.key
    ) as c:
        c.wait_until_serving(timeout=10)  # health over mTLS, once the server's first check has run
        assert c.next_action("mtls-user", "cart_abandoned").decision_id
        with pytest.raises(grpc.RpcError) as info:
            c.record_events([make_event("subscribed", "mtls-user", datetime.now(UTC))])
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_mtls_a_certificate_whose_subject_has_no_roles_is_unauthenticated(
    mtls_server: NextbestServer, pki: Pki
) -> None:
    with (
        _client(
            mtls_server,
            tls_ca=pki.ca.cert,
            tls_client_cert=pki.stranger.cert,
            tls_client_key=pki.stranger.key,
        ) as c,
        pytest.raises(grpc.RpcError) as info,
    ):
        c.next_action("mtls-user", "cart_abandoned")
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_mtls_with_a_token_as_well(mtls_server: NextbestServer, pki: Pki, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS[Role.EVENTS] + "\n")
    with _client(
        mtls_server,
        tls_ca=pki.ca.cert,
        tls_client_cert=pki.stranger.cert,
        tls_client_key=pki.stranger.key,
        token_file=token_file,
    ) as c:
        reply = c.record_events([make_event("subscribed", "mtls-user", datetime.now(UTC), channel="email")])
        assert len(reply.results) == 1


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param("foreign", id="client certificate from another CA"),
        pytest.param("none", id="no client certificate"),
        pytest.param("untrusted server", id="client does not trust the server's CA"),
        pytest.param("plaintext", id="plaintext client"),
    ],
)
def test_mtls_refuses_the_connection(mtls_server: NextbestServer, pki: Pki, refused: str) -> None:
    settings: dict[str, Any] = {
        "foreign": {
            "tls_ca": pki.ca.cert,
            "tls_client_cert": pki.foreign.cert,
            "tls_client_key": pki.foreign.key,
        },
        "none": {"tls_ca": pki.ca.cert, "token": TOKENS[Role.DECIDE]},
        "untrusted server": {
            "tls": True,
            "tls_client_cert": pki.client.cert,
            "tls_client_key": pki.client.key,
        },
        "plaintext": {"token": TOKENS[Role.DECIDE]},
    }[refused]
    with _client(mtls_server, **settings) as c:
        assert not c.is_serving(timeout=3)
        with pytest.raises(grpc.RpcError) as info:
            c.next_action("mtls-user", "cart_abandoned", timeout=3)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
def test_tls_with_tokens_and_a_server_name(
    migrated: str, plain_catalog: Path, pki: Pki, tmp_path: Path
) -> None:
    """TLS without client certificates: the token authenticates; the certificate names 'localhost', so a
    client dialling 127.0.0.1 says which name to expect."""
    server = _start(
        Settings(
            port=0,
            database_url=migrated,
            catalog=plain_catalog,
            workers=2,
            tokens_file=_tokens_file(tmp_path / "tokens", TOKENS),
            tls_cert=pki.server.cert,
            tls_key=pki.server.key,
        )
    )
    try:
        settings = Settings(tls_ca=pki.ca.cert, token=TOKENS[Role.DECIDE], tls_server_name="localhost")
        with NextbestClient.from_settings(server.address, settings, timeout=5, max_attempts=1) as c:
            assert c.next_action("tls-user", "cart_abandoned").decision_id
        with NextbestClient(server.address, timeout=3, max_attempts=1, token=TOKENS[Role.DECIDE]) as plain:
            assert not plain.is_serving(timeout=3)
    finally:
        server.stop(grace=1.0)


# --- rotation ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tokens_rotate_without_a_restart(migrated: str, plain_catalog: Path, tmp_path: Path) -> None:
    old = {Role.DECIDE: f"old-{uuid.uuid4().hex}"}
    new = {Role.DECIDE: f"new-{uuid.uuid4().hex}"}
    path = _tokens_file(tmp_path / "tokens", old)
    server = _start(
        Settings(port=0, database_url=migrated, catalog=plain_catalog, workers=2, tokens_file=path)
    )

    def works(token: str) -> bool:
        with grpc.insecure_channel(server.address) as channel:
            return _call(channel, "/nextbest.api.v1.DecisionService/NextAction", token) is grpc.StatusCode.OK

    def eventually(condition: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.1)
        return False

    try:
        assert works(old[Role.DECIDE]) and not works(new[Role.DECIDE])
        # Both valid during the rotation: the file changed, the server noticed.
        _tokens_file(
            path, {}, extra=f"a decide token:{old[Role.DECIDE]}\nb decide token:{new[Role.DECIDE]}\n"
        )
        assert eventually(lambda: works(new[Role.DECIDE]))
        assert works(old[Role.DECIDE])
        # A broken file is reported and changes nothing.
        path.write_text("a decide token:short\n")
        server.reload_access()
        assert works(old[Role.DECIDE]) and works(new[Role.DECIDE])
        # The old one retired, picked up on reload (what SIGHUP does) without waiting for the watcher.
        _tokens_file(path, new)
        server.reload_access()
        assert not works(old[Role.DECIDE])
        assert works(new[Role.DECIDE])
    finally:
        server.stop(grace=1.0)


# --- exposure ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_server_on_a_non_loopback_address_refuses_to_start_open(migrated: str, plain_catalog: Path) -> None:
    with pytest.raises(
        AuthConfigError, match=r"refusing to serve 0\.0\.0\.0 without authentication.*--insecure-open"
    ):
        NextbestServer(Settings(host="0.0.0.0", port=0, database_url=migrated, catalog=plain_catalog))


def test_serve_says_why_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEXTBEST_TOKENS", raising=False)
    monkeypatch.delenv("NEXTBEST_TOKENS_FILE", raising=False)
    monkeypatch.delenv("NEXTBEST_INSECURE_OPEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("nextbest: refusing to serve 0.0.0.0 without authentication")


def test_open_beyond_loopback_only_when_told_or_with_tokens() -> None:
    check_exposure(Settings(host="0.0.0.0", insecure_open=True))
    check_exposure(Settings(host="0.0.0.0", tokens=f"crm decide token:{TOKENS[Role.DECIDE]}"))
    check_exposure(Settings(host="127.0.0.1"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": Path("server.crt")}, "--tls-cert and --tls-key"),
        ({"tls_client_ca": Path("ca.crt")}, "--tls-client-ca needs --tls-cert"),
        (
            {"tls_cert": Path("s.crt"), "tls_key": Path("s.key"), "tls_client_ca": Path("ca.crt")},
            "needs 'subject:' entries",
        ),
    ],
)
def test_half_a_tls_set_up_is_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthConfigError, match=message):
        check_exposure(Settings(**settings))


def test_unreadable_certificate_files_are_named(migrated: str, plain_catalog: Path, tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match=r"cannot read --tls-cert .*missing\.crt"):
        NextbestServer(
            Settings(
                port=0,
                database_url=migrated,
                catalog=plain_catalog,
                tls_cert=tmp_path / "missing.crt",
                tls_key=tmp_path / "missing.key",
            )
        )


def test_a_key_that_is_not_the_certificates_is_named(migrated: str, plain_catalog: Path, pki: Pki) -> None:
    with pytest.raises(AuthConfigError, match="is not the key of --tls-cert"):
        NextbestServer(
            Settings(
                port=0,
                database_url=migrated,
                catalog=plain_catalog,
                tls_cert=pki.server.cert,
                tls_key=pki.client.key,
            )
        )


# --- the tokens file --------------------------------------------------------------------------------------


def test_entries_parse_and_match() -> None:
    token = TOKENS[Role.DECIDE]
    access = parse_access(
        f"# comment\n\ncrm decide,events token:{token}\n"
        f"ops admin sha256:{hashlib.sha256(b'an-admin-token-0123').hexdigest()}\n"
        f"billing report subject:{SUBJECT}\n",
        "tokens",
    )
    crm = access.by_token(token)
    assert crm is not None and crm.name == "crm" and crm.roles == {Role.DECIDE, Role.EVENTS}
    ops = access.by_token("an-admin-token-0123")
    assert ops is not None and ops.roles == {Role.ADMIN}
    assert access.by_token(WRONG) is None
    billing = access.by_subject(SUBJECT)
    assert billing is not None and billing.name == SUBJECT and billing.roles == {Role.REPORT}


def test_bad_entries_are_each_named_without_the_secret() -> None:
    secret = "s3cr3t-but-short"[:10]
    text = "\n".join(
        [
            f"crm decide token:{secret}",
            "crm decide",
            f"crm decide,superuser token:{TOKENS[Role.DECIDE]}",
            "crm decide sha256:abc",
            f"crm decide password:{TOKENS[Role.EVENTS]}",
            f"crm! decide token:{TOKENS[Role.REPORT]}",
        ]
    )
    with pytest.raises(AuthConfigError) as info:
        parse_access(text, "tokens.txt")
    message = str(info.value)
    for number in range(1, 7):
        assert f"tokens.txt:{number}:" in message
    assert "16 or more characters" in message and "unknown role 'superuser'" in message
    for leaked in (secret, TOKENS[Role.DECIDE], TOKENS[Role.EVENTS], TOKENS[Role.REPORT]):
        assert leaked not in message


def test_one_credential_cannot_name_two_callers() -> None:
    token = TOKENS[Role.DECIDE]
    with pytest.raises(AuthConfigError, match="tokens:2: the same credential already names 'a'"):
        parse_access(f"a decide token:{token}\nb admin token:{token}", "tokens")


def test_inline_tokens_are_separated_by_semicolons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "NEXTBEST_TOKENS", f"a decide token:{TOKENS[Role.DECIDE]}; b admin token:{TOKENS[Role.ADMIN]}"
    )
    settings = Settings()
    assert settings.tokens is not None
    assert TOKENS[Role.DECIDE] not in repr(settings)  # a secret in Settings stays out of reprs
    access = AccessControl(settings.tokens.get_secret_value(), None).current
    assert {
        p.name for p in (access.by_token(TOKENS[Role.DECIDE]), access.by_token(TOKENS[Role.ADMIN])) if p
    } == {
        "a",
        "b",
    }


def test_client_refuses_a_token_with_spaces() -> None:
    with pytest.raises(ValueError, match="no spaces"):
        NextbestClient("127.0.0.1:1", token="two words")


@pytest.mark.slow
def test_sighup_reloads_tokens_in_every_process(tmp_path: Path) -> None:
    """`nextbest serve --processes 2`: SIGHUP to the supervisor reaches each server (it used to end the
    supervisor), and a rotated token works whichever process answers."""
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    path = _tokens_file(tmp_path / "tokens", {}, extra=f"a decide token:{old}\n")
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "nextbest", "serve", "--port", str(port), "--processes", "2"]
    command += ["--database-url", f"sqlite:///{tmp_path}/p.db", "--tokens-file", str(path)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count("nextbest serving") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        _tokens_file(path, {}, extra=f"a decide token:{old}\nb decide token:{new}\n")
        proc.send_signal(signal.SIGHUP)
        while log.read_text().count("tokens reloaded") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        for _ in range(6):  # one connection each, so the kernel spreads them over the processes
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert (
                    _call(channel, "/nextbest.api.v1.DecisionService/NextAction", new) is grpc.StatusCode.OK
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert new not in log.read_text() and old not in log.read_text()


def test_client_settings_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["simulate", "--token-file", str(tmp_path / "token")]) == 2
    assert "give --target too" in capsys.readouterr().err
    assert main(["simulate", "--target", "127.0.0.1:1", "--token-file", str(tmp_path / "missing")]) == 2
    assert "cannot read --token-file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs both --tls-client-cert and --tls-client-key"):
        NextbestClient.from_settings("127.0.0.1:1", Settings(tls_client_cert=tmp_path / "c.crt"))
