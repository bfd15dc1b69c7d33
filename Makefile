# Two commands on a fresh machine: `make run` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test bench services setup lint clean

setup: $(INSTALLED)

$(BIN)/python:
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { \
		echo "installing python3-venv with apt"; \
		apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(INSTALLED): $(BIN)/python requirements.txt requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

run: $(INSTALLED)
	$(BIN)/python manage.py run_embedded

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# What the tests and benchmarks run for real, from Debian's packages.
services:
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx)

test: $(INSTALLED) lint services
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest

# Every benchmark in bench/ (about 5 minutes); writes bench/results/latest.md.
bench: $(INSTALLED) services
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var
