"""python -m export.run --output DIR: (re-)export the trained models found in DIR."""

import argparse
import logging
import signal
import sys
from pathlib import Path

from common.cli import ArgumentParser, positive_int, run_cli
from common.contract import DEFAULT_OUTPUT
from export.config import ExportOptions
from export.publish import export_trained_models


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m export.run",
        description="Publish every trained model in DIR/keras as a new version of "
        "DIR/model_repository/<model>/ (SavedModel + ONNX, proven equal, Triton config).",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(DEFAULT_OUTPUT),
        help="training output folder: keras/, validation_images.npz, metrics.json "
        f"[{DEFAULT_OUTPUT}]",
    )
    parser.add_argument(
        "--models",
        type=lambda text: [name for name in text.split(",") if name],
        help="comma list of models to export [every DIR/keras/*.keras]",
    )
    parser.add_argument(
        "--provider",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="ONNX Runtime execution provider for the checks [auto]",
    )
    parser.add_argument("--no-fp16", action="store_true", help="skip the float16 GPU variant")
    parser.add_argument(
        "--speed-repeats",
        type=positive_int,
        default=ExportOptions.speed_repeats,
        help=f"timed runs per optimisation level and batch size [{ExportOptions.speed_repeats}]",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so an interrupted export removes its temporary folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("export").setLevel(logging.INFO)  # our progress; libraries stay quiet
    options = ExportOptions(
        providers=args.provider, fp16=not args.no_fp16, speed_repeats=args.speed_repeats
    )
    for name, folder in export_trained_models(args.output, args.models, options).items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    run_cli(main)
