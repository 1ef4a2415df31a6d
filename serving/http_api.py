"""HTTP/REST on its own port: the Open Inference Protocol's REST paths, and one call for people.

Served by aiohttp on the server's own event loop. A REST inference request is translated to
the gRPC message (serving.inference_protocol) and answered by the same code, so both
protocols, and digits.v1 behind them, give the same answers, limits and errors:

    GET  /v2                                     server metadata
    GET  /v2/health/live | /v2/health/ready      200, or 503 when not ready
    GET  /v2/models/{m}[/versions/{v}]           model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready     200, or 503
    GET  /v2/models/{m}[/versions/{v}]/config    Triton's model configuration
    GET  /v2/models[/{m}[/versions/{v}]]/stats   Triton's statistics
    POST /v2/models/{m}[/versions/{v}]/infer     JSON, or JSON + binary tensor data
    POST /v1/models/{m}/classify                 body: one PNG/JPEG/BMP file -> JSON

The binary tensor data extension: the request's JSON header is followed by raw tensor bytes;
the `Inference-Header-Content-Length` header gives the JSON's length, each binary input
says its `binary_data_size`. Outputs come back binary when asked (`binary_data` on an
output, or `binary_data_output` on the request), else as JSON.
"""

import functools
import json
import ssl

import grpc
import numpy as np
from aiohttp import web
from google.protobuf import json_format

from protos.digits.v1 import digits_pb2
from protos.inference import grpc_service_pb2 as pb
from serving import errors
from serving.inference_protocol import InferenceService, split_length_prefixed

HEADER_LENGTH = "Inference-Header-Content-Length"
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def error_response(error: errors.ServingError) -> web.Response:
    return web.json_response({"error": error.message}, status=HTTP_STATUS.get(error.code, 500))


def as_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def typed_contents(tensor, data, where: str) -> None:
    """JSON `data` (flat or nested, row-major) into the typed contents of its datatype."""
    if tensor.datatype == "BYTES":
        items = np.asarray(data, dtype=object).ravel().tolist()
        if not all(isinstance(item, str) for item in items):
            raise errors.invalid_argument(f"{where}: BYTES data must be strings")
        tensor.contents.bytes_contents.extend(item.encode() for item in items)
    elif tensor.datatype == "FP32":
        tensor.contents.fp32_contents.extend(np.asarray(data, np.float32).ravel().tolist())
    elif tensor.datatype == "UINT8":
        tensor.contents.uint_contents.extend(np.asarray(data, np.int64).ravel().tolist())
    else:
        raise errors.invalid_argument(f"{where}: datatype {tensor.datatype} is not accepted")


def add_input(request: pb.ModelInferRequest, spec: dict, index: int, binary: memoryview, offset):
    """One JSON input into the request; the binary data it took (its size)."""
    where = f"inputs[{index}]"
    tensor = request.inputs.add(name=str(spec["name"]), datatype=str(spec["datatype"]))
    tensor.shape.extend(int(size) for size in spec["shape"])
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is None:
        typed_contents(tensor, spec["data"], where)
        return 0
    if not isinstance(size, int) or size < 0 or offset + size > len(binary):
        raise errors.invalid_argument(
            f"{where}: binary_data_size {size} runs past the {len(binary)} bytes of binary data"
        )
    request.raw_input_contents.append(bytes(binary[offset : offset + size]))
    return size


def infer_request(body: bytes, header_length: str | None, model: str, version: str):
    """(the gRPC request, whether outputs go back binary) from a REST inference body."""
    try:
        split = len(body) if header_length is None else int(header_length)
        document = json.loads(body[:split])
        if not isinstance(document, dict):
            raise TypeError("the JSON body must be an object")
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        request.id = str(document.get("id", ""))
        binary, offset = memoryview(body)[split:], 0
        for index, spec in enumerate(document.get("inputs") or []):
            offset += add_input(request, spec, index, binary, offset)
        if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
            raise TypeError("every input or none must be sent as binary data")
        binary_out = bool((document.get("parameters") or {}).get("binary_data_output"))
        for spec in document.get("outputs") or []:
            output = request.outputs.add(name=str(spec["name"]))
            parameters = spec.get("parameters") or {}
            binary_out = binary_out or bool(parameters.get("binary_data"))
            if "classification" in parameters:
                output.parameters["classification"].int64_param = int(parameters["classification"])
    except errors.ServingError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        problem = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        raise errors.invalid_argument(f"malformed inference request: {problem}") from None
    return request, binary_out


def infer_reply(reply: pb.ModelInferResponse, binary: bool) -> web.Response:
    outputs, data = [], b""
    for tensor, raw in zip(reply.outputs, reply.raw_output_contents, strict=True):
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            data += raw
        elif tensor.datatype == "BYTES":
            entry["data"] = [item.decode() for item in split_length_prefixed(raw)]
        else:
            entry["data"] = np.frombuffer(raw, "<f4").tolist()
        outputs.append(entry)
    header = json.dumps(
        {
            "model_name": reply.model_name,
            "model_version": reply.model_version,
            "id": reply.id,
            "outputs": outputs,
        }
    ).encode()
    if not binary:
        return web.Response(body=header, content_type="application/json")
    return web.Response(
        body=header + data,
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def answered(handler):
    """A handler whose ServingError becomes its HTTP status and a JSON error."""

    @functools.wraps(handler)
    async def wrapped(self, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except errors.ServingError as error:
            return error_response(error)

    return wrapped


class HttpApi:
    def __init__(self, inference: InferenceService, max_body_bytes: int):
        self.inference = inference
        self.max_body_bytes = max_body_bytes
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        model = "/v2/models/{model}"
        versioned = model + "/versions/{version}"
        get, post = web.get, web.post
        app.add_routes(
            [
                get("/v2", self.server_metadata),
                get("/v2/health/live", self.live),
                get("/v2/health/ready", self.ready),
                get("/v2/models/stats", self.statistics),
                *[
                    route
                    for path in (model, versioned)
                    for route in (
                        get(path, self.model_metadata),
                        get(path + "/ready", self.model_ready),
                        get(path + "/config", self.model_config),
                        get(path + "/stats", self.statistics),
                        post(path + "/infer", self.infer),
                    )
                ],
                post("/v1/models/{model}/classify", self.classify),
            ]
        )
        return app

    async def start(
        self, host: str, port: int, context: ssl.SSLContext | None, reuse_port: bool = False
    ) -> int:
        """Listen (reuse_port: on a port the workers of one server share); the port."""
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=context, reuse_port=reuse_port)
        await site.start()
        return self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def live(self, request):
        return web.json_response({"live": True})

    async def ready(self, request):
        ready = self.inference.server_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def server_metadata(self, request):
        return web.json_response(as_json(self.inference.server_metadata()))

    @answered
    async def model_metadata(self, request):
        metadata = as_json(self.inference.model_metadata(*self._names(request)))
        for tensor in metadata.get("inputs", []) + metadata.get("outputs", []):
            tensor["shape"] = [int(size) for size in tensor["shape"]]
        return web.json_response(metadata)

    async def model_ready(self, request):
        ready = self.inference.model_ready(*self._names(request))
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    @answered
    async def model_config(self, request):
        return web.json_response(as_json(self.inference.model_config(*self._names(request))))

    @answered
    async def statistics(self, request):
        return web.json_response(as_json(self.inference.model_statistics(*self._names(request))))

    @answered
    async def infer(self, request):
        body = await request.read()
        grpc_request, binary = infer_request(
            body, request.headers.get(HEADER_LENGTH), *self._names(request)
        )
        reply = await self.inference.measured_answer(grpc_request, None)
        return infer_reply(reply, binary)

    @answered
    async def classify(self, request):
        """One image file in, its class, label and probabilities out (for curl)."""
        name = request.match_info["model"]
        images = [digits_pb2.Image(encoded=await request.read())]
        work = functools.partial(self.inference.digits.infer, name, 0, images, None)
        model, probabilities = await self.inference.digits.measured(
            name, request.content_length or 0, work, None
        )
        row = probabilities[0]
        best = int(row.argmax())
        return web.json_response(
            {
                "model": model.name,
                "version": model.version,
                "class_index": best,
                "label": model.labels[best],
                "probability": float(row[best]),
                "probabilities": dict(zip(model.labels, row.tolist(), strict=True)),
            }
        )

    @staticmethod
    def _names(request: web.Request) -> tuple[str, str]:
        return request.match_info.get("model", ""), request.match_info.get("version", "")
