"""A tiny training run in a fresh process with two logical CPU devices (TensorFlow allows
that only before it starts), so `--distribute mirrored` has two replicas to mirror over.

    python -m tests.distributed_training_run DISTRIBUTE DATA_DIR OUTPUT CACHE MODEL...

Dropout is switched off (rate 0) in every fit: its masks are drawn per replica, so with it
a mirrored run is another random draw, not the one-device run; everything else must agree.
"""

import sys
from pathlib import Path

from common.tf_setup import configure_tensorflow_environment

configure_tensorflow_environment()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from tests.test_training import TINY_PRETRAIN  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.run import run  # noqa: E402


class NoDropout(keras.callbacks.Callback):
    """Dropout layers read their rate when the training step is traced, after this runs."""

    def on_train_begin(self, logs=None):
        for layer in self.model.submodules:
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0


def main() -> None:
    distribute, data_dir, output, cache, *models = sys.argv[1:]
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    config = TrainConfig(
        data_dir=Path(data_dir),
        output_dir=Path(output),
        cache_dir=Path(cache),
        models=tuple(models),
        epochs=2,
        finetune_epochs=2,
        batch_size=8,
        vgg16_batch_size=8,
        font_digits=4,
        # every random layer draws per image, so a batch split between replicas is augmented
        # as it is whole; the mixed preset's one draw per batch (robust or standard) is not
        augmentation="robust",
        # float32: the two runs must agree to float32 rounding, which bfloat16 would swamp
        precision="float32",
        base_weights="digits",
        export=False,
        verbose=0,
        pretrain=TINY_PRETRAIN,
        distribute=distribute,
    )
    run(config, extra_callbacks=[NoDropout()])


if __name__ == "__main__":
    main()
