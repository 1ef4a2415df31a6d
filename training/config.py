"""Every setting of a training run, declared once: `python -m training.run --help` is built
from these fields (common/settings.py), and tests build the dataclass directly."""

import argparse
from dataclasses import dataclass
from pathlib import Path

from common.cli import fraction, non_negative_int, positive_int
from common.contract import DATASET_FOLDER, DEFAULT_OUTPUT, MODEL_NAMES
from common.settings import comma_list, setting

# or a path to a local VGG16 notop .h5; "digits" = the offline fallback backbone directly
BASE_WEIGHTS_CHOICES = ("auto", "imagenet", "digits")
DISTRIBUTE_CHOICES = ("auto", "none", "mirrored", "multi-worker")  # training/distribute.py
AUGMENTATION_PRESETS = ("standard", "robust", "mixed")  # training/augment.py
PRECISION_CHOICES = ("auto", "float32", "mixed_bfloat16")  # training/precision.py


def model_names(value: str) -> tuple[str, ...]:
    names = comma_list(value)
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model {', '.join(unknown) or '(none)'}; choose from {', '.join(MODEL_NAMES)}"
        )
    return names


def pretrain_stages(value: str) -> tuple[tuple[int, int], ...]:
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


def stages_label(stages: tuple[tuple[int, int], ...]) -> str:
    """Each stage's image side and epochs, written as in "32x4,64x1"."""
    return ",".join(f"{side}x{epochs}" for side, epochs in stages)


@dataclass(frozen=True)
class PretrainConfig:
    """Fallback backbone: VGG16 trained on the bundled digits 3-9, on small images first
    and then on larger ones (progressive resizing): the small stage is cheap, the larger
    one teaches the filters the stroke widths they will see at 100x100."""

    stages: tuple[tuple[int, int], ...] = setting(
        ((32, 4), (64, 1), (100, 1)),
        "fallback backbone: SIDExEPOCHS per stage, growing image sizes",
        parse=pretrain_stages,
        show=stages_label,
        metavar="SxE,SxE",
    )
    per_class: int = setting(
        600, "fallback: digits per class 3-9 (0 = all)", parse=non_negative_int
    )
    augmentation: str = setting(
        "standard",
        "fallback: augmentation preset of the pretraining (as --augmentation)",
        choices=AUGMENTATION_PRESETS,
    )
    # float32: pretrained in bfloat16 the backbone held out 95.5 % (96.9 % in float32) and
    # the fine-tuned model fell to 92.0 % at 8x8 (docs/training.md, Arithmetic)
    precision: str = setting(
        "float32",
        "fallback: arithmetic of the pretraining (as --precision; cached under its own name)",
        choices=PRECISION_CHOICES,
    )
    batch_size: int = 64
    learning_rate: float = 2e-4

    def stages_label(self) -> str:
        return stages_label(self.stages)


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path | None = setting(
        None, f"a {DATASET_FOLDER} folder (unset: the bundled digits)", parse=Path, metavar="DIR"
    )
    output_dir: Path = setting(
        Path(DEFAULT_OUTPUT), "output folder", parse=Path, flag="--output", metavar="DIR"
    )
    cache_dir: Path = setting(
        Path("data"),
        "materialised bundled digits and fallback backbones",
        parse=Path,
        metavar="DIR",
    )
    models: tuple[str, ...] = setting(MODEL_NAMES, "models to train", parse=model_names)
    epochs: int = setting(
        30, "at most N epochs for scratch_cnn and for vgg16_finetuned's head (phase 1)",
        parse=positive_int,
    )  # fmt: skip
    finetune_epochs: int = setting(
        10, "at most N epochs for vgg16_finetuned's phase 2 (block5 unfrozen; each about 1 "
        "min on 2 cores in bfloat16, 4 in float32)", parse=positive_int,
    )  # fmt: skip
    # scratch_cnn (3 seeds: 4 errors in all at 16, 5 at 32); global under --distribute
    batch_size: int = setting(16, "scratch_cnn's global batch", parse=positive_int)
    vgg16_batch_size: int = setting(
        32, "vgg16_finetuned's global batch (both phases)", parse=positive_int
    )
    seed: int = setting(1337, "split, initialisation, shuffling, augmentation", parse=int)
    validation_fraction: float = 0.2
    base_weights: str = setting(
        "auto",
        "VGG16 backbone: auto (ImageNet, else the digits 3-9 fallback), imagenet, digits (the "
        "fallback directly) or PATH to a local vgg16 notop .h5",
        metavar="W",
    )
    skip_bad_files: bool = setting(False, "skip unreadable images with a warning, else fatal")
    limit_per_class: int = setting(
        0, "at most N images per class, deterministic (0: all)", parse=non_negative_int
    )
    export: bool = setting(True, "publish to OUTPUT/model_repository after training")
    augmentation: str = setting(
        "mixed",
        "augmentation preset: standard, robust, or mixed (each batch one of the two; "
        "training/augment.py)",
        choices=AUGMENTATION_PRESETS,
    )
    font_digits: int = setting(
        300,
        "digits rendered from installed fonts, per class, added to the training split only "
        "(training/font_digits.py; 0: none)",
        parse=non_negative_int,
    )
    verbose: int = setting(1, "Keras progress bars (2: one line per epoch)", parse=int,
                           choices=(0, 1, 2))  # fmt: skip
    learning_rate: float = 1e-3  # scratch CNN, and the VGG16 head in phase 1
    finetune_learning_rate: float = 5e-5  # VGG16 phase 2 (block5 unfrozen; 1e-4 oscillated)
    # VGG16: augmented passes whose block4 features are precomputed (docs/training.md: one
    # copy is too few views per image for block5 to fine-tune on)
    augmented_copies: int = setting(
        2, "VGG16: augmented passes whose frozen-block features are cached",
        parse=non_negative_int,
    )  # fmt: skip
    # VGG16: the fixed set of views holds few coarse scans otherwise; with one, 8x8 low
    # resolution went from 94.9-97.0 % in every variant before to 97.75 % (docs/training.md)
    scanned_copies: int = setting(
        1, "VGG16: cached passes with every image scanned at a low resolution (standard "
        "transforms, then down to 6-32 px and back up)", parse=non_negative_int,
    )  # fmt: skip
    # VGG16 phase 2 fits its fixed views completely (training loss 0.003 against 0.038 on
    # validation at seed 7): a fresh draw of dropped block-4 channels each epoch varies them
    feature_dropout: float = setting(
        0.0, "VGG16 phase 2: share of the cached block-4 feature channels dropped, a fresh "
        "draw per view each epoch (0: none)", parse=fraction, metavar="F",
    )  # fmt: skip
    # its validation loss swung by half from one epoch to the next (0.025-0.076 at seed 7)
    finetune_ema: float = setting(
        0.0, "VGG16 phase 2: momentum of a moving average of the weights (Keras' use_ema), "
        "written into the model at every epoch's end, so validation, early stopping and the "
        "saved model see the average (0: none)", parse=fraction, metavar="M",
    )  # fmt: skip
    early_stopping_patience: int = setting(
        6, "epochs without a better val_loss before a phase stops", parse=positive_int,
        flag="--patience",
    )  # fmt: skip
    min_epochs: int = setting(
        12, "epochs scratch_cnn runs before early stopping watches val_loss (the best epoch "
        "is chosen among the later ones)", parse=non_negative_int,
    )  # fmt: skip
    pretrain: PretrainConfig = PretrainConfig()
    precision: str = setting(
        "auto",
        "VGG16's feature cache and phase 2: mixed_bfloat16 (bfloat16 compute, float32 "
        "weights; the saved model stays float32), float32, or auto (mixed_bfloat16 where the "
        "CPU or every GPU computes bfloat16 natively; training/precision.py)",
        choices=PRECISION_CHOICES,
    )
    distribute: str = setting(
        "auto",
        "auto: one device, or MirroredStrategy over several GPUs; mirrored: every local GPU "
        "(else logical CPU); multi-worker: MultiWorkerMirroredStrategy from TF_CONFIG",
        choices=DISTRIBUTE_CHOICES,
    )
