# The two commands: `make demo` (install + compile with the embedded model) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The native llama.cpp build uses AMX instructions some CPUs advertise but cannot run.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# litellm otherwise fetches its price table from the network at import time.
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install test demo bench lock clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"

$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m lmc.demo

bench: install
	$(BIN)/python bench/run_all.py

# Regenerate the hashed lock file after changing dependencies in pyproject.toml.
lock:
	test -x .venv-lock/bin/uv || ($(PY) -m venv .venv-lock && .venv-lock/bin/pip install -q uv==0.13.8)
	.venv-lock/bin/uv pip compile pyproject.toml requirements-build.in --extra local --extra test \
	  --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --custom-compile-command "make lock" -o requirements.lock

clean:
	rm -rf $(VENV) .lmc build
