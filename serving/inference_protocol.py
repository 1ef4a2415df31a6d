"""The Open Inference Protocol (KServe v2) over gRPC: `inference.GRPCInferenceService`.

A second front door onto the same classification path as digits.v1 (registry, decoding,
batcher, queue, deadlines, admission, metrics, error statuses): requests are translated to
the images that path takes, answers back to OIP tensors. Inputs, one per request:

- `image`: FP32 or UINT8 [N, 100, 100, 1], pixels 0..255, raw or as typed contents;
- `image_bytes`: BYTES [N], each element an encoded PNG/JPEG/BMP file (raw: each element a
  4-byte little-endian length, then its bytes).

Output `probabilities`: FP32 [N, classes]. With the classification extension (parameter
`classification` = k on the requested output) it is BYTES [N, k] of "score:index:label".
"""

import functools
import struct
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np

from common.contract import IMAGE_SIZE, INPUT_NAME, OUTPUT_NAME
from common.model_runtime import CUDA
from common.repository import ONNX_FILE
from common.versions import installed_version
from protos.digits.v1 import digits_pb2
from protos.inference import grpc_service_pb2 as pb
from protos.inference import grpc_service_pb2_grpc
from protos.inference import model_config_pb2 as config_pb
from serving import errors
from serving.batcher import Batcher
from serving.logs import shown
from serving.runtime import ModelVersion
from serving.service import MAX_REQUEST_ID, DigitClassifierService, deadline_of

BYTES_INPUT = "image_bytes"
SERVER_NAME = "digit-serving"
EXTENSIONS = ("classification", "model_configuration", "statistics")
PIXEL_DTYPES = {"FP32": np.dtype("<f4"), "UINT8": np.dtype(np.uint8)}
RAW_IMAGE = {"FP32": digits_pb2.RawTensor.FLOAT32, "UINT8": digits_pb2.RawTensor.UINT8}
IMAGE_SHAPE = [-1, IMAGE_SIZE, IMAGE_SIZE, 1]


def parse_version(text: str) -> int:
    """OIP versions are strings; here the repository's integers ("" = the newest)."""
    if text == "":
        return 0
    if not (text.isascii() and text.isdigit()):
        raise errors.invalid_argument(f"model version '{shown(text)}' is not an integer")
    return int(text)


def split_length_prefixed(raw: bytes) -> list[bytes]:
    """BYTES elements sent raw: each a 4-byte little-endian length, then that many bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise errors.invalid_argument(f"input {BYTES_INPUT}: truncated length at byte {offset}")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise errors.invalid_argument(
                f"input {BYTES_INPUT}: element {len(elements)} claims {size} bytes, "
                f"{len(raw) - offset} left"
            )
        elements.append(raw[offset : offset + size])
        offset += size
    return elements


def encoded_images(tensor, raw: bytes | None) -> list[digits_pb2.Image]:
    """`image_bytes` [N] to one encoded image per element."""
    if tensor.datatype != "BYTES" or len(tensor.shape) != 1:
        raise errors.invalid_argument(
            f"input {BYTES_INPUT} must be BYTES [N], not {tensor.datatype} {list(tensor.shape)}"
        )
    elements = (
        split_length_prefixed(raw) if raw is not None else list(tensor.contents.bytes_contents)
    )
    if len(elements) != tensor.shape[0]:
        raise errors.invalid_argument(
            f"input {BYTES_INPUT}: shape [{tensor.shape[0]}] but {len(elements)} elements"
        )
    return [digits_pb2.Image(encoded=element) for element in elements]


def typed_pixels(tensor) -> bytes:
    if tensor.datatype == "FP32":
        return np.asarray(tensor.contents.fp32_contents, "<f4").tobytes()
    return (
        np.asarray(tensor.contents.uint_contents, np.uint32).clip(0, 255).astype(np.uint8).tobytes()
    )


def pixel_images(tensor, raw: bytes | None) -> list[digits_pb2.Image]:
    """`image` [N, 100, 100, 1] to one raw image per row (the digits.v1 raw path)."""
    dtype = PIXEL_DTYPES.get(tensor.datatype)
    shape = list(tensor.shape)
    if dtype is None or len(shape) != 4 or shape[1:] != IMAGE_SHAPE[1:]:
        raise errors.invalid_argument(
            f"input {INPUT_NAME} must be FP32 or UINT8 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1], "
            f"not {tensor.datatype} {shape}"
        )
    data = raw if raw is not None else typed_pixels(tensor)
    size = IMAGE_SIZE * IMAGE_SIZE * dtype.itemsize
    if len(data) != shape[0] * size:
        raise errors.invalid_argument(
            f"input {INPUT_NAME}: {len(data)} bytes of data, {tensor.datatype} {shape} needs "
            f"{shape[0] * size}"
        )
    return [
        digits_pb2.Image(
            raw=digits_pb2.RawTensor(
                height=IMAGE_SIZE,
                width=IMAGE_SIZE,
                channels=1,
                dtype=RAW_IMAGE[tensor.datatype],
                data=data[row * size : (row + 1) * size],
            )
        )
        for row in range(shape[0])
    ]


def request_images(request: pb.ModelInferRequest) -> list[digits_pb2.Image]:
    """The images of one request: exactly one input, `image` or `image_bytes`."""
    if len(request.inputs) != 1:
        raise errors.invalid_argument(
            f"expected one input ({INPUT_NAME} or {BYTES_INPUT}), got {len(request.inputs)}"
        )
    if request.raw_input_contents and len(request.raw_input_contents) != 1:
        raise errors.invalid_argument("raw_input_contents must hold one entry per input")
    tensor = request.inputs[0]
    raw = request.raw_input_contents[0] if request.raw_input_contents else None
    if tensor.name == INPUT_NAME:
        return pixel_images(tensor, raw)
    if tensor.name == BYTES_INPUT:
        return encoded_images(tensor, raw)
    raise errors.invalid_argument(
        f"unknown input '{shown(tensor.name)}' (expected {INPUT_NAME} or {BYTES_INPUT})"
    )


def classification_count(request: pb.ModelInferRequest) -> int:
    """k of the classification extension (0: plain probabilities); checks requested outputs."""
    count = 0
    for output in request.outputs:
        if output.name != OUTPUT_NAME:
            raise errors.invalid_argument(
                f"unknown output '{shown(output.name)}' (the model has {OUTPUT_NAME})"
            )
        parameter = output.parameters.get("classification")
        if parameter is not None:
            count = parameter.int64_param
            if count < 1:
                raise errors.invalid_argument("classification must be a positive integer")
    return count


def classification_strings(probabilities: np.ndarray, labels: Sequence[str], k: int) -> bytes:
    """Top-k "score:index:label" per row, as raw BYTES (length-prefixed)."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    out = bytearray()
    for row, indices in zip(probabilities, order, strict=True):
        for index in indices:
            text = f"{row[index]:f}:{index}:{labels[index]}".encode()
            out += struct.pack("<I", len(text)) + text
    return bytes(out)


def infer_response(
    request: pb.ModelInferRequest, model: ModelVersion, probabilities: np.ndarray, k: int
) -> pb.ModelInferResponse:
    rows, classes = probabilities.shape
    if k:
        k = min(k, classes)
        tensor = pb.ModelInferResponse.InferOutputTensor(
            name=OUTPUT_NAME, datatype="BYTES", shape=[rows, k]
        )
        data = classification_strings(probabilities, model.labels, k)
    else:
        tensor = pb.ModelInferResponse.InferOutputTensor(
            name=OUTPUT_NAME, datatype="FP32", shape=[rows, classes]
        )
        data = np.ascontiguousarray(probabilities, "<f4").tobytes()
    return pb.ModelInferResponse(
        model_name=model.name,
        model_version=str(model.version),
        id=request.id,
        outputs=[tensor],
        raw_output_contents=[data],
    )


def tensor_metadata(name: str, datatype: str, shape: list[int]):
    return pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=shape)


class InferenceService(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, digits: DigitClassifierService, ready: Callable[[], bool]):
        self.digits = digits  # its classification path, admission, metrics and registry
        self.registry = digits.registry
        self.config = digits.config
        self.server_ready = ready  # models loaded, not draining (with workers: every worker)

    def _version(self, name: str, version: str) -> Batcher:
        return self.registry.get(name, parse_version(version))

    async def _answer(self, request: pb.ModelInferRequest, deadline) -> pb.ModelInferResponse:
        version = parse_version(request.model_version)
        self.registry.get(request.model_name, version)  # NOT_FOUND before the inputs are read
        if len(request.id) > MAX_REQUEST_ID:  # echoed in the answer
            raise errors.invalid_argument(
                f"id has {len(request.id)} characters (at most {MAX_REQUEST_ID})"
            )
        k = classification_count(request)
        images = request_images(request)
        model, probabilities = await self.digits.infer(
            request.model_name, version, images, deadline
        )
        return infer_response(request, model, probabilities, k)

    async def measured_answer(self, request, deadline) -> pb.ModelInferResponse:
        """One inference request, admitted and counted like every request."""
        work = functools.partial(self._answer, request, deadline)
        return await self.digits.measured(request.model_name, request.ByteSize(), work, deadline)

    async def ModelInfer(self, request, context):
        try:
            return await self.measured_answer(request, deadline_of(context))
        except errors.ServingError as error:
            await context.abort(error.code, error.message)

    async def ModelStreamInfer(self, request_iterator, context) -> AsyncIterator:
        """Triton's stream: each request answered in order; an error is told in the stream."""
        deadline = deadline_of(context)
        async for request in request_iterator:
            try:
                reply = await self.measured_answer(request, deadline)
                yield pb.ModelStreamInferResponse(infer_response=reply)
            except errors.ServingError as error:
                yield pb.ModelStreamInferResponse(
                    error_message=error.message,
                    infer_response=pb.ModelInferResponse(
                        model_name=shown(request.model_name), id=request.id[:MAX_REQUEST_ID]
                    ),
                )

    # ---- the calls, raising ServingError (shared by gRPC and HTTP) --------------------

    def model_ready(self, name: str, version: str) -> bool:
        try:
            self._version(name, version)
        except errors.ServingError:
            return False
        return not self.digits.admission.closed

    def server_metadata(self) -> pb.ServerMetadataResponse:
        version = installed_version(SERVER_NAME) or "unknown"
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=version, extensions=EXTENSIONS)

    def model_metadata(self, name: str, version: str) -> pb.ModelMetadataResponse:
        """The graph's own input and output. `image_bytes` (decoded by the server, not taken
        by the graph) is documented, not listed: perf_analyzer generates data for every
        listed input and cannot shape a BYTES [N] one."""
        model = self._version(name, version).model
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in self.registry.versions(model.name)],
            platform="onnxruntime_onnx",
            inputs=[
                tensor_metadata(INPUT_NAME, "FP32", IMAGE_SHAPE),
            ],
            outputs=[tensor_metadata(OUTPUT_NAME, "FP32", [-1, len(model.labels)])],
        )

    def model_config(self, name: str, version: str) -> config_pb.ModelConfig:
        """Triton's view: batched input `image` [100, 100, 1] (the batch dimension is
        implicit), output `probabilities`, dynamic batching (`image_bytes`: see
        model_metadata)."""
        model = self._version(name, version).model
        group = config_pb.ModelInstanceGroup
        kind = group.KIND_GPU if model.provider == CUDA else group.KIND_CPU
        return config_pb.ModelConfig(
            name=model.name,
            platform="onnxruntime_onnx",
            backend="onnxruntime",
            version_policy=config_pb.ModelVersionPolicy(
                latest=config_pb.ModelVersionPolicy.Latest(num_versions=self.config.keep_versions)
            ),
            max_batch_size=self.config.max_batch_size,
            input=[
                config_pb.ModelInput(
                    name=INPUT_NAME,
                    data_type=config_pb.TYPE_FP32,
                    format=config_pb.ModelInput.FORMAT_NHWC,
                    dims=IMAGE_SHAPE[1:],
                ),
            ],
            output=[
                config_pb.ModelOutput(
                    name=OUTPUT_NAME, data_type=config_pb.TYPE_FP32, dims=[len(model.labels)]
                )
            ],
            instance_group=[group(count=1, kind=kind)],
            default_model_filename=ONNX_FILE,
            dynamic_batching=config_pb.ModelDynamicBatching(
                max_queue_delay_microseconds=self.config.batch_delay_us
            ),
        )

    def model_statistics(self, name: str, version: str) -> pb.ModelStatisticsResponse:
        """Every loaded version of the model (or of every model, for an empty name)."""
        names = [name] if name else self.registry.model_names()
        stats = [
            statistics(model, number, batcher)
            for model in names
            for number, batcher in self.registry.versions(model).items()
            if version in ("", str(number))
        ]
        if name and version and not stats:
            raise errors.not_found(
                f"model '{shown(name)}' has no version '{shown(version)}' loaded"
            )
        return pb.ModelStatisticsResponse(model_stats=stats)

    # ---- gRPC -------------------------------------------------------------------------

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.server_ready())

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context):
        return self.server_metadata()

    async def ModelMetadata(self, request, context):
        return await answer_or_abort(context, self.model_metadata, request.name, request.version)

    async def ModelConfig(self, request, context):
        config = await answer_or_abort(context, self.model_config, request.name, request.version)
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request, context):
        return await answer_or_abort(context, self.model_statistics, request.name, request.version)


async def answer_or_abort(context, call, *args):
    """call(*args), or its ServingError as the call's gRPC status."""
    try:
        return call(*args)
    except errors.ServingError as error:
        await context.abort(error.code, error.message)


def duration(value) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=value.count, ns=value.ns)


def statistics(name: str, version: int, batcher: Batcher) -> pb.ModelStatistics:
    stats = batcher.stats
    return pb.ModelStatistics(
        name=name,
        version=str(version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=duration(stats.success),
            fail=duration(stats.fail),
            queue=duration(stats.queue),
            compute_input=duration(stats.totals.compute_input),
            compute_infer=duration(stats.totals.compute_infer),
            compute_output=duration(stats.totals.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=duration(parts.compute_input),
                compute_infer=duration(parts.compute_infer),
                compute_output=duration(parts.compute_output),
            )
            for size, parts in sorted(stats.batches.items())
        ],
    )
