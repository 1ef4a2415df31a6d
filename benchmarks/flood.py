"""Memory and answers under a flood of large requests: the server's resident size before,
during and after each round, and what every request got.

    python -m benchmarks.flood --model-repository artifacts/model_repository
    python -m benchmarks.flood --baseline-root /path/to/older/checkout   # side by side

Each round sends `--requests` Classify calls at once, each one raw float32 image of
`--side` x `--side` pixels (12.6 MB at 1773), and waits for every answer. The resident
size (VmRSS) of the server process is sampled every 10 ms. With --baseline-root the same
flood also runs against `python -m serving` started from that checkout, in the same run.
Results: flood.json, flood.md and flood_rss.png in the results folder.
"""

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from benchmarks import plots
from benchmarks.config import DEFAULT_REPOSITORY, MAX_MESSAGE_BYTES, RESULTS_DIR
from benchmarks.machine import machine_info
from benchmarks.results_files import table, write_results
from benchmarks.server import ServerProcess, benchmark_server
from common.cli import UserError, positive_int, run_cli
from common.ownership import claim_folder
from common.settings import parse_settings, setting, settings_group
from serving.client import DigitClient, classify_request

SAMPLE_INTERVAL_S = 0.01
SETTLE_S = 2.0


@dataclass(frozen=True)
class FloodConfig:
    requests: int = setting(40, "concurrent Classify calls per round", parse=positive_int)
    side: int = setting(
        1773, "side of the raw float32 image each request carries (1773: 12.6 MB)",
        parse=positive_int,
    )  # fmt: skip
    rounds: int = setting(3, "flood rounds", parse=positive_int)
    model: str = "scratch_cnn"
    timeout_s: float = 60.0


@dataclass(frozen=True)
class FloodCommand:
    model_repository: Path = setting(DEFAULT_REPOSITORY, "model repository to serve", parse=Path)
    baseline_root: Path | None = setting(
        None, "an older checkout whose server is flooded too, in the same run", parse=Path
    )
    output: Path = setting(RESULTS_DIR / "flood", "results folder", parse=Path)
    flood: FloodConfig = settings_group(FloodConfig(), prefix="")


def revision(root: Path) -> str:
    """The checkout's commit, short (its folder name where git cannot tell)."""
    result = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return result.stdout.strip() or root.name


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise UserError(f"no VmRSS for process {pid}")


class RssSampler:
    """(seconds since start, MB) of one process, every SAMPLE_INTERVAL_S, in a thread."""

    def __init__(self, pid: int):
        self.pid, self.samples, self.start = pid, [], time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.start, resident_mb(self.pid)))
            time.sleep(SAMPLE_INTERVAL_S)

    def peak_since(self, t0: float) -> float:
        return max(mb for t, mb in self.samples if t >= t0)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def one_call(client: DigitClient, request, timeout_s: float) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        client.stub.Classify(request, timeout=timeout_s)
        code = "OK"
    except grpc.RpcError as error:
        code = error.code().name
    return code, time.perf_counter() - start


def flood_round(client, request, config: FloodConfig, sampler: RssSampler) -> dict:
    t0 = time.monotonic() - sampler.start
    before = resident_mb(sampler.pid)
    with ThreadPoolExecutor(config.requests) as pool:
        outcomes = list(
            pool.map(lambda _: one_call(client, request, config.timeout_s), range(config.requests))
        )
    wall = time.monotonic() - sampler.start - t0
    time.sleep(SETTLE_S)
    codes = [code for code, _ in outcomes]
    ok = sorted(seconds for code, seconds in outcomes if code == "OK")
    return {
        "rss_before_mb": round(before, 1),
        # the samples are 10 ms apart: the reading just before counts too
        "rss_peak_mb": round(max(before, sampler.peak_since(t0)), 1),
        "rss_after_mb": round(resident_mb(sampler.pid), 1),
        "answers": {code: codes.count(code) for code in sorted(set(codes))},
        "ok_p50_ms": round(1000 * ok[len(ok) // 2], 1) if ok else None,
        "wall_s": round(wall, 2),
        "started_at_s": round(t0, 2),
    }


def flood_server(name: str, server: ServerProcess, config: FloodConfig) -> dict:
    raw = np.zeros((config.side, config.side), np.float32)
    request = classify_request(config.model, [raw])
    with (
        server,
        DigitClient(server.target, max_message_bytes=MAX_MESSAGE_BYTES) as client,
        RssSampler(server.pid) as sampler,
    ):
        client.classify(config.model, [np.zeros((100, 100), np.uint8)])  # warm
        rounds = [flood_round(client, request, config, sampler) for _ in range(config.rounds)]
        survived = client.health() == "SERVING"
    print(f"{name}: " + "; ".join(f"{r['answers']} peak {r['rss_peak_mb']} MB" for r in rounds))
    return {
        "server": name,
        "request_mb": round(request.ByteSize() / 1e6, 2),
        "rounds": rounds,
        "serving_after": survived,
        "rss_series": sampler.samples[:: max(1, len(sampler.samples) // 2000)],
    }


def flood_markdown(results: dict) -> str:
    config = results["config"]
    lines = [
        "# Flood of large requests: memory and answers",
        "",
        f"{config['requests']} concurrent Classify calls per round, each one raw float32 image "
        f"of {config['side']}x{config['side']} ({results['servers'][0]['request_mb']} MB), "
        f"{config['rounds']} rounds, {SETTLE_S:.0f} s pause after each; server RSS sampled "
        f"every {SAMPLE_INTERVAL_S * 1000:.0f} ms. Machine: {results['machine']['cpu_model']}, "
        f"{results['machine']['usable_cores']} cores.",
        "",
    ]
    rows = [
        [
            server["server"],
            str(index + 1),
            f"{r['rss_before_mb']:.0f}",
            f"{r['rss_peak_mb']:.0f}",
            f"{r['rss_after_mb']:.0f}",
            ", ".join(f"{code} {count}" for code, count in r["answers"].items()),
            "-" if r["ok_p50_ms"] is None else f"{r['ok_p50_ms']:.0f}",
            f"{r['wall_s']:.1f}",
        ]
        for server in results["servers"]
        for index, r in enumerate(server["rounds"])
    ]
    header = ["server", "round", "RSS before MB", "peak MB", "after MB", "answers", "OK p50 ms"]
    lines += table([*header, "round s"], rows)
    lines += ["", f"![RSS over time]({results['figure']})", ""]
    return "\n".join(lines)


def parse_args(argv=None) -> FloodCommand:
    command = parse_settings(
        FloodCommand(), "python -m benchmarks.flood", __doc__.split("\n")[0], argv
    )
    if not command.model_repository.is_dir():
        raise UserError(f"{command.model_repository}: model repository not found")
    if command.baseline_root and not (command.baseline_root / "serving").is_dir():
        raise UserError(f"{command.baseline_root}: no serving/ package in that checkout")
    return command


def main(argv=None) -> int:
    args = parse_args(argv)
    config = args.flood
    output = claim_folder(args.output)
    repository = args.model_repository.resolve()
    servers = [(f"this checkout ({revision(Path.cwd())})", None)]
    if args.baseline_root:
        root = args.baseline_root.resolve()
        servers.append((f"baseline ({revision(root)})", root))
    results = {"config": vars(config) | {}, "machine": machine_info(), "servers": []}
    for name, root in servers:
        log = output / f"server_{len(results['servers'])}.log"
        server = benchmark_server(repository, True, log, cwd=root)
        results["servers"].append(flood_server(name, server, config))
    results["figure"] = plots.rss_over_time(results["servers"], output / "flood_rss.png").name
    write_results(results, flood_markdown(results), output, "flood")
    return 0


if __name__ == "__main__":
    run_cli(main)
