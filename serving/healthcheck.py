"""Ask a running server for its gRPC health status: exit 0 when SERVING, 1 when not.

The container HEALTHCHECK runs this (`python -m serving.healthcheck`), so it reads the same
DIGITS_* environment variables as the server: inside a container it needs no flags.
Kubernetes does not need it: its probes speak the gRPC health protocol natively.
"""

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.cli import ArgumentParser, UserError, positive_float, positive_int, run_cli
from protos.digits.v1 import digits_pb2

SERVICE_NAME = digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"].full_name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = ArgumentParser(
        prog="python -m serving.healthcheck",
        description="Exit 0 when the server answers SERVING on the gRPC health service, else 1.",
    )
    parser.add_argument(
        "--host",
        default=env("DIGITS_HEALTHCHECK_HOST", "127.0.0.1"),
        help="server address to ask (env DIGITS_HEALTHCHECK_HOST) [127.0.0.1]",
    )
    parser.add_argument(
        "--port",
        type=positive_int,
        default=env("DIGITS_PORT", "8500"),  # a string default goes through `type` too
        help="the server's gRPC port (env DIGITS_PORT) [8500]",
    )
    parser.add_argument(
        "--service",
        default=env("DIGITS_HEALTHCHECK_SERVICE", SERVICE_NAME),
        help=f'health service name; "" is the whole server (env DIGITS_HEALTHCHECK_SERVICE) '
        f"[{SERVICE_NAME}]",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=env("DIGITS_HEALTHCHECK_TIMEOUT", "3"),
        help="seconds to wait for the answer (env DIGITS_HEALTHCHECK_TIMEOUT) [3]",
    )
    parser.add_argument(
        "--tls-cert",
        default=env("DIGITS_TLS_CERT") or None,
        help="PEM certificate to trust when the server uses TLS; the server's own certificate "
        "works for a self-signed one (env DIGITS_TLS_CERT) [unset = plaintext]",
    )
    parser.add_argument(
        "--tls-server-name",
        default=env("DIGITS_HEALTHCHECK_TLS_SERVER_NAME") or None,
        help="host name the certificate was issued for, when it is not --host "
        "(env DIGITS_HEALTHCHECK_TLS_SERVER_NAME)",
    )
    parser.add_argument(
        "--tls-client-cert",
        default=env("DIGITS_HEALTHCHECK_TLS_CLIENT_CERT") or None,
        help="PEM client certificate, when the server requires one (--tls-client-ca, mTLS) "
        "(env DIGITS_HEALTHCHECK_TLS_CLIENT_CERT)",
    )
    parser.add_argument(
        "--tls-client-key",
        default=env("DIGITS_HEALTHCHECK_TLS_CLIENT_KEY") or None,
        help="PEM private key of --tls-client-cert (env DIGITS_HEALTHCHECK_TLS_CLIENT_KEY)",
    )
    return parser.parse_args(argv)


def client_certificate(args: argparse.Namespace) -> tuple[bytes | None, bytes | None]:
    """(key, chain) for mTLS, or (None, None)."""
    if bool(args.tls_client_cert) != bool(args.tls_client_key):
        raise UserError("--tls-client-cert and --tls-client-key go together")
    paths = [Path(p) for p in (args.tls_client_key, args.tls_client_cert) if p]
    for path in paths:
        if not path.is_file():
            raise UserError(f"TLS file not found: {path}")
    return (paths[0].read_bytes(), paths[1].read_bytes()) if paths else (None, None)


def open_channel(args: argparse.Namespace) -> grpc.Channel:
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


def check(args: argparse.Namespace) -> str:
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
