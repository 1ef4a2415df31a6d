"""Ask a running server for its gRPC health status: exit 0 when SERVING, 1 when not.

The container HEALTHCHECK runs this (`python -m serving.healthcheck`), so it reads the same
DIGITS_* environment variables as the server: inside a container it needs no flags.
Kubernetes does not need it: its probes speak the gRPC health protocol natively.
"""

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.cli import UserError, positive_float, positive_int, run_cli
from common.settings import parse_settings, setting
from protos.digits.v1 import digits_pb2

SERVICE_NAME = digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"].full_name


@dataclass(frozen=True)
class HealthcheckSettings:
    """Every setting has an environment twin: the server's own (DIGITS_PORT, DIGITS_TLS_CERT)
    or DIGITS_HEALTHCHECK_*."""

    host: str = setting("127.0.0.1", "server address to ask", metavar="HOST")
    port: int = setting(8500, "the server's gRPC port", parse=positive_int, env="DIGITS_PORT")
    service: str = setting(SERVICE_NAME, 'health service name; "" is the whole server')
    timeout: float = setting(3.0, "seconds to wait for the answer", parse=positive_float)
    tls_cert: Path | None = setting(
        None,
        "PEM certificate to trust when the server uses TLS; the server's own certificate works "
        "for a self-signed one (unset: plaintext)",
        parse=Path,
        env="DIGITS_TLS_CERT",
    )
    tls_server_name: str | None = setting(
        None, "host name the certificate was issued for, when it is not --host", metavar="NAME"
    )
    tls_client_cert: Path | None = setting(
        None, "PEM client certificate, when the server requires one (mTLS)", parse=Path
    )
    tls_client_key: Path | None = setting(None, "PEM private key of --tls-client-cert", parse=Path)


def parse_args(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> HealthcheckSettings:
    return parse_settings(
        HealthcheckSettings(),
        "python -m serving.healthcheck",
        "Exit 0 when the server answers SERVING on the gRPC health service, else 1.",
        argv,
        env_prefix="DIGITS_HEALTHCHECK_",
        environ=os.environ if environ is None else environ,
    )


def client_certificate(args: HealthcheckSettings) -> tuple[bytes | None, bytes | None]:
    """(key, chain) for mTLS, or (None, None)."""
    if bool(args.tls_client_cert) != bool(args.tls_client_key):
        raise UserError("--tls-client-cert and --tls-client-key go together")
    paths = [Path(p) for p in (args.tls_client_key, args.tls_client_cert) if p]
    for path in paths:
        if not path.is_file():
            raise UserError(f"TLS file not found: {path}")
    return (paths[0].read_bytes(), paths[1].read_bytes()) if paths else (None, None)


def open_channel(args: HealthcheckSettings) -> grpc.Channel:
    target = f"{args.host}:{args.port}"
    if not args.tls_cert:
        return grpc.insecure_channel(target)
    cert = Path(args.tls_cert)
    if not cert.is_file():
        raise UserError(f"TLS certificate not found: {cert}")
    key, chain = client_certificate(args)
    credentials = grpc.ssl_channel_credentials(cert.read_bytes(), key, chain)
    options = (
        [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    )
    return grpc.secure_channel(target, credentials, options=options)


def health_status(channel: grpc.Channel, service: str, timeout: float) -> str:
    """The status name the server reports for `service` over grpc.health.v1 ("SERVING",
    "NOT_SERVING", ...), or the call's gRPC code ("UNAVAILABLE", ...) when it cannot answer."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def check(args: HealthcheckSettings) -> str:
    with open_channel(args) as channel:
        return health_status(channel, args.service, args.timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status = check(args)
    if status == "SERVING":
        return 0
    print(f"{args.host}:{args.port} service {args.service!r}: {status}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    run_cli(main)
