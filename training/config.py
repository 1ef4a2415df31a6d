"""Every setting of a training run, in one place (the CLI fills it, tests build it)."""

from dataclasses import dataclass, field
from pathlib import Path

from common.contract import DEFAULT_OUTPUT, MODEL_NAMES

# or a path to a local VGG16 notop .h5; "digits" = the offline fallback backbone directly
BASE_WEIGHTS_CHOICES = ("auto", "imagenet", "digits")
DISTRIBUTE_CHOICES = ("auto", "none", "mirrored", "multi-worker")  # training/distribute.py


@dataclass(frozen=True)
class PretrainConfig:
    """Fallback backbone: VGG16 trained on the bundled digits 3-9, on small images first
    and then on larger ones (progressive resizing): the small stage is cheap, the larger
    one teaches the filters the stroke widths they will see at 100x100."""

    stages: tuple[tuple[int, int], ...] = ((32, 4), (64, 1))  # (image side px, epochs)
    per_class: int = 600  # samples per digit 3..9 (7 classes); 0 = all
    batch_size: int = 64
    learning_rate: float = 2e-4

    def stages_label(self) -> str:
        """Each stage's image side and epochs, written as in "32x4,64x1"."""
        return ",".join(f"{side}x{epochs}" for side, epochs in self.stages)


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path | None = None  # None: the bundled digits, materialised under cache_dir
    output_dir: Path = Path(DEFAULT_OUTPUT)
    cache_dir: Path = Path("data")  # materialised digits and fallback backbones (git-ignored)
    models: tuple[str, ...] = MODEL_NAMES
    epochs: int = 10  # at most, per model and per fine-tuning phase (early stopping)
    batch_size: int = 16  # scratch_cnn (3 seeds: 4 errors in all at 16, 5 at 32)
    vgg16_batch_size: int = 32  # both fine-tuning phases
    seed: int = 1337
    validation_fraction: float = 0.2
    base_weights: str = "auto"  # "auto" | "imagenet" | "digits" | path to a VGG16 notop .h5
    skip_bad_files: bool = False  # corrupt/non-image files: fatal unless set
    limit_per_class: int = 0  # 0 = every image; >0 = a small deterministic subset (tests)
    export: bool = True
    verbose: int = 1  # Keras progress bars (2 = one line per epoch)
    learning_rate: float = 1e-3  # scratch CNN, and the VGG16 head in phase 1
    finetune_learning_rate: float = 5e-5  # VGG16 phase 2 (block5 unfrozen; 1e-4 oscillated)
    # VGG16: augmented passes whose block4 features are precomputed (docs/training.md: one
    # copy is too few views per image for block5 to fine-tune on)
    augmented_copies: int = 2
    early_stopping_patience: int = 3
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    # "auto" (one device; MirroredStrategy when several GPUs are visible), "none",
    # "mirrored" or "multi-worker" (TF_CONFIG); batch sizes above are global under each
    distribute: str = "auto"
