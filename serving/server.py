"""The gRPC server: classifier + health + reflection + metrics, started and stopped cleanly."""

import asyncio
import logging
import signal
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from common.cli import UserError
from common.cpu import share_of_cores
from protos.digits.v1 import digits_pb2_grpc
from protos.inference import grpc_service_pb2, grpc_service_pb2_grpc
from serving.admission import Admission
from serving.config import ServerConfig
from serving.healthcheck import SERVICE_NAME
from serving.http_api import HttpApi
from serving.inference_protocol import InferenceService
from serving.memory import malloc_trim, trim_after_bursts
from serving.metrics import ServerMetrics
from serving.peers import WorkerShare
from serving.registry import ModelRegistry
from serving.request_parsing import RequestParsingServer
from serving.service import DigitClassifierService

log = logging.getLogger("serving.server")

OIP_SERVICE_NAME = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_NAMES = ("", SERVICE_NAME)
# One batch per model version runs at a time; two threads let two models overlap.
INFERENCE_THREADS = 2
PEERS_POLL_S = 0.25  # how often a worker looks at the other workers' states


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port_free(host: str, port: int) -> None:
    """Fail with one line before gRPC core logs its own bind error."""
    if port == 0:
        return
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        raise UserError(f"cannot listen on {address(host, port)}: {error.strerror}") from None


def check_tls_files(config: ServerConfig) -> None:
    """Name the TLS file that is wrong, and how, before gRPC refuses it with no reason."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=config.tls_cert)
    except ssl.SSLError:
        raise UserError(f"--tls-cert {config.tls_cert}: no PEM certificate in it") from None
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            raise UserError(
                f"--tls-key {config.tls_key} does not match the certificate in {config.tls_cert}"
            ) from None
        raise UserError(
            f"--tls-key {config.tls_key}: not an unencrypted PEM private key ({error.reason})"
        ) from None
    if config.tls_client_ca is not None:
        try:
            context.load_verify_locations(cafile=config.tls_client_ca)
        except ssl.SSLError:
            raise UserError(
                f"--tls-client-ca {config.tls_client_ca}: no PEM CA certificate in it"
            ) from None


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS when a certificate is given; with --tls-client-ca, clients must present a
    certificate signed by that CA (mTLS)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    check_tls_files(config)
    client_ca = config.tls_client_ca
    return grpc.ssl_server_credentials(
        [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
        root_certificates=None if client_ca is None else client_ca.read_bytes(),
        require_client_auth=client_ca is not None,
    )


def http_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The same certificate (and client CA, for mTLS) on the HTTP port as on gRPC (whose
    set-up, earlier in start(), checked the files)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=config.tls_client_ca)
    return context


def server_options(config: ServerConfig, shared_port: bool) -> list[tuple[str, int]]:
    """gRPC core options: message limits, and a bounded connection age for load balancing.
    The port is shared only between the workers of one server (serving/workers.py); else a
    port in use is an error, not a shared port."""
    limit = config.max_message_bytes
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", int(shared_port)),
    ]
    if config.max_connection_age_seconds > 0:
        # Long-lived clients reconnect (after in-flight calls finish within the grace period)
        # and so spread over pods that an autoscaler added since they first connected.
        age_ms = int(config.max_connection_age_seconds * 1000)
        options += [
            ("grpc.max_connection_age_ms", age_ms),
            ("grpc.max_connection_age_grace_ms", int(config.grace_seconds * 1000)),
        ]
    return options


class DigitServer:
    """Everything one serving process runs; start() and stop() from inside an event loop.
    With `share`, it is one of several workers on the same ports (serving/workers.py)."""

    def __init__(self, config: ServerConfig, share: WorkerShare | None = None):
        self.config = config
        self.share = share
        self.metrics = ServerMetrics()
        # decoding threads: the cores this process may use, or this worker's share of them
        self.decode_workers = share_of_cores(1 if share is None else share.count)
        self.decode_executor = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode")
        self.inference_executor = ThreadPoolExecutor(INFERENCE_THREADS, thread_name_prefix="infer")
        self.registry = ModelRegistry(config, self.metrics, self.inference_executor)
        self.admission = Admission(config.max_inflight_bytes)
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self.http: HttpApi | None = None
        self.service: DigitClassifierService | None = None  # digits.v1, once start() built it
        self._server: grpc.aio.Server | None = None
        self._metrics_http = None
        self._watch: asyncio.Task | None = None
        self._trim: asyncio.Task | None = None
        self._peers: asyncio.Task | None = None

    def _build_grpc_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(
            options=server_options(self.config, shared_port=self.share is not None),
            # calls beyond this are answered RESOURCE_EXHAUSTED before their message is read
            maximum_concurrent_rpcs=self.config.max_inflight_requests,
        )
        self.service = DigitClassifierService(
            self.config,
            self.registry,
            self.metrics,
            self.admission,
            self.decode_executor,
            self.decode_workers,
        )
        parsing = RequestParsingServer(server, self.admission)  # every service's requests
        digits_pb2_grpc.add_DigitClassifierServicer_to_server(self.service, parsing)
        inference = InferenceService(self.service, self.serving)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(inference, parsing)
        self.http = HttpApi(inference, self.config.max_message_bytes)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, parsing)
        names = (SERVICE_NAME, OIP_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        # enable_server_reflection() would pick the sync servicer for the stand-in server
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(names), parsing
        )
        return server

    def _bind(self, server: grpc.aio.Server) -> int:
        target = address(self.config.host, self.config.port)
        if self.share is None:  # else the supervisor holds the port for its workers
            check_port_free(self.config.host, self.config.port)
        credentials = server_credentials(self.config)
        try:
            if credentials is None:
                return server.add_insecure_port(target)
            return server.add_secure_port(target, credentials)
        except RuntimeError:
            raise UserError(f"cannot listen on {target}") from None

    def _serve_metrics(self) -> None:
        if not self.config.metrics_port:
            return
        try:
            self._metrics_http = self.metrics.serve(self.config.host, self.config.metrics_port)
        except OSError as error:
            raise UserError(
                f"cannot serve metrics on {address(self.config.host, self.config.metrics_port)}: "
                f"{error.strerror}"
            ) from None
        self.metrics_port = self._metrics_http.server_port

    async def _serve_http(self) -> None:
        """The REST API (ready answers 503 until the models are loaded)."""
        if not self.config.http_port:
            return
        shared = self.share is not None
        if not shared:
            check_port_free(self.config.host, self.config.http_port)
        context = http_ssl_context(self.config)
        try:
            self.http_port = await self.http.start(
                self.config.host, self.config.http_port, context, reuse_port=shared
            )
        except OSError as error:
            target = address(self.config.host, self.config.http_port)
            raise UserError(f"cannot listen on {target}: {error.strerror}") from None

    async def start(self) -> int:
        """Bind, answer health checks (NOT_SERVING), load the models, then SERVING."""
        self.registry.check_repository()
        self._server = self._build_grpc_server()
        self.port = self._bind(self._server)
        self._serve_metrics()
        await self._serve_http()
        for name in HEALTH_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()
        await self.registry.load_initial()
        started = self._started_fields()
        if self.share is None:
            await self._set_health(True)
            log.info("server started", extra=started)
        else:  # SERVING once every worker serves; the supervisor says "server started"
            self.share.mark(True)
            self._peers = asyncio.create_task(self._follow_peers(started))
            log.info("worker started", extra=started)
        if self.config.poll_seconds > 0:
            self._watch = asyncio.create_task(self.registry.watch())
        if (trim := malloc_trim()) is not None:
            self._trim = asyncio.create_task(trim_after_bursts(self.admission, trim))
        return self.port

    def serving(self) -> bool:
        """Whether this server answers: its models loaded and, with workers, every worker's."""
        ready = bool(self.registry.model_names()) and not self.admission.closed
        return ready and (self.share is None or self.share.all_serving())

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse
        for name in HEALTH_NAMES:
            await self.health.set(name, status.SERVING if serving else status.NOT_SERVING)

    async def _follow_peers(self, started: dict) -> None:
        """Health follows every worker's state, which the workers share (serving/peers.py).
        The supervisor hears `started` once this worker's health first says SERVING."""
        shown, reported = None, False
        while True:
            if (serving := self.serving()) != shown:
                await self._set_health(serving)
                shown = serving
            if serving and not reported:
                self.share.reports.put(("started", self.share.index, started))
                reported = True
            await asyncio.sleep(PEERS_POLL_S)

    def _started_fields(self) -> dict:
        versions = {
            name: sorted(self.registry.versions(name)) for name in self.registry.model_names()
        }
        return {
            "host": self.config.host,
            "port": self.port,
            "metrics_port": self.metrics_port,
            "http_port": self.http_port,
            "models": self.registry.model_names(),
            "versions": versions,
            "provider": self.registry.provider,
            "batching": self.config.batching,
            "max_batch_size": self.config.max_batch_size,
            "batch_delay_us": self.config.batch_delay_us,
            "tls": self.config.tls_cert is not None,
            "intra_op_threads": self.config.intra_op_threads,
        }

    async def stop(self, grace: float | None) -> None:
        """NOT_SERVING; new requests UNAVAILABLE while the admitted ones finish (up to `grace`
        s in all); then gRPC stops and everything is released."""
        if self.share is not None:
            self.share.mark(False)
        await self.health.enter_graceful_shutdown()
        for task in (self._watch, self._trim, self._peers):
            if task is not None:
                task.cancel()
        limit = None if grace is None else time.monotonic() + grace
        await self.admission.close_and_drain(grace)
        if self._server is not None:
            await self._server.stop(None if limit is None else max(0.0, limit - time.monotonic()))
        if self.http is not None:
            await self.http.stop()
        await self.registry.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self.decode_executor.shutdown(wait=False, cancel_futures=True)
        self.inference_executor.shutdown(wait=True)


def run_server(config: ServerConfig, share: WorkerShare | None = None) -> None:
    """serve() on the configured event loop, until it returns."""
    if config.event_loop == "uvloop":
        uvloop.run(serve(config, share))
    else:
        asyncio.run(serve(config, share))


async def serve(config: ServerConfig, share: WorkerShare | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = DigitServer(config, share)
    try:
        await server.start()
    except BaseException:
        await server.stop(None)
        raise
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": config.grace_seconds})
    await server.stop(config.grace_seconds)
    counts = {
        "requests_admitted": server.admission.admitted,
        "requests_unanswered": server.admission.in_progress,  # 0 unless grace ran out
        "requests_answered_ok": server.metrics.answered("OK"),
    }
    if share is None:
        log.info("server stopped", extra=counts)
    else:  # the supervisor adds up every worker's counts in its "server stopped"
        log.info("worker stopped", extra=counts)
        share.reports.put(("stopped", share.index, counts))
