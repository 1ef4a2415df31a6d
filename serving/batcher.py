"""Dynamic batching for one model version: requests arriving close together share one run.

Callers put their preprocessed pixels on a bounded queue and await a future. One task per
version takes the first waiting request, gathers more until the batch is full or the
first request has waited `delay`, drops callers whose deadline already passed, runs ONNX
Runtime in a worker thread (a batch cheaper than the hand-off, on the loop) and hands each
caller its own rows of the output. A request finding nothing to batch with is run at once
by its caller instead, on the loop, when its model runs faster than the trip through the
queue.
"""

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from common.contract import IMAGE_SIZE
from serving import errors
from serving.metrics import ServerMetrics
from serving.runtime import ModelVersion
from serving.statistics import VersionStatistics

log = logging.getLogger("serving.batcher")


@dataclass
class Job:
    pixels: np.ndarray  # uint8 [k, 100, 100]
    future: asyncio.Future
    deadline: float | None  # event-loop time
    enqueued: float = field(default_factory=lambda: asyncio.get_running_loop().time())

    @property
    def size(self) -> int:
        return len(self.pixels)


# A batch expected to run in less than this runs on the event loop: the hand-off to a thread
# and back costs about as much. A longer run belongs in a thread: while it blocks the loop, no
# request is read, so none can queue for the next batch (0.5 ms here ran scratch_cnn's
# single images on the loop: 8 % fewer images/s at C=32; docs/serving.md, Dynamic batching).
INLINE_INFERENCE_S = 0.0002
# A request whose model runs in less than this skips the queue when nothing is waiting:
# queueing it and handing the answer back costs the loop about this much CPU (measured with
# the no-op model: docs/serving.md, Throughput), more than a batch could save it.
RUN_ALONE_S = 0.0001
_STOP = object()  # queued by close(): everything before it is still answered


def deadline_passed(deadline: float | None) -> errors.ServingError | None:
    """The error for a caller whose deadline (event-loop time) passed before its run."""
    if deadline is None or asyncio.get_running_loop().time() < deadline:
        return None
    return errors.deadline_exceeded("deadline passed before the request's batch ran")


def assemble_and_predict(
    model: ModelVersion, parts: list[np.ndarray]
) -> tuple[np.ndarray, int, int]:
    """Write every caller's uint8 pixels into one float32 batch (the only copy) and run it:
    the probabilities, and the nanoseconds spent assembling and running."""
    start = time.perf_counter_ns()
    batch = np.empty((sum(len(p) for p in parts), IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
    offset = 0
    for part in parts:
        batch[offset : offset + len(part), :, :, 0] = part
        offset += len(part)
    assembled = time.perf_counter_ns()
    probabilities = model.predict(batch)
    return probabilities, assembled - start, time.perf_counter_ns() - assembled


class Batcher:
    def __init__(
        self,
        model: ModelVersion,
        *,
        max_batch_size: int,
        delay_s: float,
        capacity: int,
        batching: bool,
        executor: Executor,
        metrics: ServerMetrics,
    ):
        self.model = model
        self.max_batch_size = max_batch_size
        self.delay_s = delay_s
        self.capacity = capacity
        self.batching = batching
        self.executor = executor
        self.metrics = metrics.for_model(model.name)
        self.pending_images = 0
        self.stats = VersionStatistics()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._carry: Job | object | None = None
        self._busy = False  # a batch is being run (on the loop or in a thread)
        self._closing = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self.model.name}")

    async def classify(self, pixels: np.ndarray, deadline: float | None) -> np.ndarray:
        """Probabilities [k, classes] for uint8 pixels [k, 100, 100]; raises ServingError."""
        if self._closing:
            raise errors.unavailable(f"{self.model.name} version {self.model.version} is unloading")
        if len(pixels) > self.capacity:
            raise errors.resource_exhausted(
                f"{len(pixels)} images exceed the queue capacity of {self.capacity}"
            )
        if self.pending_images + len(pixels) > self.capacity:
            raise errors.resource_exhausted(
                f"queue of {self.model.name} is full ({self.pending_images} images waiting, "
                f"capacity {self.capacity})"
            )
        if self._can_run_alone(len(pixels)):
            return self._run_alone(pixels, deadline)
        job = Job(pixels, asyncio.get_running_loop().create_future(), deadline)
        self._queue.put_nowait(job)
        self._count_pending(job.size)
        return await job.future

    def _can_run_alone(self, images: int) -> bool:
        """Nothing to batch with (no batch running or queued, and no delay to wait for one),
        and the run cheaper than the trip through the queue. (Not a slower model's request
        that is its process's only one: at C=32 the loop runs one handler after another, so
        each looks alone, and run on the loop they stopped forming batches, docs/serving.md.)"""
        idle = not self._busy and self._carry is None and self._queue.empty()
        if not idle or (self.batching and self.delay_s > 0):
            return False
        return images * self.model.image_seconds <= RUN_ALONE_S

    def _run_alone(self, pixels: np.ndarray, deadline: float | None) -> np.ndarray:
        """The request's own batch, run right here: no queue, future or task switch (these
        cost more than the no-op model's whole run, docs/serving.md)."""
        if (expired := deadline_passed(deadline)) is not None:
            raise expired
        self.stats.queue.add(0)
        try:
            probabilities, input_ns, infer_ns = assemble_and_predict(self.model, [pixels])
        except Exception as error:
            raise errors.internal(self._logged_failure(error)) from None
        self._record_batch(1, len(probabilities), input_ns, infer_ns, 0)
        return probabilities

    def _record_batch(self, jobs: int, images: int, input_ns: int, infer_ns: int, output_ns: int):
        self.metrics.batch_size.observe(images)
        self.metrics.inference.observe(infer_ns / 1e9)
        self.stats.record_batch(jobs, images, input_ns, infer_ns, output_ns)

    def _logged_failure(self, error: Exception) -> str:
        """Log a failed run once; the message each of its callers gets."""
        log.exception("inference failed", extra={"model": self.model.name})
        return f"inference failed: {error}"

    async def close(self) -> None:
        """Answer everything queued so far, then stop."""
        self._closing = True
        self._queue.put_nowait(_STOP)
        if self._task is not None:
            await self._task

    def _count_pending(self, images: int) -> None:
        self.pending_images += images
        self.metrics.queue_depth.inc(images)

    async def _run(self) -> None:
        while True:
            jobs = await self._next_batch()
            if jobs is None:
                return
            live = self._drop_expired(jobs)
            self._busy = True
            try:
                if live:
                    await self._infer(live)
            finally:
                self._busy = False

    async def _take(self, timeout: float | None):
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        if timeout is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _next_batch(self) -> list[Job] | None:
        """The first waiting job plus whatever joins it in time; None once stopped."""
        first = await self._take(None)
        if first is _STOP:
            return None
        jobs, size = [first], first.size
        loop = asyncio.get_running_loop()
        close_at = first.enqueued + self.delay_s
        while self.batching and size < self.max_batch_size:
            job = await self._take(close_at - loop.time())
            if job is None:
                break
            if job is _STOP or size + job.size > self.max_batch_size:
                self._carry = job  # starts the next batch (or stops after this one)
                break
            jobs.append(job)
            size += job.size
        self._count_pending(-size)
        return jobs

    def _drop_expired(self, jobs: list[Job]) -> list[Job]:
        """Callers that gave up (cancelled) or whose deadline passed are not computed."""
        live = []
        for job in jobs:
            if job.future.done():
                continue
            if (expired := deadline_passed(job.deadline)) is not None:
                job.future.set_exception(expired)
                continue
            live.append(job)
        return live

    async def _infer(self, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        parts = [job.pixels for job in jobs]
        started = loop.time()
        for job in jobs:
            self.stats.queue.add(int((started - job.enqueued) * 1e9))
        try:
            if sum(map(len, parts)) * self.model.image_seconds <= INLINE_INFERENCE_S:
                probabilities, input_ns, infer_ns = assemble_and_predict(self.model, parts)
            else:
                probabilities, input_ns, infer_ns = await loop.run_in_executor(
                    self.executor, assemble_and_predict, self.model, parts
                )
        except Exception as error:  # a broken graph must not hang its callers
            message = self._logged_failure(error)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(errors.internal(message))
            return
        output_start = time.perf_counter_ns()
        offset = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(probabilities[offset : offset + job.size])
            offset += job.size
        output_ns = time.perf_counter_ns() - output_start
        self._record_batch(len(jobs), len(probabilities), input_ns, infer_ns, output_ns)
