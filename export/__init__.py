"""Export stage: trained Keras models to SavedModel + ONNX, proven equal, versioned."""

import os

from common.tf_setup import configure_tensorflow_environment

# TensorFlow's C++ error log (e.g. "failed call to cuInit" on a machine without a GPU)
# would break `python -m export.run`'s one-line errors; real failures raise in Python.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
configure_tensorflow_environment()
