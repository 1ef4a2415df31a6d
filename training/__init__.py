"""Training of both digit classifiers (`python -m training.run`)."""

from common.tf_setup import configure_tensorflow_environment

configure_tensorflow_environment()
