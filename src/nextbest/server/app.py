"""Assembles the gRPC server: DecisionService, health, reflection and the error interceptor."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nextbest.api.v1 import admin_service_pb2 as admin_pb
from nextbest.api.v1 import admin_service_pb2_grpc as admin_grpc
from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.catalog import load_catalog
from nextbest.decision.engine import DecisionEngine, utc_now
from nextbest.errors import CatalogError, StoreUnavailableError
from nextbest.models.compiled import ForestCompiler
from nextbest.models.registry import ModelRegistry, ModelSet, ModelState
from nextbest.server.auth import AccessControl, AuthInterceptor, describe
from nextbest.server.interceptors import AdmissionInterceptor, ErrorInterceptor, ShedInterceptor
from nextbest.server.metrics import Metrics, MetricsInterceptor
from nextbest.server.servicer import AdminServicer, DecisionServicer
from nextbest.server.startup import bind_error, require_schema, wait_for_database
from nextbest.server.tls import auth_configured, check_exposure, is_loopback, server_credentials
from nextbest.settings import Settings
from nextbest.store import Database, Store, upgrade
from nextbest.store.erasure import Erasure

__all__ = ["ADMIN_SERVICE_NAME", "MODEL_HEALTH_PREFIX", "SERVICE_NAME", "NextbestServer"]

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
ADMIN_SERVICE_NAME = admin_pb.DESCRIPTOR.services_by_name["AdminService"].full_name
MODEL_HEALTH_PREFIX = "nextbest.models."
_MAX_MESSAGE = 4 * 1024 * 1024
_SPARE_THREADS = 8


class NextbestServer:
    """A running nextbest: ``start()``, then ``stop()``. ``port`` is the bound port (useful with port 0)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Access control first: a server that would be open, or whose tokens or certificates are
        # unusable, refuses before it touches the database.
        check_exposure(settings)
        tokens = settings.tokens.get_secret_value() if settings.tokens is not None else None
        self.access = AccessControl(tokens, settings.tokens_file) if auth_configured(settings) else None
        credentials = server_credentials(settings)
        catalog = load_catalog(settings.catalog)  # fails fast with every catalog problem
        db = Database(
            settings.database_url,
            pool_size=settings.workers,
            connect_timeout=settings.database_connect_timeout,
            statement_timeout=settings.database_statement_timeout,
        )
        answered = wait_for_database(db, settings.database_wait, required=settings.migrate)
        if settings.migrate:
            upgrade(db)
        elif answered:
            require_schema(db)
        self.store = Store(db, max_batch=settings.max_batch, ids=settings.customer_ids())
        compiler = ForestCompiler(settings.model_cache_dir) if settings.compiled_scoring else None
        self.models = ModelRegistry(settings.models_dir, compiler)
        self.engine = DecisionEngine(catalog, self.store, models=self.models)
        self._experiments_checked = False
        try:
            self._check_experiments()
        except StoreUnavailableError:
            logger.warning("database unreachable at start; experiments will be checked once it answers")
        except CatalogError:
            self.store.close()
            raise
        self._health = health.HealthServicer()
        self._set_health(False)
        self.metrics = Metrics()
        self._publish_models(self.models.current)
        limit = settings.max_concurrent or settings.workers
        admission = AdmissionInterceptor(limit)
        refused = self.metrics.calls
        #: What gRPC runs around every call, outermost first.
        self.interceptors: list[grpc.ServerInterceptor] = [
            ShedInterceptor(admission, lambda method: refused.labels(method, "RESOURCE_EXHAUSTED").inc()),
            MetricsInterceptor(self.metrics),
            *self._auth(),
            ErrorInterceptor(),
            admission,
        ]
        # Several processes may share the port (--processes); a lone server must own it.
        reuse_port = ("grpc.so_reuseport", int(settings.processes > 1))
        self._server = grpc.server(
            # Threads beyond the admission limit: health and refusals never wait behind decisions.
            # Threads for the streams (campaign runs) too: they never take a decision's thread.
            ThreadPoolExecutor(
                max_workers=limit + admission.stream_limit + _SPARE_THREADS, thread_name_prefix="nextbest-rpc"
            ),
            # Metrics outermost, so it sees the status the error interceptor settled on; admission
            # inside the error interceptor, which turns its refusals into statuses.
            interceptors=self.interceptors,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                reuse_port,
            ],
            # With health on a port of its own, gRPC refuses a call beyond the limit itself
            # (RESOURCE_EXHAUSTED) before any interceptor, decoding or thread: the cheapest refusal.
            # It counts every call on this port, health's included, hence only then.
            # Streams included: a campaign run must not take the place of a decision call there either.
            maximum_concurrent_rpcs=limit + admission.stream_limit
            if settings.health_port is not None
            else None,
        )
        self._health_server = self._own_health_server(reuse_port)
        self.decisions = DecisionServicer(self.engine, db)
        pb_grpc.add_DecisionServiceServicer_to_server(self.decisions, self._server)
        admin_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(
                self.reload_models,
                lambda: self.models.current,
                str(settings.models_dir or ""),
                Erasure(db, self.store.ids),
                engine=self.engine,
            ),
            self._server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if settings.reflection:
            reflection.enable_server_reflection(
                (
                    SERVICE_NAME,
                    ADMIN_SERVICE_NAME,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                self._server,
            )
        self.port, self.health_port = self._bind(credentials)
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._watch_database, name="nextbest-health", daemon=True)
        self._recounter = threading.Thread(target=self._recount_experiments, name="nextbest-srm", daemon=True)

    def _own_health_server(self, reuse_port: tuple[str, int]) -> grpc.Server | None:
        """Health alone, on its own threads and port (``--health-port``): a probe never queues behind
        decisions or meets the limit. Plaintext: it tells only whether the server is serving (and
        kubelet's gRPC probe speaks no TLS)."""
        if self.settings.health_port is None:
            return None
        server = grpc.server(
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="nextbest-health"), options=[reuse_port]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        return server

    def _bind(self, credentials: grpc.ServerCredentials | None) -> tuple[int, int | None]:
        """Binds the service port (and the health port): a one-line error, not grpc's "Failed to bind"."""
        settings = self.settings
        bind = f"{settings.host}:{settings.port}"
        try:
            port = (
                self._server.add_secure_port(bind, credentials)
                if credentials is not None
                else self._server.add_insecure_port(bind)
            )
            if port == 0:
                raise RuntimeError("port 0 returned")
            if self._health_server is None:
                return port, None
            bind = f"{settings.host}:{settings.health_port}"
            health_port = self._health_server.add_insecure_port(bind)
        except RuntimeError as exc:  # grpc's "Failed to bind", with no reason
            self.store.close()
            raise bind_error(bind, exc) from exc
        return port, health_port

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def _auth(self) -> list[AuthInterceptor]:
        # Outside the error interceptor, so a refused caller never reaches the handler, and outside
        # admission control, so it never takes a slot.
        return [] if self.access is None else [AuthInterceptor(self.access)]

    def reload_access(self) -> None:
        """Reads the tokens file again (SIGHUP); the previous tokens stay if the new file is bad."""
        if self.access is not None:
            self.access.reload()

    def start(self) -> None:
        if self._health_server is not None:
            self._health_server.start()
            logger.info(
                "health on %s:%d (plaintext, grpc.health.v1 only)", self.settings.host, self.health_port
            )
        self._server.start()
        if self.access is not None:
            self.access.start()
            names = ", ".join(describe(self.access.current)) or "nobody yet"
            logger.info("authentication on; callers: %s", names)
            if self.settings.tls_cert is None and not is_loopback(self.settings.host):
                logger.warning(
                    "tokens travel in clear text on %s: give the port TLS (--tls-cert)", self.address
                )
        elif not is_loopback(self.settings.host):
            logger.warning("serving %s OPEN to anyone who reaches it (--insecure-open)", self.address)
        self._monitor.start()
        if self.settings.metrics_port is not None:
            self.metrics.serve(self.settings.host, self.settings.metrics_port)
            self._recounter.start()
            logger.info("metrics on http://%s:%d/metrics", self.settings.host, self.settings.metrics_port)
        logger.info(
            "nextbest serving on %s (catalog %s version %s, %s)",
            self.address,
            self.settings.catalog,
            self.engine.catalog.version,
            self.store.db.dialect,
        )

    def wait(self) -> None:
        self._server.wait_for_termination()

    def stop(self, grace: float | None = None) -> None:
        """Stops taking calls, lets in-flight ones finish, then flushes the writer and closes the store."""
        self._stopping.set()
        if self.access is not None:
            self.access.stop()
        self._health.enter_graceful_shutdown()
        self._server.stop(self.settings.grace if grace is None else grace).wait()
        if self._health_server is not None:
            self._health_server.stop(0).wait()
        self.store.close()
        logger.info("nextbest stopped")

    def reload_models(self) -> ModelSet:
        """Loads the promoted models again (admin RPC, SIGHUP) and swaps them in."""
        models = self.models.reload()
        self._publish_models(models)
        return models

    def _publish_models(self, models: ModelSet) -> None:
        """Per-model health (``nextbest.models.<kind>``: SERVING when loaded, NOT_SERVING when corrupt or
        incompatible, SERVICE_UNKNOWN when none is promoted) and the metric. The service itself stays
        SERVING: its decisions fall back."""
        for status in models.statuses:
            name = f"{MODEL_HEALTH_PREFIX}{status.kind.value}"
            if status.state is ModelState.LOADED:
                self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
            elif status.state is ModelState.MISSING:
                self._health.set(name, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            else:
                self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.metrics.observe_models(models)

    def _recount_experiments(self) -> None:
        while not self._stopping.is_set():
            try:
                self.metrics.refresh_experiments(self.engine.catalog, self.store)
            except StoreUnavailableError:
                logger.warning("cannot recount experiment units: database unavailable")
            self._stopping.wait(self.settings.metrics_interval)

    def _check_experiments(self) -> None:
        """Refuses a catalog that changed a running experiment (see ``Store.register_experiments``)."""
        catalog = self.engine.catalog
        if catalog.experiments:
            problems = self.store.register_experiments(catalog.experiments, utc_now())
            if problems:
                raise CatalogError([f"{catalog.source}: {p}" for p in problems])
        self._experiments_checked = True

    def _watch_database(self) -> None:
        """SERVING only while the database answers and the catalog's experiments passed their check."""
        healthy: bool | None = None
        write_failures = self.store.db.health.began_failing
        while not self._stopping.is_set():
            try:
                # Answers in time and, while writes fail (a full disk), takes one.
                self.store.db.check(self.settings.database_connect_timeout)
                if not self._experiments_checked:
                    self._check_experiments()
                ok = True
            except StoreUnavailableError:
                ok = False
            except CatalogError as exc:
                logger.error("refusing to serve: %s", exc)
                ok = False
            if ok != healthy:
                healthy = ok
                self._set_health(ok)
                if not ok:
                    logger.warning("database unreachable; reporting NOT_SERVING")
            # The next check comes after the interval, or at once when a write fails for want of the
            # database (a full disk): health turns NOT_SERVING with the first failed write, not a poll later.
            if write_failures.wait(self.settings.health_interval):
                write_failures.clear()

    def _set_health(self, ok: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            self._health.set(service, status)
