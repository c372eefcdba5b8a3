# Budbringer — `make demo` and `make test` are all the set-up a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-serve screenshots run test lint bench fuzz clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## seed a demo municipality, send a message, print who got what
	$(BIN)/budbringer demo

demo-serve: $(STAMP)  ## the demo, then keep the gateway running with staff and parent page links
	$(BIN)/budbringer demo --serve

screenshots: $(STAMP)  ## every page at 390 and 1280 px into screenshots/ (git-ignored)
	$(BIN)/python -m scripts.screenshots

run: $(STAMP)   ## run the gateway on 127.0.0.1:8080 with the embedded store and the outbox
	$(BIN)/budbringer serve

test: $(STAMP)  ## the whole test suite
	$(BIN)/pytest -q

lint: $(STAMP)  ## ruff and mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) ## the emergency-broadcast benchmark (not part of the tests)
	$(BIN)/budbringer bench

fuzz: $(STAMP)  ## schemathesis against the running API, tenant key and guardian token: no 5xx
	$(BIN)/python -m scripts.fuzz

clean:
	rm -rf $(VENV) demo outbox screenshots budbringer.db* .budbringer-secret .pytest_cache .mypy_cache .ruff_cache
