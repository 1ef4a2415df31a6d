"""`python -m serving`: serve the model repository over gRPC until SIGTERM/SIGINT."""

import logging

from common.native_output import captured_native_stderr

# ONNX Runtime may print a plain-text warning when it is first imported (its device discovery
# in containers, for one): caught here and logged as a record of the server's own log.
with captured_native_stderr() as onnxruntime_import_output:
    import onnxruntime  # noqa: F401

from common.cli import run_cli  # noqa: E402
from serving.config import parse_config  # noqa: E402
from serving.logs import configure_logging  # noqa: E402
from serving.server import run_server  # noqa: E402
from serving.workers import serve_workers, worker_count  # noqa: E402


def main() -> int:
    config = parse_config()
    workers = worker_count(config)
    configure_logging(config.log_format, process="supervisor" if workers > 1 else None)
    for line in onnxruntime_import_output:
        logging.getLogger("serving").warning("onnxruntime at import", extra={"output": line})
    if workers > 1:
        return serve_workers(config, workers)
    run_server(config)
    return 0


if __name__ == "__main__":
    run_cli(main)
