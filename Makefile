# feedbackloop — the few verbs a newcomer needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FL := $(BIN)/feedbackloop

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install feedbackloop with its dev tools

jars: $(STAMP) ## Fetch the Kafka broker's jars from Maven Central into the cache
	$(FL) stack fetch

stack-up: $(STAMP) ## Start the local Kafka broker (KRaft, 127.0.0.1) and create the topics
	$(FL) stack up

stack-down: $(STAMP) ## Stop the local Kafka broker started by stack-up
	$(FL) stack down

demo: $(STAMP) ## Synthetic traffic -> Kafka -> Faust -> ClickHouse, then the regeneration rates
	$(FL) demo

test: $(STAMP) ## Unit tests, then integration tests against the real broker and chdb
	$(BIN)/pytest tests/unit -q
	$(BIN)/pytest tests/integration -q -m integration

unit: $(STAMP) ## Unit tests only (no broker, seconds)
	$(BIN)/pytest tests/unit -q

lint: $(STAMP) ## ruff, mypy --strict and the import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP) ## Apply ruff's formatting and import order
	$(BIN)/ruff check --fix --select I .
	$(BIN)/ruff format .

report: $(STAMP) ## The weekly improvement report (terminal + report.html); DATABASE=demo after make demo
	$(FL) report --out report.html $(if $(DATABASE),--database $(DATABASE))

experiments: $(STAMP) ## Running prompt experiments and their latest decisions
	$(FL) experiments list

alerts: $(STAMP) ## Follow the quality regression alerts as they are raised and resolved
	$(FL) alerts tail

bench: $(STAMP) ## Throughput, scale-out, latency, the naive peer and the compute ceiling (JSON: ARGS=--json)
	$(FL) bench $(ARGS)

soak: $(STAMP) ## 10 minutes at half the measured capacity: RSS and consumer lag every 10 s
	$(FL) bench --soak $(ARGS)

clean: ## Remove local state (chdb data, broker data) — not the jar cache
	-$(FL) stack down
	rm -rf .feedbackloop

.PHONY: help install jars stack-up stack-down demo test unit lint format report experiments alerts bench soak clean
