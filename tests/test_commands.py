"""Every command: a bad value is one line on stderr and a non-zero exit, never a traceback."""

import subprocess
import sys

import pytest

from tests.serving_support import ROOT
from tests.test_serving_process import assert_one_line_error

BAD_VALUES = [
    ("training.run", "--epochs", "-1"),
    ("training.run", "--distribute", "ring"),
    ("training.bundled.build_archive", "--no-such-flag"),
    ("export.run", "--speed-repeats", "-3"),
    ("export.summary", "artifacts", "--no-such-flag"),
    ("serving", "--max-batch-size", "0"),
    ("serving.client", "--port", "x", "digit.png"),
    ("serving.client", "--port", "8500", "--timeout", "0", "digit.png"),
    ("serving.healthcheck", "--port", "-5"),
    ("serving.healthcheck", "--timeout", "nan"),
    ("benchmarks.latency", "--duration", "0"),
    ("benchmarks.latency", "--max-batch-size", "-1"),
    ("benchmarks.accuracy", "--no-such-flag"),
    ("benchmarks.flood", "--requests", "0"),
    ("benchmarks.protocols", "--seconds", "-1"),
    ("benchmarks.http_frameworks", "--seconds", "0"),
    ("benchmarks.distributed_training", "--rounds", "0"),
    ("benchmarks.distributed_training", "--models", "resnet"),
]


@pytest.mark.parametrize("command", BAD_VALUES, ids=[" ".join(c) for c in BAD_VALUES])
def test_a_bad_value_is_one_line_and_a_non_zero_exit(command):
    module, *args = command
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    flag = [arg for arg in args if arg.startswith("--")][-1]
    assert_one_line_error(result, flag)
