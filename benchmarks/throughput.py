"""`python -m benchmarks.throughput`: what a request costs the server, and how much of the
machine it uses, side by side with an earlier commit and with raw ONNX Runtime, in one run.

    git worktree add /tmp/base c1538ec          # the server to compare with
    python -m benchmarks.throughput --baseline /tmp/base

Every server (the baseline checkout, then this one at each --workers setting) runs the same
cells with the same client, in rounds whose order alternates (these machines are shared and
noisy). Beside them, the no-op cell also runs against benchmarks.grpc_floor (a ready-made
answer to every call, in as many processes as the most workers): what gRPC alone costs a request.

Each cell reports throughput, latency, the cores the server and the client used, the idle
share of the machine and the CPU per request of each side: a server that is CPU-bound
leaves no idle share; a loop-bound one leaves idle cores while requests queue; a model-bound
one runs near raw ONNX Runtime.
"""

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from benchmarks.analysis import meets, read_targets
from benchmarks.config import DEFAULT_REPOSITORY, DEFAULT_VALIDATION_FILE, NOOP_MODEL, RESULTS_DIR
from benchmarks.loadgen import Cell, run_cell
from benchmarks.machine import machine_info
from benchmarks.noop import repository_with_noop
from benchmarks.plots import throughput_bars
from benchmarks.references import time_batch
from benchmarks.results_files import fmt, machine_lines, pct, table, write_results
from benchmarks.runtimes import onnx_predict, resolve_models
from benchmarks.samples import load_sample_pixels, serialized_requests
from benchmarks.server import ServerProcess, benchmark_server
from benchmarks.stats import ratio
from common.cli import UserError, positive_float, positive_int, run_cli
from common.model_runtime import as_model_input
from common.ownership import claim_folder
from common.settings import comma_list, parse_settings, positive_ints, setting

SCHEMA = "digits-benchmarks/throughput/1"
TARGETS = Path(__file__).resolve().parent / "targets" / "throughput.json"
# (model, concurrency, images per request): the cells, and scratch_cnn's best setting
# (8-image requests); a model missing from the repository is skipped
CELLS = (
    ("scratch_cnn", 1, 1),
    ("scratch_cnn", 32, 1),
    ("scratch_cnn", 16, 8),
    ("vgg16_finetuned", 8, 1),
    (NOOP_MODEL, 32, 1),
    (NOOP_MODEL, 1, 1),  # with the floor's: what C=1 costs without a model
)
CELL_NAMES = {f"{model}:{c}x{k}": (model, c, k) for model, c, k in CELLS}  # scratch_cnn:32x1
MAX_BATCH_SIZE = 64  # the servers' --max-batch-size (benchmark_server's default)
REFERENCE_BATCHES = (1, 2, 4, 8, 16, 32, 64)
LONE_CALLER_PAUSE_S = 0.001  # a single image this long after the last: a C=1 request's run
BASELINE = "baseline"
FLOOR = "grpc-floor"
MEASURES = (  # what headlines() measures, and a targets file may name
    "c32_throughput_over_baseline",
    "c32_p99_over_baseline",
    "c32_busy_cores",
    "best_ratio_to_ort_same_batch",
    "c1_p50_over_ort_ms",
    "c1_p50_over_ort_after_pause_ms",
    "vgg16_c8_ratio_to_ort_same_batch",
    "noop_rate_over_baseline",
    "noop_rate_over_grpc_floor",
    "c1_p50_noop_over_grpc_floor_ms",
)


def cell_names(text: str) -> tuple[str, ...]:
    """ "scratch_cnn:32x1,noop:1x1" -> those names, each one of CELL_NAMES."""
    names = comma_list(text)
    if unknown := [name for name in names if name not in CELL_NAMES]:
        raise argparse.ArgumentTypeError(
            f"unknown cell {unknown[0]!r} (cells: {', '.join(CELL_NAMES)})"
        )
    return tuple(names)


@dataclass(frozen=True)
class ThroughputCommand:
    model_repository: Path = setting(DEFAULT_REPOSITORY, "model repository", parse=Path)
    validation_file: Path = setting(
        DEFAULT_VALIDATION_FILE, "images to send (else bundled digits)", parse=Path
    )
    baseline: Path | None = setting(
        None, "a checkout of an earlier commit whose server runs beside this one", parse=Path
    )
    workers: tuple[int, ...] = setting(
        (1, 2), "--workers settings of this checkout's server to run", parse=positive_ints
    )
    cells: tuple[str, ...] = setting(
        (),
        "cells to run, as MODEL:CxIMAGES (default: every cell; A/B runs of one)",
        parse=cell_names,
    )
    rounds: int = setting(2, "rounds (the servers' order alternates)", parse=positive_int)
    duration_s: float = setting(10.0, "measured seconds per cell", parse=positive_float,
                                flag="--duration")  # fmt: skip
    warmup_s: float = setting(2.0, "warm-up seconds per cell", parse=positive_float,
                              flag="--warmup")  # fmt: skip
    connections: int = setting(
        8, "client connections (one connection is served by one worker)", parse=positive_int
    )
    reference_seconds: float = setting(
        2.0, "seconds of raw ONNX Runtime per batch size", parse=positive_float
    )
    targets: Path = setting(TARGETS, "the targets (JSON)", parse=Path)
    output: Path = setting(RESULTS_DIR / "throughput", "results folder", parse=Path)


@dataclass(frozen=True)
class ServerUnderTest:
    label: str
    checkout: Path | None  # None: this one
    args: tuple[str, ...]
    floor: bool = False  # benchmarks.grpc_floor (the no-op cell only), not `python -m serving`

    def start(self, repository: Path, log_file: Path) -> ServerProcess:
        if self.floor:
            return ServerProcess(*self.args, log_file=log_file, module="benchmarks.grpc_floor")
        return benchmark_server(repository, True, log_file, *self.args, cwd=self.checkout)

    def runs(self, model: str) -> bool:
        return model == NOOP_MODEL or not self.floor


def servers(command: ThroughputCommand) -> list[ServerUnderTest]:
    baseline = [] if command.baseline is None else [ServerUnderTest(BASELINE, command.baseline, ())]
    floor = ServerUnderTest(FLOOR, None, ("--processes", str(max(command.workers))), floor=True)
    return [
        *baseline,
        *(ServerUnderTest(f"workers={n}", None, ("--workers", str(n))) for n in command.workers),
        floor,
    ]


def references(models: dict[str, Path], pixels, seconds: float) -> tuple[dict, dict]:
    """Raw ONNX Runtime (its own defaults) in this process: per model, a row per batch size
    (back to back), and a single image LONE_CALLER_PAUSE_S after the last."""
    rows, lone = {}, {}
    for name, path in models.items():
        predict, _ = onnx_predict(path)
        rows[name] = [
            time_batch(predict, as_model_input(pixels[:size]), seconds, min_runs=5)
            for size in REFERENCE_BATCHES
        ]
        one = as_model_input(pixels[:1])
        lone[name] = time_batch(predict, one, seconds, min_runs=5, pause_s=LONE_CALLER_PAUSE_S)
    return rows, lone


def run_server(server: ServerUnderTest, repository: Path, cells, command, requests, log_file):
    """Every cell against one server; the cells' results, labelled."""
    results = []
    with server.start(repository, log_file) as running:
        for model, concurrency, images in filter(lambda cell: server.runs(cell[0]), cells):
            connections = min(concurrency, command.connections)
            cell = Cell(
                model, concurrency, images, command.warmup_s, command.duration_s, connections
            )
            result = run_cell(
                running.target, cell, requests[(model, images)], probe=running.probe()
            )
            results.append({"server": server.label, **result})
    return results


def measure(command: ThroughputCommand) -> dict:
    chosen = [CELL_NAMES[name] for name in command.cells] or list(CELLS)
    available = resolve_models(command.model_repository, None)
    models = {name: available[name] for name, _, _ in chosen if name in available}
    cells = [cell for cell in chosen if cell[0] in models or cell[0] == NOOP_MODEL]
    pixels, source = load_sample_pixels(command.validation_file)
    requests = {(name, k): serialized_requests(name, pixels, k, 16, "raw") for name, _, k in cells}
    under_test = servers(command)
    progress = tqdm(total=command.rounds * len(under_test), unit="server", file=sys.stderr)
    runs, raw, lone = [], {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        repository = repository_with_noop(
            command.model_repository, list(models), Path(scratch) / "repository"
        )
        for round_index in range(command.rounds):
            progress.set_description("raw ONNX Runtime")
            raw[round_index], lone[round_index] = references(
                models, pixels, command.reference_seconds
            )
            order = under_test if round_index % 2 == 0 else under_test[::-1]
            for server in order:
                progress.set_description(f"round {round_index + 1}: {server.label}")
                log_file = command.output / f"server_{server.label}_{round_index + 1}.log"
                for result in run_server(server, repository, cells, command, requests, log_file):
                    runs.append({"round": round_index + 1, **result})
                progress.update(1)
    progress.close()
    return {
        "schema": SCHEMA,
        "machine": machine_info(),
        "images": source,
        "payload": "raw uint8 100x100 images",
        "servers": [s.label for s in under_test],
        "baseline_checkout": None if command.baseline is None else str(command.baseline),
        "connections": command.connections,
        "duration_s": command.duration_s,
        "cells": runs,
        "raw_onnxruntime": {str(k): v for k, v in raw.items()},
        "raw_onnxruntime_after_pause": {str(k): v for k, v in lone.items()},
    }


def mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def averaged(results: dict) -> dict[tuple[str, str, int, int], dict]:
    """(server, model, concurrency, images per request): each measure averaged over rounds."""
    groups: dict[tuple[str, str, int, int], list[dict]] = {}
    for cell in results["cells"]:
        key = (cell["server"], cell["model"], cell["concurrency"], cell["images_per_request"])
        groups.setdefault(key, []).append(cell)
    keys = ("images_per_s", "server_cores", "client_cores", "machine_busy_cores",
            "machine_idle_share", "server_cpu_ms_per_request", "client_cpu_ms_per_request",
            "server_mean_batch_size")  # fmt: skip
    return {
        key: {
            **{k: mean([c[k] for c in cells]) for k in keys},
            "p50": mean([c["latency_ms"]["p50"] for c in cells]),
            "p99": mean([c["latency_ms"]["p99"] for c in cells]),
            "rounds": [c["images_per_s"] for c in cells],
            "errors": sum(sum(c["errors"].values()) for c in cells),
        }
        for key, cells in groups.items()
    }


def raw_at(results: dict, model: str, batch: int) -> dict | None:
    """Raw ONNX Runtime at the measured batch size nearest below `batch`, averaged over rounds."""
    rows = [
        max((r for r in by_model[model] if r["batch_size"] <= max(1.0, batch)),
            key=lambda r: r["batch_size"])
        for by_model in results["raw_onnxruntime"].values()
        if model in by_model
    ]  # fmt: skip
    if not rows:
        return None
    return {
        "batch_size": rows[0]["batch_size"],
        "images_per_s": mean([r["images_per_s"] for r in rows]),
        "median_ms": mean([r["median_ms"] for r in rows]),
    }


def lone_image_ms(results: dict, model: str) -> float | None:
    """Raw ONNX Runtime's median for a single image LONE_CALLER_PAUSE_S after the last,
    averaged over rounds."""
    by_round = results["raw_onnxruntime_after_pause"].values()
    return mean([by_model[model]["median_ms"] for by_model in by_round if model in by_model])


def p50_of(cell: dict | None) -> float | None:
    return None if cell is None else cell["p50"]


def difference(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value - reference


def headlines(results: dict) -> dict[str, float | str | None]:
    """The measures the targets judge (see benchmarks/targets/throughput.json). "Same batch
    size" is, as in benchmarks.latency, the largest batch a cell lets the server form: the
    images in flight, at most --max-batch-size."""
    cells = averaged(results)
    ours = [s for s in results["servers"] if s not in (BASELINE, FLOOR)]

    def best(model: str, concurrency: int, images: int = 1) -> tuple[str | None, dict | None]:
        found = [(s, cells.get((s, model, concurrency, images))) for s in ours]
        found = [(s, cell) for s, cell in found if cell is not None]
        return max(found, key=lambda f: f[1]["images_per_s"], default=(None, None))

    def rate(cell: dict | None) -> float | None:
        return None if cell is None else cell["images_per_s"]

    def to_raw(model: str, concurrency: int, images: int = 1) -> float | None:
        raw = raw_at(results, model, min(concurrency * images, MAX_BATCH_SIZE))
        return ratio(rate(best(model, concurrency, images)[1]), raw and raw["images_per_s"])

    label, c32 = best("scratch_cnn", 32)
    base32 = cells.get((BASELINE, "scratch_cnn", 32, 1))
    c1 = best("scratch_cnn", 1)[1]
    raw1 = raw_at(results, "scratch_cnn", 1)
    best_setting = max(
        (v for v in (to_raw("scratch_cnn", 32), to_raw("scratch_cnn", 16, 8)) if v is not None),
        default=None,
    )
    return {
        "best_c32_setting": label,
        "c32_throughput_over_baseline": ratio(rate(c32), rate(base32)),
        "c32_p99_over_baseline": ratio(c32 and c32["p99"], base32 and base32["p99"]),
        "c32_busy_cores": c32 and c32["machine_busy_cores"],
        "best_ratio_to_ort_same_batch": best_setting,
        "c1_p50_over_ort_ms": difference(p50_of(c1), raw1 and raw1["median_ms"]),
        "c1_p50_over_ort_after_pause_ms": difference(
            p50_of(c1), lone_image_ms(results, "scratch_cnn")
        ),
        "vgg16_c8_ratio_to_ort_same_batch": to_raw("vgg16_finetuned", 8),
        "noop_rate_over_baseline": ratio(
            rate(best(NOOP_MODEL, 32)[1]), rate(cells.get((BASELINE, NOOP_MODEL, 32, 1)))
        ),
        "noop_rate_over_grpc_floor": ratio(
            rate(best(NOOP_MODEL, 32)[1]), rate(cells.get((FLOOR, NOOP_MODEL, 32, 1)))
        ),
        "c1_p50_noop_over_grpc_floor_ms": difference(
            p50_of(best(NOOP_MODEL, 1)[1]), p50_of(cells.get((FLOOR, NOOP_MODEL, 1, 1)))
        ),
    }


def judged(values: dict, targets: dict) -> list[dict]:
    return [
        {**target, "measured": (value := values.get(target["measure"])),
         "met": meets(value, target["sense"], target["threshold"])}
        for target in targets["targets"]
    ]  # fmt: skip


def markdown(results: dict, verdicts: list[dict]) -> str:
    cells = averaged(results)
    floor_share = results["headlines"]["noop_rate_over_grpc_floor"]
    floor_c1 = cells.get((FLOOR, NOOP_MODEL, 1, 1))
    rows = [
        [server, model, f"{c} x {k}", fmt(v["images_per_s"], 0), fmt(v["p50"], 2), fmt(v["p99"], 1),
         fmt(v["server_cores"], 2), fmt(v["client_cores"], 2), pct(v["machine_idle_share"]),
         fmt(v["server_cpu_ms_per_request"], 3), fmt(v["client_cpu_ms_per_request"], 3),
         fmt(v["server_mean_batch_size"], 1), " / ".join(f"{r:.0f}" for r in v["rounds"]),
         str(v["errors"])]
        for (server, model, c, k), v in sorted(cells.items(), key=lambda kv: kv[0][1:])
    ]  # fmt: skip
    raw_rows = [
        [model, str(row["batch_size"]), fmt(row["median_ms"], 3), fmt(row["images_per_s"], 0)]
        for model in sorted({m for by in results["raw_onnxruntime"].values() for m in by})
        for size in REFERENCE_BATCHES
        if (row := raw_at(results, model, size)) is not None
    ]
    lone_models = sorted({m for by in results["raw_onnxruntime_after_pause"].values() for m in by})
    target_rows = [
        [v["name"], f"{v['sense']} {v['threshold']}",
         "-" if v["measured"] is None else f"{v['measured']:.3f}",
         {True: "yes", False: "**no**", None: "not measured"}[v["met"]]]
        for v in verdicts
    ]  # fmt: skip
    return "\n".join([
        "# Throughput and cost per request",
        "",
        f"{results['payload']}; closed loop, client on the same machine over "
        f"{results['connections']} connections (one at C=1), {results['duration_s']:.0f} s "
        f"windows, {len({c['round'] for c in results['cells']})} rounds in alternating order. "
        f"Baseline: the server of {results['baseline_checkout'] or '(none)'}. Cores: CPU "
        "seconds per second of the window (server: its process and every worker); idle: the "
        "share of the whole machine's CPU time left idle.",
        "",
        *machine_lines(results["machine"]),
        "",
        *table(["server", "model", "C x images", "images/s", "p50 ms", "p99 ms", "server cores",
                "client cores", "idle", "server CPU ms/req", "client CPU ms/req",
                "mean batch", "images/s per round", "errors"], rows),  # fmt: skip
        "",
        "Raw ONNX Runtime in one process (its default threads), averaged over the rounds:",
        "",
        *table(["model", "batch", "median ms", "images/s"], raw_rows),
        "",
        f"A single image {LONE_CALLER_PAUSE_S * 1000:g} ms after the last, as a lone caller's "
        "comes (the rows above run back to back): "
        + ", ".join(f"{model} {fmt(lone_image_ms(results, model), 3)} ms" for model in lone_models)
        + f". C=1 p50 minus it: {fmt(results['headlines']['c1_p50_over_ort_after_pause_ms'], 2)} "
        "ms (scratch_cnn; the target counts against the back-to-back median).",
        "",
        "Targets (benchmarks/targets/throughput.json):",
        "",
        *table(["target", "threshold", "measured", "met"], target_rows),
        "",
        f"For scale: the no-op model's best request rate is {pct(floor_share)} of the gRPC "
        "floor's (benchmarks.grpc_floor: a ready-made answer to every call, no model, no batching, "
        "no metrics, in as many processes as the most workers), with the same client. At C=1 "
        f"the floor answers in {fmt(p50_of(floor_c1), 2)} ms (p50) and the no-op model in "
        f"{fmt(results['headlines']['c1_p50_noop_over_grpc_floor_ms'], 2)} ms more: what the "
        "request path costs a lone caller, model aside.",
        "",
        "![throughput](throughput.png)",
        "",
    ])  # fmt: skip


def parse_args(argv: list[str] | None = None) -> ThroughputCommand:
    return parse_settings(
        ThroughputCommand(),
        "python -m benchmarks.throughput",
        "Throughput, latency and CPU per request of the server (at each --workers setting and "
        "an earlier checkout's), beside raw ONNX Runtime, in one run.",
        argv,
    )


def main(argv: list[str] | None = None) -> int:
    command = parse_args(argv)
    if command.baseline is not None and not (command.baseline / "serving").is_dir():
        raise UserError(f"--baseline {command.baseline}: not a checkout of this project")
    targets = read_targets(command.targets, MEASURES)
    claim_folder(command.output)
    results = measure(command)
    results["headlines"] = headlines(results)
    verdicts = judged(results["headlines"], targets)
    results["targets"] = verdicts
    throughput_bars(averaged(results), command.output / "throughput.png")
    write_results(results, markdown(results, verdicts), command.output, "throughput")
    return 0


if __name__ == "__main__":
    run_cli(main)
