"""`python -m serving`: serve the model repository over gRPC until SIGTERM/SIGINT."""

import asyncio

from common.cli import run_cli
from serving.config import parse_config
from serving.logs import configure_logging
from serving.server import serve


def main() -> int:
    config = parse_config()
    configure_logging(config.log_format)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    run_cli(main)
