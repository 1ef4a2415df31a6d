"""The Open Inference Protocol measured with the field's own load tool, and against digits.v1.

    python -m benchmarks.protocols --model-repository artifacts/model_repository

1. perf_analyzer (Triton's load tool) sweeps the concurrency against the server's OIP gRPC
   endpoint: throughput, p50/p90/p95/p99 and the server-side split it reads from
   ModelStatistics (queue, compute input, infer, output). It runs from its own environment
   (`make perf-tools`: the perf_analyzer binary bundled in the tritonclient 2.51.0 wheel,
   which pins numpy < 2, and the CUDA runtime library it links to; it also needs Debian's
   libb64-0d).
2. The same load generator (benchmarks.loadgen, closed loop, one 100x100 uint8 image per
   request) drives digits.v1 Classify and OIP ModelInfer alternately at each concurrency,
   so their ratio is measured side by side in one run.

Results: protocols.json, protocols.md, perf_analyzer.csv and protocols.png.
"""

import csv
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import plots
from benchmarks.config import DEFAULT_REPOSITORY, RESULTS_DIR
from benchmarks.loadgen import DIGITS_V1, Cell, Protocol, run_cell
from benchmarks.machine import machine_info
from benchmarks.results_files import table, write_results
from benchmarks.samples import load_sample_pixels
from benchmarks.server import ServerProbe, benchmark_server
from common.cli import UserError, positive_float, run_cli
from common.ownership import claim_folder
from common.settings import parse_settings, positive_ints, setting
from protos.inference import grpc_service_pb2 as pb
from serving.client import classify_request

ROOT = Path(__file__).resolve().parents[1]
PERF_VENV = ROOT / ".venv-perf"
PERF_COLUMNS = {  # perf_analyzer's --verbose-csv column: our name (latencies in usec)
    "Concurrency": "concurrency",
    "Inferences/Second": "images_per_s",
    "p50 latency": "p50_us",
    "p90 latency": "p90_us",
    "p95 latency": "p95_us",
    "p99 latency": "p99_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
}
OIP = Protocol(
    "/inference.GRPCInferenceService/ModelInfer",
    lambda reply: pb.ModelInferResponse.FromString(reply).outputs[0].shape[0],
)


def oip_request(model: str, pixels: np.ndarray) -> bytes:
    """ModelInfer with UINT8 [1, 100, 100, 1] raw: the same bytes digits.v1 sends raw."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="image", datatype="UINT8", shape=[1, *pixels.shape, 1]
    )
    request = pb.ModelInferRequest(model_name=model, inputs=[tensor])
    request.raw_input_contents.append(np.ascontiguousarray(pixels, np.uint8).tobytes())
    return request.SerializeToString()


def perf_analyzer_binary() -> tuple[Path, dict]:
    """The binary and the environment it runs with; UserError naming what is missing."""
    binary = PERF_VENV / "bin" / "perf_analyzer"
    if not binary.is_file():
        raise UserError(f"{binary} not found: run `make perf-tools` first")
    cudart = next(PERF_VENV.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"), None)
    env = {**os.environ, "LD_LIBRARY_PATH": str(cudart or "")}
    check = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True)
    if check.returncode != 0:
        missing = check.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise UserError(f"perf_analyzer does not start ({missing[0]}); apt-get install libb64-0d")
    return binary, env


def perf_analyzer_sweep(target: str, model: str, concurrencies: list[int], output: Path) -> list:
    """One perf_analyzer run per concurrency (its ranges step linearly only)."""
    binary, env = perf_analyzer_binary()
    rows, log = [], []
    for concurrency in concurrencies:
        path = output / f"perf_analyzer_c{concurrency}.csv"
        command = [
            str(binary), "-m", model, "-i", "grpc", "-u", target,
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", "3000", "--input-data", "zero",
            # a shared 2-core machine: 10 % stability in 10 windows is rarely reached
            "--stability-percentage", "25", "--max-trials", "20",
            "-f", str(path), "--verbose-csv",
        ]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        log.append(result.stdout + result.stderr)
        if result.returncode != 0:
            (output / "perf_analyzer.log").write_text("\n".join(log))
            raise UserError(f"perf_analyzer failed: see {output / 'perf_analyzer.log'}")
        with open(path, newline="") as handle:
            rows += [
                {ours: float(row[theirs]) for theirs, ours in PERF_COLUMNS.items()}
                for row in csv.DictReader(handle)
            ]
        path.unlink()  # gathered into perf_analyzer.csv below
    (output / "perf_analyzer.log").write_text("\n".join(log))
    with open(output / "perf_analyzer.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PERF_COLUMNS.values()))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def side_by_side(
    target: str,
    model: str,
    concurrencies: list[int],
    seconds: float,
    probe: ServerProbe | None = None,
) -> list:
    """digits.v1 and OIP at each concurrency, alternately, with the same images; with a
    probe of the server process, its CPU per cell too."""
    pixels, _ = load_sample_pixels(Path("absent.npz"), 8)
    requests = {
        "digits.v1": [classify_request(model, [image]).SerializeToString() for image in pixels],
        "oip": [oip_request(model, image) for image in pixels],
    }
    cells = []
    for concurrency in concurrencies:
        for name, protocol in (("digits.v1", DIGITS_V1), ("oip", OIP)):
            cell = Cell(model, concurrency, 1, warmup_s=1.0, duration_s=seconds)
            result = run_cell(target, cell, requests[name], probe=probe, protocol=protocol)
            cells.append({"protocol": name, **result})
    return cells


def server_cpu_ms(cell: dict) -> str:
    """The server's CPU milliseconds per request in a cell ("-" without a probe)."""
    if cell.get("server_cpu_s") is None or not cell["ok_requests"]:
        return "-"
    return f"{1000 * cell['server_cpu_s'] / cell['ok_requests']:.3f}"


def ratio_rows(cells: list[dict]) -> list[list[str]]:
    rows = []
    by_key = {(c["protocol"], c["concurrency"]): c for c in cells}
    for concurrency in sorted({c["concurrency"] for c in cells}):
        v1, oip = by_key[("digits.v1", concurrency)], by_key[("oip", concurrency)]
        rows.append(
            [
                str(concurrency),
                f"{v1['images_per_s']:.0f}",
                f"{oip['images_per_s']:.0f}",
                f"{oip['images_per_s'] / v1['images_per_s']:.2f}",
                f"{v1['latency_ms']['p50']:.2f} / {oip['latency_ms']['p50']:.2f}",
                f"{v1['client_cpu_ms_per_request']:.3f} / {oip['client_cpu_ms_per_request']:.3f}",
                f"{server_cpu_ms(v1)} / {server_cpu_ms(oip)}",
            ]
        )
    return rows


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# The Open Inference Protocol: perf_analyzer, and OIP against digits.v1",
        "",
        f"Model `{results['model']}`, one 100x100 image per request; {machine['cpu_model']}, "
        f"{machine['usable_cores']} cores shared by the load tool and the server.",
        "",
        "## perf_analyzer (OIP gRPC, FP32 zeros)",
        "",
    ]
    perf = results["perf_analyzer"]
    lines += table(
        [
            "concurrency",
            "images/s",
            "p50 ms",
            "p90 ms",
            "p95 ms",
            "p99 ms",
            "server queue ms",
            "compute input ms",
            "compute infer ms",
            "compute output ms",
        ],  # fmt: skip
        [
            [f"{row['concurrency']:.0f}", f"{row['images_per_s']:.0f}"]
            + [
                f"{row[key] / 1000:.2f}"
                for key in (
                    "p50_us",
                    "p90_us",
                    "p95_us",
                    "p99_us",
                    "server_queue_us",
                    "server_compute_input_us",
                    "server_compute_infer_us",
                    "server_compute_output_us",
                )  # fmt: skip
            ]
            for row in perf
        ],
    )
    lines += [
        "",
        "## digits.v1 against OIP, the same load generator, side by side",
        "",
        f"Closed loop, {results['seconds']:.0f} s per cell, the two protocols alternating.",
        "",
    ]
    lines += table(
        [
            "concurrency",
            "digits.v1 images/s",
            "OIP images/s",
            "OIP / digits.v1",
            "p50 ms (v1 / OIP)",
            "client CPU ms/request (v1 / OIP)",
            "server CPU ms/request (v1 / OIP)",
        ],
        ratio_rows(results["side_by_side"]),
    )
    lines += ["", f"![perf_analyzer]({results['figure']})", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class ProtocolsCommand:
    model_repository: Path = setting(DEFAULT_REPOSITORY, "model repository to serve", parse=Path)
    model: str = setting("scratch_cnn", "model to drive", metavar="NAME")
    concurrency: tuple[int, ...] = setting(
        (1, 2, 4, 8, 16, 32), "perf_analyzer's concurrency sweep", parse=positive_ints
    )
    side_by_side: tuple[int, ...] = setting(
        (1, 16), "concurrencies of the digits.v1 / OIP side-by-side cells", parse=positive_ints
    )
    seconds: float = setting(5.0, "seconds per side-by-side cell", parse=positive_float)
    output: Path = setting(RESULTS_DIR / "protocols", "results folder", parse=Path)


def parse_args(argv=None) -> ProtocolsCommand:
    command = parse_settings(
        ProtocolsCommand(), "python -m benchmarks.protocols", __doc__.split("\n")[0], argv
    )
    if not command.model_repository.is_dir():
        raise UserError(f"{command.model_repository}: model repository not found")
    return command


def main(argv=None) -> int:
    args = parse_args(argv)
    perf_analyzer_binary()  # before anything runs: a missing tool is one line
    output = claim_folder(args.output)
    sweep, pairs = list(args.concurrency), list(args.side_by_side)
    server = benchmark_server(args.model_repository.resolve(), True, output / "server.log")
    with server:
        perf = perf_analyzer_sweep(server.target, args.model, sweep, output)
        cells = side_by_side(server.target, args.model, pairs, args.seconds, server.probe())
    results = {
        "model": args.model,
        "machine": machine_info(),
        "seconds": args.seconds,
        "perf_analyzer": perf,
        "side_by_side": cells,
    }
    results["figure"] = plots.perf_analyzer_sweep(perf, output / "protocols.png").name
    write_results(results, markdown(results), output, "protocols")
    return 0


if __name__ == "__main__":
    run_cli(main)
