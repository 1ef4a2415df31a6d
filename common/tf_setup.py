"""Environment TensorFlow must see before it is imported (tf2onnx needs Keras 2)."""

import os


def configure_tensorflow_environment() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    # TensorFlow's C++ log (e.g. "failed call to cuInit" on a machine without a GPU) would
    # break the commands' one-line errors; real failures raise in Python.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
