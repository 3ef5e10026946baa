# Waybill: `make run` starts everything, `make test` runs the tests.
# Both install what they need first: Debian packages (PostgreSQL + pg_cron, as
# root), then a virtualenv in .venv with the Python packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test bench soak fuzz system venv lint clean-db

run: system venv
	$(BIN)/waybill dev

test: system venv
	$(BIN)/pytest

bench: system venv
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(BIN)/python -m bench

fuzz: system venv
	bash scripts/fuzz.sh

soak: system venv
	$(BIN)/pytest -m soak -s tests/soak

lint: venv
	$(BIN)/ruff check app tests bench
	$(BIN)/mypy

system:
	bash scripts/setup-system.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

clean-db:
	-$(BIN)/waybill db down
	rm -rf .waybill
