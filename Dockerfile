# The digit server image, in two flavours chosen by a build argument (docs/deployment.md):
#   docker build -t digits-serving:cpu .
#   docker build -t digits-serving:gpu --build-arg FLAVOR=gpu .
#   add --build-arg MODEL_REPOSITORY=artifacts/model_repository to bake a training run's models in.
# cpu: slim Python 3.11 with `onnxruntime`.
# gpu: NVIDIA's CUDA + cuDNN runtime image with `onnxruntime-gpu`. PyPI's onnxruntime-gpu
#      1.19-1.26 is built for CUDA 12, 1.27 and later for CUDA 13, both with cuDNN 9; the
#      build stops if the wheel's CUDA major differs from the base image's.
# No TensorFlow in either image.

ARG FLAVOR=cpu
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
# onnxruntime / onnxruntime-gpu release: deploy/onnxruntime-constraints.txt pins it for both
# images; set this only to override it, e.g. CUDA 12 hosts: 1.26.0 with a CUDA 12 CUDA_IMAGE
# such as nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04.
ARG ONNXRUNTIME_VERSION=

# ---- base images: the same base for building and for running, so the venv fits ----
FROM python:3.11-slim-bookworm AS base-cpu

FROM ${CUDA_IMAGE} AS base-gpu
# Ubuntu 24.04's Python 3.12; the base image tag pins the distribution and so its versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# ---- build: the package and its serving dependencies in a virtual environment ----
# base-${FLAVOR} is a stage above, not an image to tag (hadolint cannot tell).
# hadolint ignore=DL3006
FROM base-${FLAVOR} AS build
ARG FLAVOR
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common/ common/
COPY protos/ protos/
COPY serving/ serving/
COPY export/ export/
COPY training/ training/
COPY benchmarks/ benchmarks/
COPY deploy/onnxruntime-constraints.txt /tmp/constraints.txt
ARG ONNXRUNTIME_VERSION
# The CUDA libraries come from the base image: ONNX Runtime must have been built for its major.
RUN if [ -n "${ONNXRUNTIME_VERSION}" ]; then printf 'onnxruntime==%s\nonnxruntime-gpu==%s\n' \
        "${ONNXRUNTIME_VERSION}" "${ONNXRUNTIME_VERSION}" > /tmp/constraints.txt; fi \
    && /opt/venv/bin/pip install --constraint /tmp/constraints.txt ".[${FLAVOR}]" \
    && if [ "${FLAVOR}" = gpu ]; then /opt/venv/bin/python -c \
    "import os; from onnxruntime.capi import build_and_package_info as b; \
ort, base = b.cuda_version.split('.')[0], os.environ['CUDA_VERSION'].split('.')[0]; \
assert ort == base, f'onnxruntime-gpu is built for CUDA {ort}, the base image has CUDA {base}'"; \
    fi

# ---- the server ----
# hadolint ignore=DL3006
FROM base-${FLAVOR} AS server
ARG MODEL_REPOSITORY=deploy/empty-model-repository
RUN groupadd --gid 10001 digits \
    && useradd --uid 10001 --gid digits --no-create-home --shell /usr/sbin/nologin digits
COPY --from=build /opt/venv /opt/venv
# Owned by root: the server only reads its models.
COPY ${MODEL_REPOSITORY} /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DIGITS_MODEL_REPOSITORY=/models \
    DIGITS_HOST=0.0.0.0 \
    DIGITS_PORT=8500 \
    DIGITS_HTTP_PORT=8501 \
    DIGITS_METRICS_PORT=8502 \
    DIGITS_GRACE_SECONDS=10 \
    DIGITS_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8500 8501 8502
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "serving.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "serving"]
