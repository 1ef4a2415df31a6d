# Two commands: `make run` (set up, then train + export both models) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= training,gpu,dev
CLIENTS_VENV ?= .venv-clients
PROTOS := protos/digits/v1/digits.proto protos/inference/model_config.proto protos/inference/grpc_service.proto

.PHONY: setup clients run test lint protos clean

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

run: setup
	$(PY) -m training.run $(ARGS)

test: setup clients
	$(PY) -m pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

protos: setup
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

clean:
	rm -rf $(VENV) $(CLIENTS_VENV) artifacts data
