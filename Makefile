# The two commands: `make demo` (install + compile with the embedded model) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The native llama.cpp build uses AMX instructions some CPUs advertise but cannot run.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# litellm otherwise fetches its price table from the network at import time.
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install test lint test-dspy chromium demo bench bench-compare bench-venv lock clean vsix

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"

$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

# The DSPy export tests run inside whichever Python has dspy: $$LMC_DSPY_PYTHON, or .venv-bench when it
# exists (`make bench-venv`); elsewhere they skip with that reason. `make test` does not build the
# bench venv (it downloads DSPy and its dependencies); `make test-dspy` does, then runs just them.
test: install chromium lint
	$(BIN)/python -m pytest

# ruff (lint and format check) and mypy, configured in pyproject.toml; `make test` runs them first, so CI does too.
lint: install
	$(BIN)/ruff check lmc tests bench datasets editors
	$(BIN)/ruff format --check lmc tests bench datasets editors
	$(BIN)/mypy

test-dspy: install bench-venv
	LMC_DSPY_PYTHON=$(BENCH_VENV)/bin/python $(BIN)/python -m pytest tests/test_export_dspy.py

# The HTML report tests render pages in headless Chromium. Install it where that is possible (root
# and apt-get), quietly; anywhere else those tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium is not installed and could not be installed here; the HTML report tests will be skipped"

DEMO := build/route.lmc.json

# Compile on train/dev, score zero-shot vs compiled on the held-out test split (paired test), run the
# artifact on new messages, show the demos the compiler chose. Every LM call is cached in .lmc/cache.
demo: install
	@mkdir -p build
	$(BIN)/lmc compile programs/route.lmp --train datasets/route_train.jsonl --dev datasets/route_dev.jsonl \
	  --optimizer bootstrap --max-demos 12 --max-labeled 12 --seed 0 -o $(DEMO)
	@echo "== held-out test (datasets/route_test.jsonl, never seen by the compile): compiled vs zero-shot =="
	$(BIN)/lmc eval $(DEMO) --data datasets/route_test.jsonl --baseline programs/route.lmp
	@rm -f build/route_new.out.jsonl
	$(BIN)/lmc run $(DEMO) --data datasets/route_new.jsonl --out build/route_new.out.jsonl
	@$(BIN)/python -c "import json; msg = {r['id']: r['message'] for r in map(json.loads, open('datasets/route_new.jsonl'))}; [print(f\"{o['id']}: {(o['outputs'] or {}).get('intent', o['error'])}  <- {msg[o['id']]}\") for o in map(json.loads, open('build/route_new.out.jsonl'))]"
	$(BIN)/lmc inspect $(DEMO)

# Benchmarks run in their own venv holding lmc (editable) and dspy==3.4.1 side by side; see bench/README.md.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml bench/requirements-bench.txt
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(BENCH_VENV)/bin/pip install -q -r bench/requirements-bench.txt
	$(BENCH_VENV)/bin/pip install -q --no-deps -e . && $(BENCH_VENV)/bin/pip install -q -e ".[local,test]"
	touch $@

bench-venv: $(BENCH_VENV)/.installed

bench: bench-venv
	$(BENCH_VENV)/bin/python bench/run_all.py $(BENCH_ARGS)

# The published lmc vs DSPy tables (bench/README.md): DSPy's configuration study on SST-2, both tables' runs
# for SST-2 and BANKING77 routing, KNN on SST-2, then the compare section of RESULTS.md from the runs on disk.
# Resumable: a run finished at the current commit is not redone.
COMPARE = $(BENCH_VENV)/bin/python bench/bench_compare.py --size small
bench-compare: bench-venv
	$(COMPARE) --tasks sst2 --study only
	$(COMPARE) --tasks sst2,route --optimizers zero-shot,labeled,bootstrap,random-search,mipro
	$(COMPARE) --tasks sst2 --optimizers knn
	$(BENCH_VENV)/bin/python bench/run_all.py --quick --only compare --summary-only

# Regenerate the hashed lock file after changing dependencies in pyproject.toml.
lock:
	test -x .venv-lock/bin/uv || ($(PY) -m venv .venv-lock && .venv-lock/bin/pip install -q uv==0.13.8)
	.venv-lock/bin/uv pip compile pyproject.toml requirements-build.in --extra local --extra otel --extra test \
	  --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --custom-compile-command "make lock" -o requirements.lock

clean:
	rm -rf $(VENV) .lmc build

# The VS Code extension as a .vsix (needs npm; see README "Editors" for loading the folder without it).
vsix:
	cd editors/vscode && npm ci --no-audit --no-fund && npx --yes @vscode/vsce@3 package --allow-missing-repository --skip-license -o lmp.vsix
