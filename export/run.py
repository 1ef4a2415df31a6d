"""python -m export.run --output DIR: (re-)export the trained models found in DIR."""

import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from common.cli import run_cli
from common.contract import DEFAULT_OUTPUT
from common.settings import comma_list, parse_settings, setting, settings_group
from export.config import ExportOptions
from export.publish import export_trained_models


@dataclass(frozen=True)
class ExportCommand:
    output: Path = setting(
        Path(DEFAULT_OUTPUT),
        "training output folder: keras/, validation_images.npz, metrics.json",
        parse=Path,
        metavar="DIR",
    )
    models: tuple[str, ...] = setting(
        (), "models to export (unset: every DIR/keras/*.keras)", parse=comma_list
    )
    options: ExportOptions = settings_group(ExportOptions(), prefix="")


def parse_args(argv: list[str] | None = None) -> ExportCommand:
    return parse_settings(
        ExportCommand(),
        "python -m export.run",
        "Publish every trained model in DIR/keras as a new version of "
        "DIR/model_repository/<model>/ (SavedModel + ONNX, proven equal, Triton config).",
        argv,
    )


def main(argv: list[str] | None = None) -> None:
    command = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so an interrupted export removes its temporary folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in ("export", "digits"):  # our progress and provider choice; libraries stay quiet
        logging.getLogger(name).setLevel(logging.INFO)
    models = list(command.models) or None
    for name, folder in export_trained_models(command.output, models, command.options).items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    run_cli(main)
