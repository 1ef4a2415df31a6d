"""The digits.v1.DigitClassifier service: validate, preprocess, batch, answer."""

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

import grpc
import numpy as np

from common.contract import IMAGE_SIZE
from protos.digits.v1 import digits_pb2, digits_pb2_grpc
from serving import errors
from serving.admission import Admission
from serving.batcher import Batcher
from serving.config import ServerConfig
from serving.logs import shown
from serving.metrics import ServerMetrics
from serving.preprocess import preprocess
from serving.registry import ModelRegistry
from serving.runtime import ModelVersion

T = TypeVar("T")

log = logging.getLogger("serving.service")

STREAM_WINDOW = 64  # requests of one ClassifyStream call being worked on at once
MAX_REQUEST_ID = 256  # characters; the id is echoed in the reply
UNKNOWN_MODEL = "<unknown>"  # metrics label for names that are not served (bounded cardinality)


def predictions(probabilities: np.ndarray, labels: tuple[str, ...]) -> list[digits_pb2.Prediction]:
    classes = probabilities.argmax(axis=1).tolist()
    rows = probabilities.tolist()
    return [
        digits_pb2.Prediction(class_index=c, label=labels[c], probability=row[c], probabilities=row)
        for c, row in zip(classes, rows, strict=True)
    ]


def model_metadata(versions: dict[int, Batcher], version: int) -> digits_pb2.ModelMetadata:
    """What a client needs to know of one version (shapes from its checked graph)."""
    model = versions[version].model
    return digits_pb2.ModelMetadata(
        name=model.name,
        version=model.version,
        versions=sorted(versions),
        labels=model.labels,
        input=digits_pb2.TensorSpec(
            name=model.input_name, dtype="float32", shape=[-1, IMAGE_SIZE, IMAGE_SIZE, 1]
        ),
        output=digits_pb2.TensorSpec(
            name=model.output_name, dtype="float32", shape=[-1, len(model.labels)]
        ),
        val_accuracy=model.val_accuracy,
        backbone=model.backbone,
        execution_provider=model.provider,
        metadata_json=model.metadata_json,
    )


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


class DigitClassifierService(digits_pb2_grpc.DigitClassifierServicer):
    def __init__(
        self,
        config: ServerConfig,
        registry: ModelRegistry,
        metrics: ServerMetrics,
        admission: Admission,
        decode_executor: Executor,
        decode_workers: int,
    ):
        self.admission = admission
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.decode_executor = decode_executor
        self.decode_workers = decode_workers

    async def infer(
        self, name: str, version: int, images: Sequence[digits_pb2.Image], deadline: float | None
    ) -> tuple[ModelVersion, np.ndarray]:
        """The classification path of every API: checks, decoding, batching; the version
        that answered and its probabilities [k, classes]. Raises ServingError."""
        asked = self.registry.get(name, version)  # NOT_FOUND before any work
        start = time.perf_counter_ns()
        try:
            answered, probabilities = await self._infer(name, version, images, deadline)
        except (errors.ServingError, asyncio.CancelledError):
            asked.stats.record_request(False, time.perf_counter_ns() - start, 0)
            raise
        answered.stats.record_request(True, time.perf_counter_ns() - start, len(probabilities))
        return answered.model, probabilities

    async def _infer(
        self, name: str, version: int, images: Sequence[digits_pb2.Image], deadline: float | None
    ) -> tuple[Batcher, np.ndarray]:
        count = len(images)
        if count == 0:
            raise errors.invalid_argument("request has no images")
        if count > self.config.max_images_per_request:
            raise errors.invalid_argument(
                f"too many images: {count} (at most {self.config.max_images_per_request})"
            )
        pixels = await preprocess(
            images, self.config.pixel_limits, self.decode_executor, self.decode_workers, deadline
        )
        # Looked up again after the await: a reload may have changed the newest version.
        batcher = self.registry.get(name, version)
        return batcher, await batcher.classify(pixels, deadline)

    async def classify(
        self, request: digits_pb2.ClassifyRequest, deadline: float | None
    ) -> digits_pb2.ClassifyResponse:
        """One digits.v1 request's answer; raises ServingError."""
        if len(request.request_id) > MAX_REQUEST_ID:
            raise errors.invalid_argument(
                f"request_id has {len(request.request_id)} characters (at most {MAX_REQUEST_ID})"
            )
        model, probabilities = await self.infer(
            request.model, request.version, request.images, deadline
        )
        return digits_pb2.ClassifyResponse(
            model=model.name,
            version=model.version,
            predictions=predictions(probabilities, model.labels),
            request_id=request.request_id,
        )

    async def measured(
        self, name: str, size: int, work: Callable[[], Awaitable[T]], deadline: float | None
    ) -> T:
        """`work()` (one request of `size` bytes for model `name`), once admitted, counted in
        the metrics, and its failures logged."""
        start = time.perf_counter()
        label = name if self.registry.serves(name) else UNKNOWN_MODEL
        status = grpc.StatusCode.OK
        try:
            self.admission.admit(size)
            try:
                return await work()
            finally:
                self.admission.release(size)
        except errors.ServingError as error:
            status = error.code
            log.info(
                "request failed",
                extra={"model": shown(name), "status": error.code.name, "reason": error.message},
            )
            raise
        except asyncio.CancelledError:  # the caller gave up, or its deadline passed
            expired = deadline is not None and asyncio.get_running_loop().time() >= deadline
            status = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception as error:  # a bug: INTERNAL for this caller, the server goes on
            status = grpc.StatusCode.INTERNAL
            log.exception("request crashed", extra={"model": shown(name)})
            raise errors.internal(f"internal error: {type(error).__name__}") from error
        finally:
            self.metrics.observe_request(label, status.name, time.perf_counter() - start)

    async def _measured(self, request, deadline) -> digits_pb2.ClassifyResponse:
        work = functools.partial(self.classify, request, deadline)
        return await self.measured(request.model, request.ByteSize(), work, deadline)

    async def Classify(self, request, context):
        try:
            return await self._measured(request, deadline_of(context))
        except errors.ServingError as error:
            await context.abort(error.code, error.message)

    async def ClassifyStream(self, request_iterator, context) -> AsyncIterator:
        """Requests are worked on concurrently (so they can share batches), answered in order."""
        deadline = deadline_of(context)
        pending: asyncio.Queue = asyncio.Queue(maxsize=STREAM_WINDOW)

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    await pending.put(asyncio.ensure_future(self._stream_answer(request, deadline)))
            finally:
                await pending.put(None)  # also when reading failed: the answers loop ends

        reader = asyncio.create_task(read_requests())
        try:
            while (task := await pending.get()) is not None:
                yield await task
            await reader
        finally:
            reader.cancel()
            while not pending.empty():
                task = pending.get_nowait()
                if task is not None:
                    task.cancel()

    async def _stream_answer(self, request, deadline) -> digits_pb2.ClassifyResponse:
        try:
            return await self._measured(request, deadline)
        except errors.ServingError as error:
            return digits_pb2.ClassifyResponse(
                model=shown(request.model),
                version=request.version,
                request_id=request.request_id[:MAX_REQUEST_ID],
                error=digits_pb2.Error(code=error.code.value[0], message=error.message),
            )

    async def ListModels(self, request, context):
        return digits_pb2.ListModelsResponse(
            models=[
                model_metadata(versions, max(versions))
                for versions in map(self.registry.versions, self.registry.model_names())
            ]
        )

    async def GetModelMetadata(self, request, context):
        try:
            versions = self.registry.versions(request.model)
            version = self.registry.get(request.model, request.version).model.version
        except errors.ServingError as error:
            await context.abort(error.code, error.message)
        return model_metadata(versions, version)
