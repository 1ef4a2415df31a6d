"""The scratch CNN's recipe: augmented images in, one phase of early-stopped training."""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from training import report
from training.config import TrainConfig
from training.data import Split
from training.distribute import Placement
from training.fitting import TrainingResult, fit_phase, phase_settings, phase_summary
from training.models import build_scratch_cnn
from training.pipeline import EVAL_BATCH_SIZE, evaluation_dataset, training_dataset
from training.reproducibility import make_reproducible


def image_data(config: TrainConfig, train: Split, validation: Split) -> Callable:
    """Augmented training images and plain validation images, as datasets, on demand."""
    return lambda: (
        training_dataset(
            train.images, train.labels, config.batch_size, config.seed, config.augmentation
        ),
        evaluation_dataset(validation.images, validation.labels, EVAL_BATCH_SIZE),
    )


def train_scratch_cnn(
    config: TrainConfig,
    placement: Placement,
    train: Split,
    validation: Split,
    workdir: Path,
    callbacks: list,
) -> TrainingResult:
    make_reproducible(config.seed)
    model = build_scratch_cnn()
    # Watched from --min-epochs on: the clean validation loss is lowest before the shifted
    # training digits are learnt (docs/training.md, Augmentation).
    settings = replace(
        phase_settings(config, "train", config.learning_rate), min_epochs=config.min_epochs
    )
    data = image_data(config, train, validation)
    history = fit_phase(model, data, workdir, settings, placement, callbacks)
    accuracy = report.evaluate(model, validation.images, validation.labels)["val_accuracy"]
    return TrainingResult(model, history, [phase_summary("train", history, accuracy)])
