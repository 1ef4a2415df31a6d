"""deploy/kserve/: the InferenceService is valid for KServe's schema and matches the server.

The schema is KServe's own: the kserve SDK's InferenceService models (generated from KServe's
OpenAPI schema), installed in .venv-clients (`make clients`), checked by
tests/kserve_manifest_check.py.
"""

import subprocess

import yaml

from serving.config import ServerConfig
from tests.serving_support import ROOT, run_in_clients_env

MANIFEST = ROOT / "deploy" / "kserve" / "inference-service.yaml"


def check(path) -> subprocess.CompletedProcess:
    return run_in_clients_env("kserve_manifest_check.py", path)


def test_inference_service_is_valid_for_kserves_schema():
    result = check(MANIFEST)
    assert result.returncode == 0 and result.stdout.strip() == "valid", result.stdout


def test_the_check_finds_a_misspelt_field_and_a_wrong_type(tmp_path):
    broken = yaml.safe_load(MANIFEST.read_text())
    predictor = broken["spec"]["predictor"]
    predictor["minReplicas"] = "one"
    container = predictor["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = check(path)
    assert result.returncode == 1
    assert ".spec.predictor.minReplicas: expected int" in result.stdout
    assert "readinessProbes: not a field of V1Container" in result.stdout


def test_probes_and_port_are_the_servers_http_api():
    container = yaml.safe_load(MANIFEST.read_text())["spec"]["predictor"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    port = int(env["DIGITS_HTTP_PORT"])
    assert port == ServerConfig().http_port
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert mount["mountPath"] == env["DIGITS_MODEL_REPOSITORY"] and mount["readOnly"]
