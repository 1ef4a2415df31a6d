"""Train scratch_cnn and vgg16_finetuned on handwritten digits 0/1/2, report, export.

Usage: python -m training.run [--data-dir DIR] [--output DIR] [--models a,b] [--epochs N]

Without --data-dir, the bundled digits are written once as a Hand_written_digits folder
of PNGs under --cache-dir and read back through the same code path as a user's folder.
"""

import sys
import time
from pathlib import Path

from common.cli import UserError, run_cli
from common.ownership import check_claimable, claim_folder
from common.settings import parse_settings
from training.bundled.materialise import materialise_bundled_digits
from training.cluster import cluster_role
from training.config import BASE_WEIGHTS_CHOICES, TrainConfig
from training.data import load_dataset
from training.font_digits import with_font_digits


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
    if config.font_digits:
        train = with_font_digits(train, config.font_digits, config.seed)
        print(f"font digits: {config.font_digits} per class added to the training split")
    if role.is_chief:  # the other workers of a multi-worker run write none of the run's files
        prepare_output_dir(config.output_dir)
    print(
        f"data: {data_dir}: {len(train.labels)} training and {len(validation.labels)} "
        f"validation images ({len(train.labels) + len(validation.labels)} in all)"
    )
    from training.job import train_all

    summary = train_all(config, data_dir, train, validation, list(extra_callbacks or []))
    if config.export and role.is_chief:
        from export.publish import export_trained_models

        published = export_trained_models(config.output_dir, list(config.models))
        for name, folder in published.items():
            print(f"exported {name}: {folder}")
    return summary


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    return parse_settings(TrainConfig(), "python -m training.run", __doc__.split("\n\n")[0], argv)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    start = time.perf_counter()
    run(config)
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
