"""The fine-tuned VGG16's recipe, top to bottom.

1. The backbone: ImageNet weights, or the package's own fallback pretrained on digits 3-9
   (training/backbone.py), loaded into VGG16's convolutional base at 100x100.
2. The model: VGG16 preprocessing in-graph, the frozen base, global average pooling and a
   small dense head (training/models.py). It stays float32; with `--precision
   mixed_bfloat16` the steps below run on a twin built under that policy, and the trained
   weights are copied back (training/precision.py).
3. The feature cache: blocks 1-4 stay frozen in both phases, so their output is computed
   once, for the training images, `augmented_copies` augmented passes of them and
   `scanned_copies` passes at a low resolution, and for the validation images.
4. Phase 1: the head trains on block-5 features of the cache (backbone frozen).
5. Phase 2: block 5 is unfrozen and trains with the head on block-4 features, at a low
   learning rate.
"""

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tf_keras as keras

from common.contract import IMAGE_SIZE
from training.augment import SCANNED
from training.backbone import resolve_backbone
from training.config import TrainConfig
from training.data import Split
from training.distribute import Placement
from training.fitting import (
    TrainingResult,
    fit_phase,
    phase_settings,
    phase_summary,
    restored_epoch,
)
from training.models import (
    VGG16Parts,
    build_vgg16_backbone,
    build_vgg16_finetuned,
    unfreeze_last_block,
    vgg16_parts,
)
from training.pipeline import (
    EVAL_BATCH_SIZE,
    augmented_dataset,
    evaluation_dataset,
    feature_dataset,
)
from training.precision import compute_policy, copy_weights, resolve_precision
from training.reproducibility import make_reproducible


def augmented_pass_presets(config: TrainConfig) -> list[str]:
    """The augmentation preset of each cached pass after the clean one."""
    return [config.augmentation] * config.augmented_copies + [SCANNED] * config.scanned_copies


class FeatureCache:
    """Frozen-stage outputs, computed once per run: block4 features of the training images
    (plus the passes of augmented_pass_presets) and of the validation images; block5
    features derived from them for phase 1."""

    def __init__(self, parts: VGG16Parts, config: TrainConfig, train: Split, validation: Split):
        self.parts, self.config, self.train, self.validation = parts, config, train, validation
        self.block4: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.seconds = 0.0

    def _block4(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.block4 is None:
            config, train, validation = self.config, self.train, self.validation
            start = time.perf_counter()
            passes = [evaluation_dataset(train.images, train.labels, EVAL_BATCH_SIZE)] + [
                augmented_dataset(
                    train.images, train.labels, EVAL_BATCH_SIZE, config.seed + k, preset
                )
                for k, preset in enumerate(augmented_pass_presets(config))
            ]
            predict = self.parts.trunk.predict
            features = np.concatenate([predict(p, verbose=config.verbose) for p in passes])
            val_data = evaluation_dataset(validation.images, validation.labels, EVAL_BATCH_SIZE)
            self.block4 = (
                features,
                np.tile(train.labels, len(passes)),
                predict(val_data, verbose=config.verbose),
            )
            self.seconds += time.perf_counter() - start
            print(
                f"frozen blocks 1-4: features of {len(features)} training images "
                f"({len(passes)} pass(es)) and {len(validation.labels)} validation images "
                f"in {time.perf_counter() - start:.0f} s"
            )
        return self.block4

    def _datasets(self, features, labels, val_features, channel_dropout: float = 0.0) -> tuple:
        config = self.config
        return (
            feature_dataset(
                features, labels, config.vgg16_batch_size, config.seed, channel_dropout
            ),
            feature_dataset(val_features, self.validation.labels, EVAL_BATCH_SIZE),
        )

    def block4_data(self) -> tuple:
        return self._datasets(*self._block4(), channel_dropout=self.config.feature_dropout)

    def block5_data(self) -> tuple:
        features, labels, val_features = self._block4()
        start = time.perf_counter()
        block5 = self.parts.block5.predict
        outputs = (block5(features, verbose=0), labels, block5(val_features, verbose=0))
        self.seconds += time.perf_counter() - start
        return self._datasets(*outputs)


def working_twin(model: keras.Model, precision: str) -> keras.Model:
    """The model the phases train: `model` itself in float32, else the same architecture
    built under the mixed policy, starting from `model`'s weights."""
    if precision == "float32":
        return model
    with compute_policy(precision):
        twin = build_vgg16_finetuned(build_vgg16_backbone(IMAGE_SIZE, None))
    copy_weights(model, twin)
    return twin


def train_vgg16_finetuned(
    config: TrainConfig,
    placement: Placement,
    train: Split,
    validation: Split,
    workdir: Path,
    callbacks: list,
) -> TrainingResult:
    """Phase 1: backbone frozen, train the head. Phase 2: unfreeze block5, low learning rate.

    Blocks 1-4 stay frozen throughout, so their output is computed once (for the images, their
    augmented and scanned passes): phase 1 trains the head on block5 features, phase 2
    block5 + head on block4 features, instead of a 100x100 VGG16 pass per image per epoch.
    """
    precision = resolve_precision(config.precision)
    backbone = resolve_backbone(config, placement)
    print(f"vgg16_finetuned: backbone = {backbone.name}, training in {precision}")
    make_reproducible(config.seed)
    model = build_vgg16_finetuned(backbone.model)  # float32: what is saved and exported
    working = working_twin(model, precision)
    parts = vgg16_parts(working)
    cache = FeatureCache(parts, config, train, validation)
    # The head is watched from its first epoch: held to --min-epochs as well it reached
    # 99.52 % clean after phase 2, against 99.84 % (docs/training.md, Augmentation).
    phase1 = phase_settings(config, "phase1", config.learning_rate)
    history1 = fit_phase(parts.head, cache.block5_data, workdir, phase1, placement, callbacks)
    unfreeze_last_block(working)  # block5 trainable, blocks 1-4 stay frozen
    unfreeze_last_block(model)  # the saved model's trainable flags say what was trained
    # bounded on its own: an epoch of it costs about as much as eight of scratch_cnn's
    phase2 = replace(
        phase_settings(config, "phase2", config.finetune_learning_rate),
        epochs=config.finetune_epochs,
        ema_momentum=config.finetune_ema,
    )
    history2 = fit_phase(parts.top, cache.block4_data, workdir, phase2, placement, callbacks)
    copy_weights(working, model)  # the trained weights into the float32 model (or itself)
    phases = []
    for settings, history in ((phase1, history1), (phase2, history2)):
        best = restored_epoch(history, settings.min_epochs)  # the weights kept: their accuracy
        summary = phase_summary(settings.name, history, best["val_accuracy"])
        phases.append(summary | {"precision": precision})
    phases[0]["feature_seconds"] = round(cache.seconds, 1)
    return TrainingResult(model, history1 + history2, phases, backbone.name, backbone.pretraining)
