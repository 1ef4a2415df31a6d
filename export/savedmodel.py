"""The serving function shared by both formats, and the TensorFlow SavedModel written from it."""

from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from common.contract import IMAGE_SIZE, INPUT_NAME, OUTPUT_NAME
from common.model_runtime import SAVED_MODEL_SIGNATURE

INPUT_SIGNATURE = (tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32, name=INPUT_NAME),)


class ServingModule(tf.Module):
    """Wraps a Keras model in the contract's signature, always in inference mode.

    `training=False` is passed explicitly so dropout, batch norm and any augmentation
    layer are traced in inference mode, whatever the model's default call would do.
    """

    def __init__(self, model: keras.Model):
        super().__init__(name="digits_serving")
        self.model = model

    @tf.function(input_signature=INPUT_SIGNATURE)
    def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: self.model(image, training=False)}


def save_saved_model(module: ServingModule, folder: Path) -> None:
    """Write saved_model.pb + variables/ directly into `folder` (TF Serving's version layout)."""
    tf.saved_model.save(module, str(folder), signatures={SAVED_MODEL_SIGNATURE: module.serve})
