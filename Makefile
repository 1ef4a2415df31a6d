# Two commands: `make run` (set up, then train + export both models) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= training,gpu,benchmarks,dev
CLIENTS_VENV ?= .venv-clients
PERF_VENV ?= .venv-perf
PROTOS := protos/digits/v1/digits.proto protos/inference/model_config.proto protos/inference/grpc_service.proto

.PHONY: setup clients perf-tools run test lint protos clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# tritonclient (gRPC and HTTP) in its own environment, for the interop tests.
clients: $(CLIENTS_VENV)/.installed

$(CLIENTS_VENV)/.installed: tools/clients-requirements.txt
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLIENTS_VENV)/bin/python -m pip install --quiet -r tools/clients-requirements.txt
	touch $@

# perf_analyzer (bundled in the tritonclient 2.51.0 wheel; numpy < 2) and the CUDA runtime
# library it links to, for benchmarks.protocols. It also needs Debian's libb64-0d.
perf-tools: $(PERF_VENV)/.installed

$(PERF_VENV)/.installed:
	$(PYTHON) -m venv $(PERF_VENV)
	$(PERF_VENV)/bin/python -m pip install --quiet "tritonclient[grpc]==2.51.0" nvidia-cuda-runtime-cu12
	touch $@

run: setup
	$(PY) -m training.run $(ARGS)

test: setup clients
	$(PY) -m pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

protos: setup
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

clean:
	rm -rf $(VENV) $(CLIENTS_VENV) $(PERF_VENV) artifacts data
