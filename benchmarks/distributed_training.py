"""Training as one process against two multi-worker processes on this machine, side by side.

    python -m benchmarks.distributed_training [--epochs 3] [--rounds 2] [--models scratch_cnn]

Each round trains the same models on the bundled digits with the same seed and global batch
twice, in alternating order: as one process (`--distribute none`) and as two
`--distribute multi-worker` processes on 127.0.0.1 (TF_CONFIG). Reported per run: wall time,
training seconds per epoch (metrics.json), CPU seconds of the processes, validation
accuracy; and the ratio two workers / one process. Results: distributed_training.json, .md
and .png in the results folder.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import plots
from benchmarks.config import RESULTS_DIR
from benchmarks.machine import machine_info
from benchmarks.results_files import table, write_results
from common.cli import UserError, non_negative_int, positive_int, run_cli
from common.ownership import claim_folder
from common.settings import parse_settings, setting
from training.bundled.materialise import materialise_bundled_digits
from training.cluster import loopback_tf_configs
from training.config import TrainConfig, model_names

SETUPS = ("one process", "two workers")


@dataclass(frozen=True)
class DistributedConfig:
    models: tuple[str, ...] = setting(("scratch_cnn",), "models to train", parse=model_names)
    # 3: no early stop before, the patience is 3
    epochs: int = setting(3, "epochs per run", parse=positive_int)
    rounds: int = setting(2, "rounds, each setup once per round, order alternating",
                          parse=positive_int)  # fmt: skip
    limit_per_class: int = setting(0, "bundled digits per class (0: all)", parse=non_negative_int)
    output: Path = setting(RESULTS_DIR / "distributed_training", "results folder", parse=Path)
    timeout_s: float = 3600.0


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def training_command(config: DistributedConfig, data: Path, output: Path, distribute: str):
    return [
        sys.executable, "-m", "training.run", "--distribute", distribute,
        "--data-dir", str(data), "--output", str(output), "--models", ",".join(config.models),
        "--epochs", str(config.epochs), "--finetune-epochs", str(config.epochs),
        "--limit-per-class", str(config.limit_per_class),
        # the recipe its committed results were measured with (the defaults before 2026-11-24)
        "--augmentation", "standard", "--font-digits", "0", "--patience", "3",
        "--min-epochs", "0", "--pretrain-stages", "32x4,64x1", "--precision", "float32",
        "--no-export", "--verbose", "0",
    ]  # fmt: skip


def timed_processes(commands: list[tuple[list[str], dict]], log: Path, timeout_s: float) -> dict:
    """Start every (command, environment) at once, wait for all: wall and CPU seconds."""
    cpu_before, start = children_cpu_seconds(), time.perf_counter()
    with open(log, "w") as log_file:
        processes = [
            subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
            for command, env in commands
        ]
        try:
            codes = [process.wait(timeout=timeout_s) for process in processes]
        finally:
            for process in processes:
                process.kill()
    if any(codes):
        raise UserError(f"a training process failed (exit codes {codes}); see {log}")
    wall = time.perf_counter() - start
    cpu = children_cpu_seconds() - cpu_before
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cores_busy": round(cpu / wall, 2)}


def run_setup(setup: str, config: DistributedConfig, data: Path, work: Path, log: Path) -> dict:
    output = work / setup.replace(" ", "_")
    if setup == "one process":
        commands = [(training_command(config, data, output, "none"), dict(os.environ))]
    else:
        command = training_command(config, data, output, "multi-worker")
        commands = [(command, os.environ | {"TF_CONFIG": tf}) for tf in loopback_tf_configs(2)]
    figures = timed_processes(commands, log, config.timeout_s)
    metrics = json.loads((output / "metrics.json").read_text())["models"]
    figures["models"] = {
        name: {
            "seconds_per_epoch": round(entry["train_seconds"] / entry["epochs_run"], 1),
            "epochs_run": entry["epochs_run"],
            "val_accuracy": entry["val_accuracy"],
        }
        for name, entry in metrics.items()
    }
    print(f"{setup}: {figures['wall_s']} s wall, {figures['cpu_s']} s CPU, {figures['models']}")
    return {"setup": setup} | figures


def distributed_markdown(results: dict) -> str:
    config, machine = results["config"], results["machine"]
    lines = [
        "# Training: one process against two multi-worker processes",
        "",
        f"Models {', '.join(config['models'])}, {config['epochs']} epochs, global batch "
        f"sizes as in TrainConfig (scratch_cnn {results['batch_sizes']['scratch_cnn']}), "
        f"bundled digits (limit per class {config['limit_per_class'] or 'none'}); machine: "
        f"{machine['cpu_model']}, {machine['usable_cores']} cores, "
        f"{', '.join(machine['gpus']) or 'no GPU'}. Both setups "
        "share the machine's cores; two workers exchange gradients over loopback gRPC.",
        "",
    ]
    rows = []
    for round_index, round_runs in enumerate(results["rounds"], start=1):
        for run in round_runs:
            for name, model in run["models"].items():
                rows.append([
                    str(round_index), run["setup"], name, f"{run['wall_s']:.0f}",
                    f"{model['seconds_per_epoch']:.1f}", f"{run['cpu_s']:.0f}",
                    f"{run['cores_busy']:.2f}", f"{100 * model['val_accuracy']:.2f} %",
                ])  # fmt: skip
    header = ["round", "setup", "model", "wall s", "s/epoch", "CPU s", "cores busy", "val acc"]
    lines += table(header, rows)
    ratios = ", ".join(f"{ratio:.2f}" for ratio in results["wall_ratio_two_over_one"])
    lines += [
        "",
        f"Wall-time ratio two workers / one process, per round: {ratios}.",
        "",
        f"![wall time per setup]({results['figure']})",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv=None) -> DistributedConfig:
    return parse_settings(
        DistributedConfig(),
        "python -m benchmarks.distributed_training",
        __doc__.split("\n")[0],
        argv,
    )


def main(argv=None) -> int:
    config = parse_args(argv)
    output = claim_folder(config.output)
    data = materialise_bundled_digits(TrainConfig().cache_dir)  # once, before any worker
    defaults = TrainConfig()
    results = {
        "config": asdict(config) | {"output": str(config.output)},
        "machine": machine_info(),
        "batch_sizes": {"scratch_cnn": defaults.batch_size, "vgg16": defaults.vgg16_batch_size},
        "rounds": [],
    }
    with tempfile.TemporaryDirectory(prefix="digits-distributed-") as work:
        for index in range(config.rounds):
            order = SETUPS if index % 2 == 0 else SETUPS[::-1]
            runs = {
                setup: run_setup(
                    setup, config, data, Path(work) / str(index), output / f"run{index}.log"
                )
                for setup in order
            }
            results["rounds"].append([runs[setup] for setup in SETUPS])
    results["wall_ratio_two_over_one"] = [
        round(two["wall_s"] / one["wall_s"], 2) for one, two in results["rounds"]
    ]
    results["figure"] = plots.training_wall_times(
        results["rounds"], output / "distributed_training.png"
    ).name
    write_results(results, distributed_markdown(results), output, "distributed_training")
    return 0


if __name__ == "__main__":
    run_cli(main)
