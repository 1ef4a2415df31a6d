"""TLS set-up errors name the file and the problem; mTLS admits only clients the CA signed
(issue 11, item 13)."""

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from serving.client import DigitClient
from tests.serving_support import ROOT, ServerThread, digit_pixels, encode, server_config

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the keys")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def signed_pair(folder: Path, name: str, extensions: str = "") -> tuple[Path, Path]:
    """A key and a certificate signed by the test CA in `folder`."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)  # fmt: skip
    extra = []
    if extensions:
        (folder / f"{name}.ext").write_text(extensions)
        extra = ["-extfile", f"{name}.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", *extra, cwd=folder)  # fmt: skip
    return folder / f"{name}.key", folder / f"{name}.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)  # fmt: skip
    signed_pair(folder, "server", "subjectAltName=IP:127.0.0.1\n")
    signed_pair(folder, "client")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=stranger",
            "-keyout", "stranger.key", "-out", "stranger.pem", cwd=folder)  # fmt: skip
    return folder


def serve_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving", "--port", "0", "--metrics-port", "0", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_certificate_file_that_is_no_certificate_is_named(pki, serving_repository, tmp_path):
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate\n")
    line = one_line(
        serve_cli(
            "--model-repository",
            serving_repository,
            "--tls-cert",
            bad,
            "--tls-key",
            pki / "server.key",
        )  # fmt: skip
    )
    assert str(bad) in line and "no PEM certificate" in line


def test_a_key_that_does_not_match_the_certificate_is_named(pki, serving_repository):
    line = one_line(
        serve_cli(
            "--model-repository",
            serving_repository,
            "--tls-cert",
            pki / "server.pem",
            "--tls-key",
            pki / "client.key",
        )  # fmt: skip
    )
    assert str(pki / "client.key") in line and "does not match" in line


def test_a_client_ca_that_is_no_certificate_is_named(pki, serving_repository):
    line = one_line(
        serve_cli(
            "--model-repository",
            serving_repository,
            "--tls-cert",
            pki / "server.pem",
            "--tls-key",
            pki / "server.key",
            "--tls-client-ca",
            pki / "server.key",
        )  # fmt: skip
    )
    assert str(pki / "server.key") in line and "no PEM CA certificate" in line


def test_mtls_admits_only_clients_with_a_certificate_the_ca_signed(pki, serving_repository):
    config = server_config(
        serving_repository,
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.pem",
    )
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
    config = server_config(
        serving_repository,
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.pem",
    )
    image = tmp_path / "digit.png"
    image.write_bytes(encode(digit_pixels(0)))
    with ServerThread(config) as server:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "serving.client",
                "--port",
                str(server.port),
                "--tls-ca",
                pki / "ca.pem",
                "--tls-cert",
                pki / "client.pem",
                "--tls-key",
                pki / "client.key",
                image,
            ],  # fmt: skip
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(image))


def test_the_healthcheck_speaks_mtls(pki, serving_repository):
    config = server_config(
        serving_repository,
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.pem",
    )
    with ServerThread(config) as server:
        common = ["--port", str(server.port), "--tls-cert", str(pki / "ca.pem"),
                  "--tls-server-name", "127.0.0.1"]  # fmt: skip
        mine = ["--tls-client-cert", str(pki / "client.pem"),
                "--tls-client-key", str(pki / "client.key")]  # fmt: skip
        results = [
            subprocess.run(
                [sys.executable, "-m", "serving.healthcheck", *common, *extra],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            for extra in (mine, [])
        ]
    assert results[0].returncode == 0, results[0].stderr
    assert results[1].returncode != 0  # no client certificate: refused
