"""Client library for the digits.v1 service, and `python -m serving.client --port P IMAGE...`.

    with DigitClient("127.0.0.1:8500") as client:
        reply = client.classify("scratch_cnn", [Path("digit.png").read_bytes()])
        print(reply.predictions[0].label, reply.predictions[0].probability)

An image is encoded bytes (PNG, JPEG, BMP) or a numpy array of raw pixels: uint8 or
float32 (0..255), shape [H, W], [H, W, 1] or [H, W, 3].
"""

import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from common.cli import (
    UserError,
    non_negative_int,
    positive_float,
    positive_int,
    run_cli,
)
from common.settings import parse_settings, setting
from protos.digits.v1 import digits_pb2, digits_pb2_grpc
from serving.healthcheck import health_status

ImageInput = bytes | np.ndarray
RAW_DTYPES = {
    np.dtype(np.uint8): digits_pb2.RawTensor.UINT8,
    np.dtype(np.float32): digits_pb2.RawTensor.FLOAT32,
}
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def image_message(image: ImageInput) -> digits_pb2.Image:
    """Encoded bytes as they are; a numpy array as a raw tensor (little-endian)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return digits_pb2.Image(encoded=bytes(image))
    array = np.asarray(image)
    dtype = RAW_DTYPES.get(array.dtype)
    if dtype is None:
        raise TypeError(f"raw images must be uint8 or float32, not {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3:
        raise ValueError(f"raw images are [H, W] or [H, W, C], not {array.shape}")
    height, width, channels = array.shape
    return digits_pb2.Image(
        raw=digits_pb2.RawTensor(
            dtype=dtype,
            height=height,
            width=width,
            channels=channels,
            data=array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(),
        )
    )


def classify_request(
    model: str, images: Sequence[ImageInput], version: int = 0, request_id: str = ""
) -> digits_pb2.ClassifyRequest:
    return digits_pb2.ClassifyRequest(
        model=model,
        version=version,
        images=[image_message(image) for image in images],
        request_id=request_id,
    )


# A channel with its own connection: channels to one target otherwise share one (gRPC's
# subchannel pool), and a server with several workers serves each connection from one of them.
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


def channel_options(
    max_message_bytes: int, own_connection: bool = False
) -> list[tuple[str, int | str]]:
    """Message limits, and round_robin so a `dns:///` target spreads calls over every pod."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.lb_policy_name", "round_robin"),
        *([OWN_CONNECTION] if own_connection else []),
    ]


ClientCertificate = tuple[bytes, bytes]  # (PEM private key, PEM certificate chain), for mTLS


def _credentials(
    root_certificates: bytes | None, client_certificate: ClientCertificate | None
) -> grpc.ChannelCredentials | None:
    if root_certificates is None:
        return None
    key, chain = client_certificate or (None, None)
    return grpc.ssl_channel_credentials(root_certificates, key, chain)


class DigitClient:
    """Blocking client; `root_certificates` (PEM bytes) switches to TLS, and
    `client_certificate` presents a certificate to a server that asks for one (mTLS)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 30.0,
        root_certificates: bytes | None = None,
        client_certificate: ClientCertificate | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        own_connection: bool = False,
    ):
        options = channel_options(max_message_bytes, own_connection)
        credentials = _credentials(root_certificates, client_certificate)
        self.channel = (
            grpc.insecure_channel(target, options=options)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=options)
        )
        self.stub = digits_pb2_grpc.DigitClassifierStub(self.channel)
        self.timeout = timeout

    def classify(
        self,
        model: str,
        images: Sequence[ImageInput],
        version: int = 0,
        *,
        request_id: str = "",
        timeout: float | None = None,
    ) -> digits_pb2.ClassifyResponse:
        request = classify_request(model, images, version, request_id)
        return self.stub.Classify(request, timeout=timeout or self.timeout)

    def classify_stream(
        self, requests: Iterable[digits_pb2.ClassifyRequest], *, timeout: float | None = None
    ) -> Iterator[digits_pb2.ClassifyResponse]:
        """One reply per request, in order; a failed request has `error` set."""
        return self.stub.ClassifyStream(iter(requests), timeout=timeout or self.timeout)

    def list_models(self) -> list[digits_pb2.ModelMetadata]:
        reply = self.stub.ListModels(digits_pb2.ListModelsRequest(), timeout=self.timeout)
        return list(reply.models)

    def get_model_metadata(self, model: str, version: int = 0) -> digits_pb2.ModelMetadata:
        request = digits_pb2.GetModelMetadataRequest(model=model, version=version)
        return self.stub.GetModelMetadata(request, timeout=self.timeout)

    def health(self, service: str = "") -> str:
        """The server's grpc.health.v1 status name ("SERVING", ...) for `service` ("": the
        whole server), or the call's gRPC code name when it cannot answer."""
        return health_status(self.channel, service, self.timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "DigitClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncDigitClient:
    """The same calls for asyncio code (grpc.aio); create and use it inside one event loop."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 30.0,
        root_certificates: bytes | None = None,
        client_certificate: ClientCertificate | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        own_connection: bool = False,
    ):
        options = channel_options(max_message_bytes, own_connection)
        credentials = _credentials(root_certificates, client_certificate)
        self.channel = (
            grpc.aio.insecure_channel(target, options=options)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, options=options)
        )
        self.stub = digits_pb2_grpc.DigitClassifierStub(self.channel)
        self.timeout = timeout

    async def classify(
        self,
        model: str,
        images: Sequence[ImageInput],
        version: int = 0,
        *,
        request_id: str = "",
        timeout: float | None = None,
    ) -> digits_pb2.ClassifyResponse:
        request = classify_request(model, images, version, request_id)
        return await self.stub.Classify(request, timeout=timeout or self.timeout)

    async def classify_stream(
        self, requests: Iterable[digits_pb2.ClassifyRequest], *, timeout: float | None = None
    ) -> AsyncIterator[digits_pb2.ClassifyResponse]:
        call = self.stub.ClassifyStream(iter(requests), timeout=timeout or self.timeout)
        async for reply in call:
            yield reply

    async def list_models(self) -> list[digits_pb2.ModelMetadata]:
        reply = await self.stub.ListModels(digits_pb2.ListModelsRequest(), timeout=self.timeout)
        return list(reply.models)

    async def get_model_metadata(self, model: str, version: int = 0) -> digits_pb2.ModelMetadata:
        request = digits_pb2.GetModelMetadataRequest(model=model, version=version)
        return await self.stub.GetModelMetadata(request, timeout=self.timeout)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncDigitClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


# ---- command line ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClientCommand:
    images: tuple[Path, ...] = setting(
        (), "PNG, JPEG or BMP", parse=Path, positional=True, many=True, metavar="IMAGE"
    )
    host: str = setting("127.0.0.1", "server address", metavar="HOST")
    port: int = setting(None, "server gRPC port", parse=positive_int, required=True)
    model: str = setting("scratch_cnn", "model name", metavar="NAME")
    version: int = setting(0, "model version (0: newest)", parse=non_negative_int)
    timeout: float = setting(30.0, "seconds per call", parse=positive_float)
    tls_ca: Path | None = setting(None, "PEM certificate to trust (enables TLS)", parse=Path)
    tls_cert: Path | None = setting(None, "PEM client certificate (mTLS)", parse=Path)
    tls_key: Path | None = setting(None, "PEM private key of --tls-cert", parse=Path)


def parse_args(argv: Sequence[str] | None = None) -> ClientCommand:
    return parse_settings(
        ClientCommand(),
        "python -m serving.client",
        "Classify image files through a running server: one line per image "
        "(file, class, probability of that class).",
        argv,
    )


def read_file(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as error:
        return error.strerror or str(error)


def classify_files(args: ClientCommand, files: dict[Path, bytes]) -> dict[Path, object]:
    """One request per file over one stream: {path: ClassifyResponse}."""
    root = args.tls_ca.read_bytes() if args.tls_ca else None
    mine = (args.tls_key.read_bytes(), args.tls_cert.read_bytes()) if args.tls_cert else None
    target = f"{args.host}:{args.port}"
    requests = [
        classify_request(args.model, [data], args.version, str(p)) for p, data in files.items()
    ]
    with DigitClient(
        target, timeout=args.timeout, root_certificates=root, client_certificate=mine
    ) as client:
        try:
            return dict(zip(files, client.classify_stream(requests), strict=True))
        except grpc.RpcError as error:
            raise UserError(f"{target}: {error.code().name}: {error.details()}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_cert and not args.tls_ca):
        raise UserError("--tls-cert and --tls-key go together, and with --tls-ca")
    for path in (args.tls_ca, args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise UserError(f"TLS file not found: {path}")
    contents = {path: read_file(path) for path in args.images}
    replies = classify_files(
        args, {p: data for p, data in contents.items() if isinstance(data, bytes)}
    )
    failed = 0
    for path, data in contents.items():
        reply = replies.get(path)
        if reply is None or reply.HasField("error"):
            failed += 1
            print(
                f"{path}\terror: {data if reply is None else reply.error.message}", file=sys.stderr
            )
        else:
            best = reply.predictions[0]
            print(f"{path}\t{best.label}\t{best.probability:.4f}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
