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
from pathlib import Path

import aiohttp

from benchmarks.config import CLIENTS_PYTHON, RESULTS_DIR
from benchmarks.machine import machine_info
from benchmarks.report import table, write_results
from benchmarks.samples import load_sample_pixels, png_bytes
from benchmarks.server import free_port, process_cpu_seconds
from benchmarks.stats import latency_summary
from common.cli import ArgumentParser, UserError, positive_float, run_cli
from common.ownership import claim_folder

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


def main(argv=None) -> int:
    parser = ArgumentParser(
        prog="python -m benchmarks.http_frameworks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=positive_float, default=5.0)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "http_frameworks")
    args = parser.parse_args(argv)
    if not CLIENTS_PYTHON.is_file():
        raise UserError(f"{CLIENTS_PYTHON} not found: run `make clients` first")
    output = claim_folder(args.output)
    pixels, _ = load_sample_pixels(Path("absent.npz"), 1)
    body = png_bytes(pixels[0])
    cells = [
        measure(framework, int(concurrency), args.seconds, body)
        for concurrency in args.concurrency.split(",")
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
