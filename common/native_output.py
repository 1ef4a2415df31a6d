"""What native (C/C++) code prints straight to file descriptor 2, caught so that a command
can route it into its own log instead of breaking a structured log stream."""

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def captured_native_stderr() -> Iterator[list[str]]:
    """The non-empty lines written to descriptor 2 inside the block (Python's sys.stderr
    included); they are in the yielded list once the block ends."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
