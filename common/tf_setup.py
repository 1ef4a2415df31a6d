"""Environment TensorFlow must see before it is imported (tf2onnx needs Keras 2)."""

import os


def configure_tensorflow_environment() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
