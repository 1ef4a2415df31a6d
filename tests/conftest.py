"""Test-wide setup: TensorFlow's environment is fixed before anything imports it."""

from pathlib import Path

import pytest

from common.tf_setup import configure_tensorflow_environment

configure_tensorflow_environment()


@pytest.fixture(scope="session")
def serving_repository(request, tmp_path_factory) -> Path:
    """A tiny real model repository (two seeded CNNs, ONNX), exported once and cached."""
    from tests.serving_support import cached_repository

    pytest_cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    if pytest_cache is None:
        cache = tmp_path_factory.mktemp("serving-repository-cache")
    else:
        cache = Path(pytest_cache.mkdir("serving-repository"))
    return cached_repository(cache, tmp_path_factory.mktemp("serving") / "model_repository")
