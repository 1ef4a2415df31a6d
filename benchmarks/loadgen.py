"""Closed-loop gRPC load generator (grpc.aio): `concurrency` callers, each sending its next
request as soon as the previous reply arrives, first for a warm-up, then for a measured window.

Requests are serialised beforehand, so the client spends its time on the transport only;
its CPU time is measured per cell all the same (client and server share the machine).
"""

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from benchmarks.config import CLASSIFY_METHOD, MAX_MESSAGE_BYTES
from benchmarks.server import ServerProbe, server_deltas
from benchmarks.stats import latency_summary
from common.cpu import machine_cpu_times
from protos.digits.v1 import digits_pb2
from serving.client import OWN_CONNECTION

OK = "OK"
BAD_RESPONSE = "BAD_RESPONSE"  # a reply whose prediction count does not match the request
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    OWN_CONNECTION,  # each channel its own connection, for a server with several workers
]


@dataclass(frozen=True)
class Protocol:
    """Which gRPC method the load goes to, and how many images a reply answered."""

    method: str
    answered: Callable[[bytes], int]


DIGITS_V1 = Protocol(
    CLASSIFY_METHOD, lambda reply: len(digits_pb2.ClassifyResponse.FromString(reply).predictions)
)


@dataclass(frozen=True)
class Cell:
    """One measurement: a model driven at one concurrency with one request size."""

    model: str
    concurrency: int
    images_per_request: int
    warmup_s: float
    duration_s: float
    connections: int = 1  # callers spread over this many connections (channels)


@dataclass
class Window:
    """The measured interval on the perf_counter clock; replies completing inside it count."""

    start: float
    end: float


async def caller(
    call: grpc.aio.UnaryUnaryMultiCallable,
    answered: Callable[[bytes], int],
    requests: list[bytes],
    images_per_request: int,
    first: int,
    window: Window,
    timeout_s: float,
    records: list[tuple[float, str]],
) -> None:
    """Send requests back to back until the window ends; record (latency, code) of replies
    that complete inside the window."""
    for index in itertools.count(first):
        start = time.perf_counter()
        if start >= window.end:
            return
        try:
            reply = await call(requests[index % len(requests)], timeout=timeout_s)
            code = OK if answered(reply) == images_per_request else BAD_RESPONSE
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        end = time.perf_counter()
        if window.start <= end <= window.end:
            records.append((end - start, code))


async def run_cell_async(
    target: str,
    cell: Cell,
    requests: list[bytes],
    timeout_s: float = 60.0,
    probe: ServerProbe | None = None,
    protocol: Protocol = DIGITS_V1,
) -> dict:
    """Drive one cell and summarise it (throughput, latency percentiles, errors by code, CPU,
    and what the server reports of its batches when it has a probe)."""
    probe = probe or ServerProbe()
    channels = [
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(cell.connections)
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=timeout_s)
        calls = [channel.unary_unary(protocol.method) for channel in channels]
        now = time.perf_counter()
        window = Window(now + cell.warmup_s, now + cell.warmup_s + cell.duration_s)
        records: list[tuple[float, str]] = []
        tasks = [
            asyncio.create_task(
                caller(
                    calls[k % len(calls)],
                    protocol.answered,
                    requests,
                    cell.images_per_request,
                    k,
                    window,
                    timeout_s,
                    records,
                )
            )
            for k in range(cell.concurrency)
        ]
        await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
        start = (time.process_time(), await asyncio.to_thread(probe.snapshot), machine_cpu_times())
        await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
        end = (time.process_time(), await asyncio.to_thread(probe.snapshot), machine_cpu_times())
        for task in tasks:  # callers still waiting on a reply are abandoned (and cancelled)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return summarise(cell, records, start, end)


def summarise(
    cell: Cell,
    records: list[tuple[float, str]],
    start: tuple[float, dict, tuple[float, float]],
    end: tuple[float, dict, tuple[float, float]],
) -> dict:
    """The cell's figures; CPU as cores busy (seconds per second of the window) for the client
    (this process), the server (its process and workers) and the whole machine."""
    ok_latencies = [latency for latency, code in records if code == OK]
    errors = Counter(code for _, code in records if code != OK)
    client_cpu = end[0] - start[0]
    server = server_deltas(cell.model, start[1], end[1], cell.duration_s)
    images = len(ok_latencies) * cell.images_per_request
    server_cpu = server["server_cpu_s"]
    busy, idle = (e - s for s, e in zip(start[2], end[2], strict=True))
    return {
        "model": cell.model,
        "concurrency": cell.concurrency,
        "images_per_request": cell.images_per_request,
        "warmup_s": cell.warmup_s,
        "duration_s": cell.duration_s,
        "requests": len(records),
        "ok_requests": len(ok_latencies),
        "images_per_s": images / cell.duration_s,
        "requests_per_s": len(ok_latencies) / cell.duration_s,
        "latency_ms": latency_summary(ok_latencies),
        "errors": dict(sorted(errors.items())),
        "client_cpu_s": client_cpu,
        "client_cpu_ms_per_request": 1000 * client_cpu / len(records) if records else None,
        **server,
        "server_cpu_ms_per_request": None
        if server_cpu is None or not records
        else 1000 * server_cpu / len(records),
        "client_cores": client_cpu / cell.duration_s,
        "server_cores": None if server_cpu is None else server_cpu / cell.duration_s,
        "machine_busy_cores": busy / cell.duration_s,
        "machine_idle_share": idle / (busy + idle) if busy + idle > 0 else None,
        "cpu_ms_per_image": None
        if server_cpu is None or not images
        else 1000 * (client_cpu + server_cpu) / images,
    }


def run_cell(
    target: str,
    cell: Cell,
    requests: list[bytes],
    timeout_s: float = 60.0,
    probe: ServerProbe | None = None,
    protocol: Protocol = DIGITS_V1,
) -> dict:
    """Synchronous entry point: one event loop per cell, so cells cannot leak into each other."""
    return asyncio.run(run_cell_async(target, cell, requests, timeout_s, probe, protocol))
