"""Admission by request bytes: work the server takes on is bounded before it is done.

gRPC itself bounds the calls in progress (`maximum_concurrent_rpcs`); this bounds the bytes
of the requests being worked on across all calls, so a flood of large requests is answered
RESOURCE_EXHAUSTED at once instead of queueing decoded images until memory runs out.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from serving import errors


class ByteAdmission:
    """Used from the event loop only (no lock needed)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.inflight_bytes = 0

    @contextmanager
    def admit(self, size: int) -> Iterator[None]:
        if self.inflight_bytes + size > self.max_bytes:
            raise errors.resource_exhausted(
                f"server busy: {self.inflight_bytes} request bytes in progress, this request's "
                f"{size} would pass the limit of {self.max_bytes}; retry later"
            )
        self.inflight_bytes += size
        try:
            yield
        finally:
            self.inflight_bytes -= size
