"""Export stage: trained Keras models to SavedModel + ONNX, proven equal, versioned."""

from common.tf_setup import configure_tensorflow_environment

configure_tensorflow_environment()
