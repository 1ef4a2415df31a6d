"""Benchmarks: latency/throughput through the server, references in-process, and accuracy.

`python -m benchmarks.latency` and `python -m benchmarks.accuracy`; see docs/benchmarks.md.
"""

from common.tf_setup import configure_tensorflow_environment

configure_tensorflow_environment()
