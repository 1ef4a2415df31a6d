"""Which asynchronous HTTP library the server's REST port uses, chosen by measurement.

    python -m benchmarks.http_frameworks        # after `make clients`

aiohttp and Starlette under uvicorn (the ASGI choice) each serve the same endpoint
(benchmarks/http_app.py: read an image file's bytes, answer a small JSON), in their own
process, driven alternately by the same closed-loop client (aiohttp's) at each concurrency:
requests/s, p50, and the server's CPU milliseconds per request. Results: http_frameworks.json
and .md.
"""

import asyncio
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks.config import CLIENTS_PYTHON, RESULTS_DIR
from benchmarks.machine import machine_info
from benchmarks.results_files import table, write_results
from benchmarks.samples import load_sample_pixels, png_bytes
from benchmarks.server import free_port, process_cpu_seconds
from benchmarks.stats import latency_summary
from common.cli import UserError, positive_float, run_cli
from common.ownership import claim_folder
from common.settings import parse_settings, positive_ints, setting

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("aiohttp", "starlette")


async def closed_loop(url: str, body: bytes, concurrency: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        end = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < end:
                start = time.perf_counter()
                async with session.post(url, data=body) as reply:
                    await reply.read()
                    if reply.status == 200:
                        latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    import socket

    limit = time.monotonic() + 30
    while time.monotonic() < limit and process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise UserError("the framework's server did not start")


def measure(framework: str, concurrency: int, seconds: float, body: bytes) -> dict:
    port = free_port()
    command = [str(CLIENTS_PYTHON), str(ROOT / "benchmarks" / "http_app.py"), framework, str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}/v1/models/scratch_cnn/classify"
        asyncio.run(closed_loop(url, body, concurrency, 0.5))  # warm-up
        cpu = process_cpu_seconds(process.pid)
        latencies = asyncio.run(closed_loop(url, body, concurrency, seconds))
        cpu = process_cpu_seconds(process.pid) - cpu
    finally:
        process.terminate()
        process.wait(10)
    return {
        "framework": framework,
        "concurrency": concurrency,
        "requests_per_s": len(latencies) / seconds,
        "latency_ms": latency_summary(latencies),
        "server_cpu_ms_per_request": 1000 * cpu / max(1, len(latencies)),
    }


def markdown(results: dict) -> str:
    rows = [
        [
            str(cell["concurrency"]),
            cell["framework"],
            f"{cell['requests_per_s']:.0f}",
            f"{cell['latency_ms']['p50']:.2f}",
            f"{cell['server_cpu_ms_per_request']:.3f}",
        ]
        for cell in results["cells"]
    ]
    machine = results["machine"]
    return "\n".join(
        [
            "# HTTP library for the REST port: aiohttp against Starlette under uvicorn",
            "",
            f"Same endpoint, same client, alternating; {results['seconds']:.0f} s per cell; "
            f"{machine['cpu_model']}, {machine['usable_cores']} cores shared by client and "
            f"server; body: a {results['body_bytes']}-byte PNG.",
            "",
            *table(
                ["concurrency", "library", "requests/s", "p50 ms", "server CPU ms/request"], rows
            ),
            "",
        ]
    )


@dataclass(frozen=True)
class FrameworksCommand:
    seconds: float = setting(5.0, "seconds per cell", parse=positive_float)
    concurrency: tuple[int, ...] = setting((1, 16), "concurrencies", parse=positive_ints)
    output: Path = setting(RESULTS_DIR / "http_frameworks", "results folder", parse=Path)


def main(argv=None) -> int:
    args = parse_settings(
        FrameworksCommand(), "python -m benchmarks.http_frameworks", __doc__.split("\n")[0], argv
    )
    if not CLIENTS_PYTHON.is_file():
        raise UserError(f"{CLIENTS_PYTHON} not found: run `make clients` first")
    output = claim_folder(args.output)
    pixels, _ = load_sample_pixels(Path("absent.npz"), 1)
    body = png_bytes(pixels[0])
    cells = [
        measure(framework, concurrency, args.seconds, body)
        for concurrency in args.concurrency
        for framework in FRAMEWORKS
    ]
    results = {
        "machine": machine_info(),
        "seconds": args.seconds,
        "body_bytes": len(body),
        "cells": cells,
    }
    write_results(results, markdown(results), output, "http_frameworks")
    return 0


if __name__ == "__main__":
    run_cli(main)
