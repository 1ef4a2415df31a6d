"""Test-wide setup: TensorFlow's environment is fixed before anything imports it."""

from common.tf_setup import configure_tensorflow_environment

configure_tensorflow_environment()
