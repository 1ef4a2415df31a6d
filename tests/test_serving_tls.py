"""TLS set-up errors name the file and the problem; mTLS admits only clients the CA signed
(issue 11, item 13)."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from serving.client import DigitClient
from tests.serving_support import (
    ROOT,
    ServerProcess,
    ServerThread,
    digit_pixels,
    encode,
    free_port,
    server_config,
)
from tests.test_serving_process import assert_one_line_error

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the keys")


def openssl(command: str, cwd: Path) -> None:
    """`openssl COMMAND` (words split on spaces) in `cwd`."""
    subprocess.run(
        ["openssl", *command.split()], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def self_signed(folder: Path, name: str) -> None:
    openssl(
        f"req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN={name} "
        f"-keyout {name}.key -out {name}.pem",
        folder,
    )


def signed_pair(folder: Path, name: str, extensions: str = "") -> None:
    """A key and a certificate signed by the test CA in `folder`."""
    openssl(
        f"req -newkey rsa:2048 -nodes -subj /CN={name} -keyout {name}.key -out {name}.csr", folder
    )
    extra = ""
    if extensions:
        (folder / f"{name}.ext").write_text(extensions)
        extra = f" -extfile {name}.ext"
    openssl(
        f"x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
        f"-out {name}.pem{extra}",
        folder,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    self_signed(folder, "ca")
    signed_pair(folder, "server", "subjectAltName=IP:127.0.0.1\n")
    signed_pair(folder, "client")
    self_signed(folder, "stranger")
    return folder


def run_module(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def serve_cli(*args) -> subprocess.CompletedProcess:
    return run_module("serving", "--port", "0", "--metrics-port", "0", "--http-port", "0", *args)


@pytest.mark.parametrize(
    ("cert", "key", "client_ca", "named", "problem"),
    [
        ("garbage.pem", "server.key", None, "garbage.pem", "no PEM certificate"),
        ("server.pem", "client.key", None, "client.key", "does not match"),
        ("server.pem", "server.key", "server.key", "server.key", "no PEM CA certificate"),
    ],
)
def test_a_wrong_tls_file_is_named_in_one_line(
    pki, serving_repository, cert, key, client_ca, named, problem
):
    (pki / "garbage.pem").write_text("not a certificate\n")
    args = [
        "--model-repository",
        serving_repository,
        "--tls-cert",
        pki / cert,
        "--tls-key",
        pki / key,
    ]
    if client_ca:
        args += ["--tls-client-ca", pki / client_ca]
    assert_one_line_error(serve_cli(*args), str(pki / named), problem)


def mtls_config(pki: Path, repository: Path):
    return server_config(
        repository,
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.pem",
    )


def test_mtls_admits_only_clients_with_a_certificate_the_ca_signed(pki, serving_repository):
    config = mtls_config(pki, serving_repository)
    ca = (pki / "ca.pem").read_bytes()
    with ServerThread(config) as server:
        signed = ((pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes())
        with DigitClient(server.target, root_certificates=ca, client_certificate=signed) as client:
            assert len(client.classify("scratch_cnn", [digit_pixels(0)]).predictions) == 1
        stranger = ((pki / "stranger.key").read_bytes(), (pki / "stranger.pem").read_bytes())
        for certificate in (None, stranger):
            with (
                DigitClient(
                    server.target, root_certificates=ca, client_certificate=certificate, timeout=5
                ) as client,
                pytest.raises(grpc.RpcError) as failure,
            ):
                client.list_models()
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_client_command_speaks_mtls(pki, serving_repository, tmp_path):
    config = mtls_config(pki, serving_repository)
    image = tmp_path / "digit.png"
    image.write_bytes(encode(digit_pixels(0)))
    mine = ("--tls-cert", pki / "client.pem", "--tls-key", pki / "client.key")
    with ServerThread(config) as server:
        result = run_module(
            "serving.client", "--port", server.port, "--tls-ca", pki / "ca.pem", *mine, image
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(image))


def test_the_healthcheck_speaks_mtls(pki, serving_repository):
    config = mtls_config(pki, serving_repository)
    trust = ("--tls-cert", pki / "ca.pem", "--tls-server-name", "127.0.0.1")
    mine = ("--tls-client-cert", pki / "client.pem", "--tls-client-key", pki / "client.key")
    with ServerThread(config) as server:
        results = [
            run_module("serving.healthcheck", "--port", server.port, *trust, *extra)
            for extra in (mine, ())
        ]
    assert results[0].returncode == 0, results[0].stderr
    assert results[1].returncode != 0  # no client certificate: refused


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is the HTTP client here")
def test_the_http_port_serves_the_same_tls_and_mtls(pki, serving_repository):
    config = replace(mtls_config(pki, serving_repository), http_port=free_port())
    with ServerThread(config) as server:
        url = f"https://127.0.0.1:{server.server.http_port}/v2/health/ready"
        trust = ("--cacert", str(pki / "ca.pem"))
        mine = ("--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"))
        signed = subprocess.run(
            ["curl", "--silent", "--show-error", *trust, *mine, url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        anonymous = subprocess.run(
            ["curl", "--silent", "--show-error", *trust, url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert json.loads(signed.stdout) == {"ready": True}, signed.stderr
    assert anonymous.returncode != 0  # no client certificate: the handshake fails


def test_every_worker_speaks_the_same_mtls(pki, serving_repository):
    """With two worker processes, every connection (on whichever worker) is mTLS."""
    args = ("--model-repository", str(serving_repository), "--models", "scratch_cnn",
            "--workers", "2", "--port", "0", "--metrics-port", "0",
            "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
            "--tls-client-ca", str(pki / "ca.pem"))  # fmt: skip
    ca = (pki / "ca.pem").read_bytes()
    signed = ((pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes())
    with ServerProcess(*args) as server:
        assert server.started["workers"] == 2 and server.started["tls"] is True
        for _ in range(8):  # eight connections: both workers, all but certainly
            with DigitClient(
                server.target, root_certificates=ca, client_certificate=signed,
                own_connection=True,
            ) as client:  # fmt: skip
                assert len(client.classify("scratch_cnn", [digit_pixels(0)]).predictions) == 1
            with (
                DigitClient(server.target, root_certificates=ca, timeout=5, own_connection=True)
                as client,
                pytest.raises(grpc.RpcError) as failure,
            ):  # fmt: skip
                client.list_models()
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
