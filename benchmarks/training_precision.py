"""VGG16's two costly training stages in float32 and in mixed bfloat16, side by side.

    python -m benchmarks.training_precision [--images 512] [--rounds 2]

The stages `--precision` changes (training/vgg16_finetuned.py): the frozen blocks 1-4 run
over every image once (the feature cache), and block 5 + head train on those features
(phase 2). Each round times both stages under both policies, in alternating order, on the
same bundled digits and the same weights (the fallback backbone's architecture, seeded
random initialisation: the cost does not depend on the values). Reported per policy:
milliseconds and CPU milliseconds per image, and how far the bfloat16 features stray from
the float32 ones. Results: training_precision.json and .md in the results folder.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.config import RESULTS_DIR
from benchmarks.machine import machine_info
from benchmarks.results_files import machine_lines, table, write_results
from common.cli import positive_int, run_cli
from common.contract import IMAGE_SIZE
from common.ownership import claim_folder
from common.settings import parse_settings, setting
from training.bundled.materialise import load_bundled
from training.config import TrainConfig
from training.models import (
    build_vgg16_backbone,
    build_vgg16_finetuned,
    unfreeze_last_block,
    vgg16_parts,
)
from training.vgg16_finetuned import working_twin

POLICIES = ("float32", "mixed_bfloat16")
BATCH_SIZE = TrainConfig().vgg16_batch_size  # both stages, as in training


@dataclass(frozen=True)
class PrecisionConfig:
    images: int = setting(512, "images per stage and policy", parse=positive_int)
    rounds: int = setting(2, "rounds, each policy once per round, order alternating",
                          parse=positive_int)  # fmt: skip
    output: Path = setting(RESULTS_DIR / "training_precision", "results folder", parse=Path)


def timed(action) -> tuple[float, float]:
    """Wall and CPU seconds of `action()` (this process, every thread)."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` bundled digits 0-2 at 100x100, float32 pixels, and their labels."""
    images, labels = load_bundled((0, 1, 2))
    resized = tf.image.resize(images[:count, ..., np.newaxis], (IMAGE_SIZE, IMAGE_SIZE))
    return resized.numpy(), labels[:count]


def measure(policy: str, reference, pixels, labels) -> dict:
    """Both stages under `policy`, on a twin of `reference` (the float32 model)."""
    twin = working_twin(reference, policy)  # the reference itself in float32
    unfreeze_last_block(twin)  # block 5 trains in phase 2
    parts = vgg16_parts(twin)
    parts.trunk.predict(pixels[:BATCH_SIZE], verbose=0)  # traced before timing
    features: list[np.ndarray] = []
    trunk = timed(lambda: features.append(parts.trunk.predict(pixels, BATCH_SIZE, verbose=0)))
    parts.top.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    parts.top.fit(features[0][:BATCH_SIZE], labels[:BATCH_SIZE], verbose=0)
    top = timed(lambda: parts.top.fit(features[0], labels, BATCH_SIZE, verbose=0))
    per_image = 1000 / len(labels)
    return {
        "policy": policy,
        "trunk_ms": trunk[0] * per_image,
        "trunk_cpu_ms": trunk[1] * per_image,
        "phase2_ms": top[0] * per_image,
        "phase2_cpu_ms": top[1] * per_image,
        "features": features[0],
    }


def run_rounds(config: PrecisionConfig) -> list[dict]:
    tf.keras.utils.set_random_seed(0)
    reference = build_vgg16_finetuned(build_vgg16_backbone(IMAGE_SIZE, None))
    pixels, labels = digits(config.images)
    rows = []
    for index in range(config.rounds):
        order = POLICIES if index % 2 == 0 else POLICIES[::-1]
        by_policy = {p: measure(p, reference, pixels, labels) for p in order}
        exact, rounded = (by_policy[p].pop("features") for p in POLICIES)
        by_policy["mixed_bfloat16"]["feature_error"] = float(
            np.max(np.abs(rounded - exact)) / np.max(np.abs(exact))
        )
        for policy in POLICIES:
            rows.append({"round": index + 1} | by_policy[policy])
            print(rows[-1])
    return rows


def precision_markdown(results: dict) -> str:
    rows = [
        [str(r["round"]), r["policy"], f"{r['trunk_ms']:.1f}", f"{r['trunk_cpu_ms']:.1f}",
         f"{r['phase2_ms']:.2f}", f"{r['phase2_cpu_ms']:.2f}",
         f"{r['feature_error']:.1e}" if "feature_error" in r else "-"]
        for r in results["rows"]
    ]  # fmt: skip
    header = ["round", "policy", "blocks 1-4 ms/img", "CPU ms/img", "phase 2 ms/img",
              "CPU ms/img", "feature error"]  # fmt: skip
    speedups = results["speedups"]
    return "\n".join(
        [
            "# VGG16 training stages: float32 against mixed bfloat16",
            "",
            *machine_lines(results["machine"]),
            "",
            f"{results['config']['images']} bundled digits per stage, batch "
            f"{results['batch_size']}; feature error: the largest difference "
            "between the bfloat16 and float32 block-4 features, relative to the largest "
            "float32 feature.",
            "",
            *table(header, rows),
            "",
            "Speed-up of mixed bfloat16 (float32 time / bfloat16 time), per round: blocks 1-4 "
            + ", ".join(f"{s:.2f}x" for s in speedups["trunk"])
            + "; phase 2 "
            + ", ".join(f"{s:.2f}x" for s in speedups["phase2"])
            + ".",
            "",
        ]
    )


def main(argv=None) -> int:
    config = parse_settings(
        PrecisionConfig(),
        "python -m benchmarks.training_precision",
        __doc__.split("\n")[0],
        argv,
    )
    output = claim_folder(config.output)
    rows = run_rounds(config)
    pairs = list(zip(rows[::2], rows[1::2], strict=True))  # (float32, bfloat16) per round
    results = {
        "config": asdict(config) | {"output": str(config.output)},
        "batch_size": BATCH_SIZE,
        "machine": machine_info(),
        "rows": rows,
        "speedups": {
            stage: [round(f[f"{stage}_ms"] / b[f"{stage}_ms"], 2) for f, b in pairs]
            for stage in ("trunk", "phase2")
        },
    }
    write_results(results, precision_markdown(results), output, "training_precision")
    return 0


if __name__ == "__main__":
    run_cli(main)
