# Budbringer — `make demo` and `make test` are all the set-up a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-serve screenshots run test test-deps lint bench bench-batch bench-scaling fuzz constraints clean

# The pinned set (constraints.txt) over the ranges of pyproject.toml.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## seed a demo municipality, send a message, print who got what
	$(BIN)/budbringer demo

demo-serve: $(STAMP)  ## the demo, then keep the gateway running with staff and parent page links
	$(BIN)/budbringer demo --serve

screenshots: $(STAMP)  ## every page at 390 and 1280 px into screenshots/ (git-ignored)
	$(BIN)/python -m scripts.screenshots
	$(BIN)/python -m scripts.screenshots --language ar

run: $(STAMP)   ## run the gateway on 127.0.0.1:8080 with the embedded store and the outbox
	$(BIN)/budbringer serve

test: $(STAMP) test-deps  ## the whole test suite (installs or starts what it needs first)
	CI=$${CI:-true} $(BIN)/pytest -q

test-deps:      ## redis-server on 127.0.0.1:6379, Debian's chromium, the locked Node packages
	scripts/test-deps.sh

lint: $(STAMP)  ## ruff, mypy strict and the import rules of docs/architecture.md
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP) ## the emergency-broadcast benchmark (not part of the tests)
	$(BIN)/budbringer bench

bench-batch: $(STAMP) test-deps ## /healthz and event latency while a 100k-person batch is applied (SQLite, Redis)
	$(BIN)/python -m scripts.measure_batch_latency
	$(BIN)/python -m scripts.measure_batch_latency --backend redis

bench-scaling: $(STAMP) test-deps ## 1 vs 2 Redis workers, each held to 0.25 of a core (cgroups: root)
	$(BIN)/python -m scripts.measure_worker_scaling
	$(BIN)/python -m scripts.measure_worker_scaling --latency 50ms:300ms

fuzz: $(STAMP)  ## schemathesis against the running API, tenant key and guardian token: no 5xx
	$(BIN)/python -m scripts.fuzz

constraints: $(STAMP) ## re-pin constraints.txt to what the venv has now
	@{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^budbringer'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) demo outbox screenshots budbringer.db* .budbringer-secret .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
