"""Train scratch_cnn and vgg16_finetuned on handwritten digits 0/1/2, report, export.

Usage: python -m training.run [--data-dir DIR] [--output DIR] [--models a,b] [--epochs N]

Without --data-dir, the bundled digits are written once as a Hand_written_digits folder
of PNGs under --cache-dir and read back through the same code path as a user's folder.
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from common.cli import ArgumentParser, UserError, non_negative_int, positive_int, run_cli
from common.contract import DATASET_FOLDER, MODEL_NAMES
from common.ownership import check_claimable, claim_folder
from training.bundled.materialise import materialise_bundled_digits
from training.cluster import cluster_role
from training.config import (
    BASE_WEIGHTS_CHOICES,
    DISTRIBUTE_CHOICES,
    PretrainConfig,
    TrainConfig,
)
from training.data import load_dataset


def prepare_output_dir(path: Path) -> None:
    """Claim the output folder (ours, or new, or empty) and prove it is writable, before any
    slow work and before anything else is written."""
    claim_folder(path)
    claim_folder(path / "checkpoints")
    try:
        for folder in (path / "keras", path / "report"):
            folder.mkdir(exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{path}: output folder not writable ({error.strerror or error})") from None


def check_base_weights(config: TrainConfig) -> None:
    if "vgg16_finetuned" not in config.models or config.base_weights in BASE_WEIGHTS_CHOICES:
        return
    if not Path(config.base_weights).is_file():
        raise UserError(f"{config.base_weights}: VGG16 weights file not found")


def run(config: TrainConfig, extra_callbacks: list | None = None) -> dict:
    """The whole job; returns the summary of every model in the output folder.

    Inputs are checked before TensorFlow is imported, so a user error answers at once; the
    output path is checked before the bundled digits are written, and created only once
    the data has been read.
    """
    check_base_weights(config)
    role = cluster_role(config.distribute)
    check_claimable(config.output_dir)
    data_dir = config.data_dir or materialise_bundled_digits(config.cache_dir)
    train, validation = load_dataset(
        data_dir,
        config.validation_fraction,
        config.seed,
        config.skip_bad_files,
        config.limit_per_class,
    )
    if role.is_chief:  # the other workers of a multi-worker run write none of the run's files
        prepare_output_dir(config.output_dir)
    print(
        f"data: {data_dir}: {len(train.labels)} training and {len(validation.labels)} "
        f"validation images ({len(train.labels) + len(validation.labels)} in all)"
    )
    from training.trainers import train_all

    summary = train_all(config, data_dir, train, validation, list(extra_callbacks or []))
    if config.export and role.is_chief:
        from export.publish import export_trained_models

        published = export_trained_models(config.output_dir, list(config.models))
        for name, folder in published.items():
            print(f"exported {name}: {folder}")
    return summary


def _models(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model {', '.join(unknown) or '(none)'}; choose from {', '.join(MODEL_NAMES)}"
        )
    return names


def _stages(value: str) -> tuple[tuple[int, int], ...]:
    """Parse "32x4,64x1" into ((32, 4), (64, 1)): image side (>= 32, VGG16's least) x epochs."""
    try:
        stages = tuple(tuple(int(n) for n in part.split("x")) for part in value.split(","))
    except ValueError:
        stages = ()
    if not stages or any(len(s) != 2 or s[0] < 32 or s[1] < 1 for s in stages):
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected SIDExEPOCHS stages such as 32x4,64x1 (side >= 32, epochs >= 1)"
        )
    return stages


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults, pretrain = TrainConfig(), PretrainConfig()
    parser = ArgumentParser(
        prog="python -m training.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--data-dir", type=Path, help=f"a {DATASET_FOLDER} folder; None = the bundled digits")
    add("--output", type=Path, default=defaults.output_dir, help="output folder")
    add("--models", type=_models, default=",".join(defaults.models), help="comma-separated")
    add("--epochs", type=positive_int, default=defaults.epochs, help="max epochs per model/phase")
    add("--batch-size", type=positive_int, default=defaults.batch_size, help="scratch_cnn step")
    add(
        "--vgg16-batch-size",
        type=positive_int,
        default=defaults.vgg16_batch_size,
        help="vgg16_finetuned step (both phases)",
    )
    add("--seed", type=int, default=defaults.seed, help="split, init, shuffling, augmentation")
    add(
        "--base-weights",
        default=defaults.base_weights,
        help="VGG16 backbone: auto (ImageNet, else the digits 3-9 fallback), imagenet, "
        "digits (the fallback directly) or PATH to a local vgg16 notop .h5",
    )
    add("--no-export", action="store_true", help="do not publish to OUTPUT/model_repository")
    add("--skip-bad-files", action="store_true", help="skip unreadable images, else fatal")
    add("--cache-dir", type=Path, default=defaults.cache_dir, help="bundled data + backbones")
    count = non_negative_int
    add("--limit-per-class", type=count, default=0, help="at most N images per class; 0 = all")
    add(
        "--augmented-copies",
        type=count,
        default=defaults.augmented_copies,
        help="VGG16: augmented passes of the training images (frozen-block features cached)",
    )
    add(
        "--pretrain-stages",
        type=_stages,
        default=pretrain.stages_label(),
        help="fallback backbone: SIDExEPOCHS per stage, growing image sizes",
    )
    add("--pretrain-per-class", type=count, default=pretrain.per_class, help="fallback: 0 = all")
    add(
        "--distribute",
        choices=DISTRIBUTE_CHOICES,
        default=defaults.distribute,
        help="auto: one device, or MirroredStrategy over several GPUs; mirrored: every local "
        "GPU (else logical CPU); multi-worker: MultiWorkerMirroredStrategy from TF_CONFIG. "
        "Batch sizes are global",
    )
    add("--verbose", type=int, choices=(0, 1, 2), default=defaults.verbose, help="Keras bars")
    args = parser.parse_args(argv)
    return replace(
        defaults,
        data_dir=args.data_dir,
        output_dir=args.output,
        cache_dir=args.cache_dir,
        models=args.models,
        epochs=args.epochs,
        batch_size=args.batch_size,
        vgg16_batch_size=args.vgg16_batch_size,
        seed=args.seed,
        base_weights=args.base_weights,
        skip_bad_files=args.skip_bad_files,
        limit_per_class=args.limit_per_class,
        export=not args.no_export,
        augmented_copies=args.augmented_copies,
        verbose=args.verbose,
        distribute=args.distribute,
        pretrain=replace(
            pretrain,
            stages=args.pretrain_stages,
            per_class=args.pretrain_per_class,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    start = time.perf_counter()
    run(config)
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
