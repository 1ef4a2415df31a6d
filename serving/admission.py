"""Admission: the work the server takes on is bounded before it is done, and ends cleanly.

gRPC itself bounds the calls in progress (`maximum_concurrent_rpcs`); this bounds the bytes
of the requests being worked on across all calls, so a flood of large requests is answered
RESOURCE_EXHAUSTED at once instead of queueing decoded images until memory runs out. On
shutdown it closes: new requests are answered UNAVAILABLE (retryable elsewhere) while the
admitted ones finish, and it counts them, so a drain can prove none was lost.
"""

import asyncio
import time

from serving import errors

DRAIN_POLL_S = 0.01


class Admission:
    """Used from the event loop only (no lock needed)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.inflight_bytes = 0
        self.in_progress = 0  # admitted requests not yet answered
        self.admitted = 0  # since start
        self.received_bytes = 0  # since start, refused requests too (see serving/memory.py)
        self.closed = False

    def refusal(self, size: int) -> str | None:
        """Why a request of `size` bytes cannot be taken on now (None: it can)."""
        if self.inflight_bytes + size <= self.max_bytes:
            return None
        return (
            f"server busy: {self.inflight_bytes} request bytes in progress, this request's "
            f"{size} would pass the limit of {self.max_bytes}; retry later"
        )

    def admit(self, size: int) -> None:
        """Take on a request of `size` bytes (release() it when answered); raises
        ServingError if closed or full. (Two calls, not a context manager: this runs on
        every request, and contextlib's generator costs more than the bookkeeping.)"""
        if self.closed:
            raise errors.unavailable("server is shutting down; retry (another replica)")
        if (reason := self.refusal(size)) is not None:
            raise errors.resource_exhausted(reason)
        self.inflight_bytes += size
        self.in_progress += 1
        self.admitted += 1

    def release(self, size: int) -> None:
        self.inflight_bytes -= size
        self.in_progress -= 1

    async def close_and_drain(self, timeout: float | None) -> bool:
        """Admit nothing more; wait until every admitted request is answered (or timeout)."""
        self.closed = True
        limit = None if timeout is None else time.monotonic() + timeout
        while self.in_progress and (limit is None or time.monotonic() < limit):
            await asyncio.sleep(DRAIN_POLL_S)
        return self.in_progress == 0
