"""The edge (`nextbest edge`, nginx in front of the server): refusals beyond the limit in nginx, deadlines,
tokens and metadata passed through, the other services never limited, an absent server told apart from
a busy one, and the command's errors. The nginx tests need nginx (`.ci/run` installs Debian's nginx-light)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from nextbest.client import NextbestClient
from nextbest.server import NextbestServer
from nextbest.server.edge import (
    EDGE_RECEIVED_HEADER,
    REFUSAL,
    UNREACHABLE,
    Edge,
    EdgeConfig,
    EdgeError,
    find_nginx,
    render_config,
    server_authenticates,
)
from nextbest.server.process import HOST, free_port
from tests.conftest import uid
from tests.server.certs import Authority

NGINX = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx") or None
needs_nginx = pytest.mark.skipif(not NGINX, reason="nginx is not installed (apt-get install nginx-light)")

DECIDE = "/nextbest.api.v1.DecisionService/NextAction"
ERASE = "/nextbest.api.v1.AdminService/EraseCustomer"


class Upstream:
    """A stand-in server: each call holds its slot for the seconds its request body says, and records
    what reached it (method, metadata, time remaining)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers([self])
        self.port = self.server.add_insecure_port(f"{HOST}:0")
        self.server.start()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.seen.append(
                    {
                        "method": method,
                        "metadata": dict(context.invocation_metadata()),
                        "remaining": context.time_remaining(),
                    }
                )
            time.sleep(float(request.decode() or 0))
            return b"done"

        return grpc.unary_unary_rpc_method_handler(handle)

    def stop(self) -> None:
        self.server.stop(0)


def call(channel: grpc.Channel, method: str, hold: float = 0.0, **kwargs: Any) -> bytes:
    stub = channel.unary_unary(method)
    result: bytes = stub(str(hold).encode(), **kwargs)
    return result


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.stop()


@pytest.fixture
def edge(upstream: Upstream, tmp_path: Path) -> Iterator[Edge]:
    with Edge(EdgeConfig(f"{HOST}:{free_port()}", f"{HOST}:{upstream.port}", 1), tmp_path / "edge") as e:
        yield e


@needs_nginx
def test_a_call_beyond_the_limit_is_refused_by_nginx_and_never_reaches_the_server(
    upstream: Upstream, edge: Edge
) -> None:
    with grpc.insecure_channel(edge.config.listen) as channel:
        holder = channel.unary_unary(DECIDE).future(b"1.0", timeout=5)
        deadline = time.monotonic() + 3
        while not upstream.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(upstream.seen) == 1  # the first call holds the only slot
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            call(channel, DECIDE, timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details() == REFUSAL
        assert time.monotonic() - started < 0.5  # at once, not after the holder
        # Other services are not limited by the decisions' load: an erasure passes while the slot is held.
        assert call(channel, ERASE, timeout=5) == b"done"
        assert holder.result() == b"done"
        # The slot is free again.
        assert call(channel, DECIDE, timeout=5) == b"done"
    assert [s["method"] for s in upstream.seen] == [DECIDE, ERASE, DECIDE]


@needs_nginx
def test_long_lived_connections_stay_open_past_a_thousand_calls(upstream: Upstream, edge: Edge) -> None:
    """nginx closes a keep-alive connection after 1,000 requests by default (``keepalive_requests``),
    the callers' and its own to the server: a caller's channel would be sent GOAWAY every 1,000 calls
    and reconnect, and calls in flight at that moment stall (seen at ~2,900 calls/s as whole seconds
    without an answer). The edge keeps both open (its connections to the server are nginx's to manage:
    how many it opens depends on when each is back in its cache, so only the caller's is checked)."""
    states: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(edge.config.listen) as channel:
        channel.subscribe(states.append, try_to_connect=True)
        decide = channel.unary_unary(DECIDE)
        for _ in range(3_300):
            decide(b"0", timeout=5)
        channel.unsubscribe(states.append)
    ready = states.index(grpc.ChannelConnectivity.READY)
    assert set(states[ready:]) == {grpc.ChannelConnectivity.READY}, states  # never sent away
    assert len(upstream.seen) == 3_300


@needs_nginx
def test_deadline_token_and_metadata_reach_the_server(upstream: Upstream, edge: Edge) -> None:
    with grpc.insecure_channel(edge.config.listen) as channel:
        call(
            channel,
            DECIDE,
            timeout=2.0,
            metadata=[
                ("authorization", "Bearer s3cret"),
                ("x-request-origin", "checkout"),
                (EDGE_RECEIVED_HEADER, "1"),  # a caller's own stamp is replaced by the edge's
            ],
        )
    seen = upstream.seen[-1]
    assert seen["metadata"]["authorization"] == "Bearer s3cret"
    assert seen["metadata"]["x-request-origin"] == "checkout"
    # Stamped with the edge's clock when it passed the call on (nginx's $msec: seconds, 3 decimals).
    assert abs(float(seen["metadata"][EDGE_RECEIVED_HEADER]) - time.time()) < 5, seen
    # grpc-timeout is forwarded: the server knows the caller's deadline and can refuse to commit past it.
    # (Without it the server would see no deadline at all: time_remaining() is None.)
    # (gRPC rounds the header's time left up, to 10 ms here: up to 2.01 s is read back.)
    assert seen["remaining"] is not None and 0 < seen["remaining"] <= 2.05, seen


@needs_nginx
def test_a_server_that_does_not_answer_is_unavailable_not_overloaded(tmp_path: Path) -> None:
    with (
        Edge(EdgeConfig(f"{HOST}:{free_port()}", f"{HOST}:{free_port()}", 2), tmp_path) as edge,
        grpc.insecure_channel(edge.config.listen) as channel,
    ):
        for method in (DECIDE, ERASE):
            with pytest.raises(grpc.RpcError) as down:
                call(channel, method, timeout=5)
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
            assert down.value.details() == UNREACHABLE


@needs_nginx
def test_a_real_decision_through_the_edge(server: NextbestServer, tmp_path: Path) -> None:
    config = EdgeConfig(f"{HOST}:{free_port()}", server.address, 4)
    with Edge(config, tmp_path) as edge, NextbestClient(edge.config.listen, timeout=10.0) as client:
        user, request_id = uid("edge"), uid("request")
        response = client.next_action(user, "cart_abandoned", cart_value=80.0, request_id=request_id)
        assert response.decision_id
        # The same request again, through the edge, is the same decision (idempotency is the server's).
        again = client.next_action(user, "cart_abandoned", cart_value=80.0, request_id=request_id)
        assert again.decision_id == response.decision_id
        with pytest.raises(grpc.RpcError) as bad:
            client.next_action("", "cart_abandoned")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "user_id" in (bad.value.details() or "")


@needs_nginx
def test_stop_ends_only_its_own_nginx_and_a_busy_port_is_a_clear_error(
    upstream: Upstream, tmp_path: Path
) -> None:
    listen = f"{HOST}:{free_port()}"
    first = Edge(EdgeConfig(listen, f"{HOST}:{upstream.port}", 1), tmp_path / "a").start()
    try:
        with pytest.raises(EdgeError, match="cannot be used"):
            Edge(EdgeConfig(listen, f"{HOST}:{upstream.port}", 1), tmp_path / "b").start()
        with grpc.insecure_channel(listen) as channel:  # the first still serves
            assert call(channel, DECIDE, timeout=5) == b"done"
        proc = first.proc
        assert proc is not None
    finally:
        first.stop()
    assert proc.poll() is not None


@needs_nginx
def test_tls_at_the_edge(upstream: Upstream, tmp_path: Path) -> None:
    ca = Authority(tmp_path / "ca", "edge-test-ca")
    pem = ca.issue("localhost", server=True)
    config = EdgeConfig(
        f"{HOST}:{free_port()}", f"{HOST}:{upstream.port}", 1, tls_cert=pem.cert, tls_key=pem.key
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.pem.cert.read_bytes())
    with Edge(config, tmp_path / "edge") as edge:
        with grpc.secure_channel(edge.config.listen, credentials) as channel:
            assert call(channel, DECIDE, timeout=5) == b"done"
        with grpc.insecure_channel(edge.config.listen) as plain, pytest.raises(grpc.RpcError):
            call(plain, DECIDE, timeout=2)  # plaintext is not accepted on a TLS edge


def test_the_configuration_names_the_limit_and_nginx_accepts_it(tmp_path: Path) -> None:
    text = render_config(EdgeConfig("0.0.0.0:50050", "127.0.0.1:50051", 6, workers=2), tmp_path)
    assert "server 127.0.0.1:50051 max_conns=6 max_fails=0;" in text
    assert "listen 0.0.0.0:50050 http2;" in text
    assert "zone nextbest_decisions" in text  # the limit is shared by the workers
    if NGINX:
        (tmp_path / "body").mkdir()
        (tmp_path / "nginx.conf").write_text(text)
        done = subprocess.run(
            [NGINX, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"listen": "50050"}, "listen: '50050' is not host:port"),
        ({"listen": "127.0.0.1:99999"}, "listen: '127.0.0.1:99999' is not host:port"),
        ({"upstream": "127.0.0.1:1;evil"}, "upstream: '127.0.0.1:1;evil' is not host:port"),
        ({"max_concurrent": 0}, "max_concurrent: 0 is not between 1 and 4096"),
        ({"workers": 0}, "workers: 0 is not between 1 and 64"),
        ({"tls_cert": Path("a.pem")}, "tls_cert and tls_key: give both"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"listen": "127.0.0.1:50050", "upstream": "127.0.0.1:50051", "max_concurrent": 4}
    with pytest.raises(EdgeError, match=message.replace("(", r"\(")):
        EdgeConfig(**{**base, **kwargs})


def test_a_missing_nginx_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(EdgeError, match="is not an executable file"):
        find_nginx(str(tmp_path / "nginx"))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nextbest", "edge", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_edge_command_prints_the_configuration_and_refuses_bad_input(tmp_path: Path) -> None:
    printed = run_cli("--listen", "0.0.0.0:50050", "--max-concurrent", "3", "--print")
    assert printed.returncode == 0, printed.stderr
    assert "max_conns=3" in printed.stdout
    bad = run_cli("--listen", "nowhere", "--print")
    assert bad.returncode == 2
    assert "listen: 'nowhere' is not host:port" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = run_cli("--listen", "127.0.0.1:50050", "--tls-cert", "x.pem", "--tls-key", "y.pem")
    assert missing.returncode == 2
    assert "--tls-cert x.pem: no such file" in missing.stderr
    no_nginx = run_cli("--listen", f"{HOST}:{free_port()}", "--nginx", str(tmp_path / "nginx"))
    assert no_nginx.returncode == 2
    assert "is not an executable file" in no_nginx.stderr


def test_a_public_edge_needs_a_server_that_authenticates(server: NextbestServer) -> None:
    assert server_authenticates(server.address) is False  # the test server has no tokens
    refused = run_cli("--listen", f"0.0.0.0:{free_port()}", "--upstream", server.address)
    assert refused.returncode == 2
    assert "does not authenticate callers" in refused.stderr
    assert "--insecure-open" in refused.stderr


def test_the_authentication_probe_reads_the_servers_answer() -> None:
    def deny(_request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")

    locked = grpc.server(ThreadPoolExecutor(max_workers=2))
    locked.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "nextbest.api.v1.DecisionService", {"NextAction": grpc.unary_unary_rpc_method_handler(deny)}
            )
        ]
    )
    port = locked.add_insecure_port(f"{HOST}:0")
    locked.start()
    try:
        assert server_authenticates(f"{HOST}:{port}") is True
    finally:
        locked.stop(0)
    with pytest.raises(EdgeError, match="no nextbest server answers"):
        server_authenticates(f"{HOST}:{free_port()}", timeout=0.5)


@needs_nginx
def test_edge_command_serves_until_sigterm_then_stops_its_nginx(upstream: Upstream, tmp_path: Path) -> None:
    import signal

    listen = f"{HOST}:{free_port()}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nextbest",
            "edge",
            "--listen",
            listen,
            "--upstream",
            f"{HOST}:{upstream.port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once nginx accepts connections
        assert f"nextbest edge on {listen}" in line, proc.stderr.read() if proc.stderr else ""
        nginx_pid = int(line.split("pid ")[1].split(",")[0])
        with grpc.insecure_channel(listen) as channel:
            assert call(channel, DECIDE, timeout=5) == b"done"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (
        not Path(f"/proc/{nginx_pid}").exists() or "zombie" in Path(f"/proc/{nginx_pid}/status").read_text()
    )
