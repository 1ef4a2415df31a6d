# Training on a GPU in a container (docs/deployment.md):
#   docker build -f training.Dockerfile -t digits-training .
#   docker run --gpus all --rm --user "$(id -u):$(id -g)" \
#     -v "$PWD/data:/workspace/data" -v "$PWD/artifacts:/workspace/artifacts" digits-training
# TensorFlow's `and-cuda` extra brings the CUDA 12 / cuDNN 9 wheels TensorFlow 2.20 is built
# for, so a plain slim base is enough: the host only needs the NVIDIA driver and the NVIDIA
# Container Toolkit. Export's equality checks run on ONNX Runtime's CPU build.

FROM python:3.11-slim-bookworm AS build
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
# The same ONNX Runtime as the server image (one pin for both).
COPY deploy/onnxruntime-constraints.txt /tmp/constraints.txt
RUN /opt/venv/bin/pip install --constraint /tmp/constraints.txt \
        ".[training,cpu]" "tensorflow[and-cuda]>=2.20,<2.21"

FROM python:3.11-slim-bookworm AS training
RUN groupadd --gid 10001 digits \
    && useradd --uid 10001 --gid digits --no-create-home --shell /usr/sbin/nologin digits \
    && mkdir -p /workspace/data /workspace/artifacts \
    && chmod -R 1777 /workspace
COPY --from=build /opt/venv /opt/venv
# Relative defaults (data/, artifacts/) resolve under /workspace, as in a checkout; the
# VGG16 ImageNet weights are cached under data/ too. HOME is writable for any --user.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    KERAS_HOME=/workspace/data/keras \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /workspace
USER 10001:10001
ENTRYPOINT ["python", "-m", "training.run"]
