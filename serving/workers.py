"""`--workers N`: N serving processes behind the same ports, run by one supervisor.

Why processes: one Python process is bound by its one event loop long before the CPU is
(docs/serving.md, Throughput). Each worker is a whole server (serving.server.DigitServer:
its own event loop, batcher and ONNX Runtime session, sized to its share of the cores)
listening on the same gRPC and HTTP ports with SO_REUSEPORT, so the kernel spreads new
connections over the workers. A connection stays on its worker: one gRPC channel is served
by one process; many clients (or channels) spread over all of them.

The supervisor binds the ports first (so `--port 0` gives every worker the same port, and a
port taken by something else is one line before any worker starts), starts the workers,
serves the aggregated Prometheus metrics (prometheus_client's multiprocess mode) and:
- says "server started" once every worker serves; health is SERVING only while every
  worker serves (each worker reads the others' states from shared memory);
- forwards SIGTERM/SIGINT to every worker, which drains as one server does, and exits 0 when
  every worker did;
- restarts a worker that dies while serving; a worker that fails before it ever served
  (a model that cannot load, say) stops the whole server with that worker's one-line error.
The limits that bound the server's work (in-flight requests and bytes, queue capacity) are
split between the workers, so the server as a whole keeps the configured limits.
"""

import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from prometheus_client import multiprocess

from common.cli import UserError
from common.cpu import share_of_cores, usable_cores
from serving.config import ServerConfig
from serving.logs import configure_logging
from serving.metrics import serve_multiprocess_metrics
from serving.peers import WorkerShare
from serving.server import address, check_port_free, check_tls_files, run_server

log = logging.getLogger("serving.workers")

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import
SUPERVISOR_POLL_S = 0.1
STOP_MARGIN_S = 10.0  # beyond the grace period, before a worker that does not exit is killed
RESTART_DELAY_S = 1.0


def visible_gpus() -> int:
    """NVIDIA devices this process may use (device files, narrowed by CUDA_VISIBLE_DEVICES)."""
    devices = [p for p in Path("/dev").glob("nvidia[0-9]*")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return min(len(devices), len([d for d in visible.split(",") if d.strip()]))
    return len(devices)


def auto_workers(config: ServerConfig) -> int:
    """One worker per core on CPU; one in all when a GPU may be used (one device: several
    processes would each hold a copy of the model in its memory and contend for it)."""
    if config.provider != "cpu" and visible_gpus() > 0:
        return 1
    return usable_cores()


def worker_count(config: ServerConfig) -> int:
    return config.workers or auto_workers(config)


def shared(limit: int, count: int) -> int:
    return max(1, math.ceil(limit / count))


def worker_config(config: ServerConfig, count: int, port: int, http_port: int) -> ServerConfig:
    """One worker's settings: the ports the supervisor holds, its share of the cores and of
    the server's limits, and no metrics port (the supervisor serves the metrics)."""
    return replace(
        config,
        port=port,
        http_port=http_port,
        metrics_port=0,
        workers=1,
        intra_op_threads=config.intra_op_threads or share_of_cores(count),
        max_inflight_requests=shared(config.max_inflight_requests, count),
        max_inflight_bytes=max(shared(config.max_inflight_bytes, count), config.max_message_bytes),
        queue_capacity=shared(config.queue_capacity, count),
    )


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to the port with SO_REUSEPORT and never listening: the port stays
    ours (port 0: one the kernel picks) and every worker can bind it too. A port that anyone
    else holds, even with SO_REUSEPORT (another server, say), is refused first."""
    check_port_free(host, port)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError as error:
        holder.close()
        raise UserError(f"cannot listen on {address(host, port)}: {error.strerror}") from None
    return holder


def run_worker(config: ServerConfig, share: WorkerShare) -> None:
    """A worker process's body: one whole server on the shared ports."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards it as SIGTERM
    configure_logging(config.log_format, process=share.name)
    try:
        run_server(config, share)
    except UserError as error:
        share.reports.put(("failed", share.index, str(error)))
        raise SystemExit(2) from None


class Supervisor:
    """Starts, watches, restarts and stops the workers (see the module's docstring)."""

    def __init__(self, count: int, worker_settings: ServerConfig):
        self.count = count
        self.worker_settings = worker_settings
        self.context = multiprocessing.get_context("spawn")
        self.serving = self.context.Array("b", count, lock=False)
        self.reports = self.context.SimpleQueue()
        self.stopping = threading.Event()
        self.workers: list = [None] * count

    def start(self) -> None:
        for index in range(self.count):
            self._start_worker(index)

    def _start_worker(self, index: int) -> None:
        share = WorkerShare(index, self.count, self.serving, self.reports)
        process = self.context.Process(target=run_worker, args=(self.worker_settings, share))
        process.start()
        self.workers[index] = process

    def wait_until_serving(self) -> dict:
        """Until every worker's health says SERVING (or SIGTERM/SIGINT came first): what
        worker 0 said when it started. UserError (after stopping the rest) if a worker fails
        or exits first."""
        started: dict[int, dict] = {}  # worker index: what it said once its health was SERVING
        while len(started) < self.count and not self.stopping.is_set():
            while not self.reports.empty():
                kind, index, details = self.reports.get()
                if kind == "failed":
                    self.stop_all(grace=0.0)
                    raise UserError(f"worker {index}: {details}")
                started[index] = details
            for index, process in enumerate(self.workers):
                if not process.is_alive():
                    self.stop_all(grace=0.0)
                    raise UserError(f"worker {index} exited with {process.exitcode} before serving")
            time.sleep(SUPERVISOR_POLL_S)
        return started.get(0, {})

    def watch(self, metrics_dir: Path) -> None:
        """Until SIGTERM/SIGINT: restart workers that die (their reports are not awaited)."""
        while not self.stopping.is_set():
            sentinels = [process.sentinel for process in self.workers]
            multiprocessing.connection.wait(sentinels, timeout=SUPERVISOR_POLL_S)
            while not self.reports.empty():
                self.reports.get()
            for index, process in enumerate(self.workers):
                if process.is_alive() or self.stopping.is_set():
                    continue
                self.serving[index] = 0
                multiprocess.mark_process_dead(process.pid, str(metrics_dir))
                log.error(
                    "worker died; restarting it",
                    extra={"worker": index, "pid": process.pid, "exit_code": process.exitcode},
                )
                time.sleep(RESTART_DELAY_S)
                self._start_worker(index)

    def stop_all(self, grace: float) -> list[int | None]:
        """SIGTERM to every worker; each drains for `grace` s; then the exit codes."""
        for process in self.workers:
            if process is not None and process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace + STOP_MARGIN_S
        for process in self.workers:
            if process is None:
                continue
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker did not stop in time; killed", extra={"pid": process.pid})
                process.kill()
                process.join()
        return [None if process is None else process.exitcode for process in self.workers]

    def stopped_counts(self) -> dict[str, int]:
        """Every worker's request counts at its stop, added up (after stop_all)."""
        totals: dict[str, int] = {}
        while not self.reports.empty():
            kind, _, counts = self.reports.get()
            if kind == "stopped":
                for name, value in counts.items():
                    totals[name] = totals.get(name, 0) + value
        return totals

    def pids(self) -> list[int]:
        return [process.pid for process in self.workers]


def serve_workers(config: ServerConfig, count: int) -> int:
    """Run `count` workers until SIGTERM/SIGINT; the exit status (0: every worker drained)."""
    if config.tls_cert is not None:
        check_tls_files(config)
    holders = [reserve_port(config.host, config.port)]
    if config.http_port:
        holders.append(reserve_port(config.host, config.http_port))
    ports = [holder.getsockname()[1] for holder in holders]
    metrics_dir = Path(tempfile.mkdtemp(prefix="digits-metrics-"))
    os.environ[METRICS_DIR_VARIABLE] = str(metrics_dir)  # inherited by the workers
    settings = worker_config(config, count, ports[0], ports[1] if config.http_port else 0)
    supervisor = Supervisor(count, settings)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: supervisor.stopping.set())
    metrics_http = None
    try:
        supervisor.start()
        if config.metrics_port:
            metrics_http = serve_multiprocess_metrics(
                metrics_dir, config.host, config.metrics_port, supervisor.pids
            )
        started = supervisor.wait_until_serving()
        started.update(
            metrics_port=None if metrics_http is None else metrics_http.server_port,
            workers=count,
            pids=supervisor.pids(),
        )
        if not supervisor.stopping.is_set():
            log.info("server started", extra=started)
            supervisor.watch(metrics_dir)
        log.info("shutting down", extra={"grace_seconds": config.grace_seconds})
        codes = supervisor.stop_all(config.grace_seconds)
        log.info(
            "server stopped", extra={**supervisor.stopped_counts(), "worker_exit_codes": codes}
        )
        return 0 if all(code == 0 for code in codes) else 1
    finally:
        supervisor.stop_all(0.0)
        if metrics_http is not None:
            metrics_http.shutdown()
            metrics_http.server_close()
        for holder in holders:
            holder.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
