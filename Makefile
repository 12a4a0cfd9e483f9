# The two commands: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
HOST   ?= 127.0.0.1
PORT   ?= 8000
# pytest-xdist workers; CI machines have 2 cores.
JOBS   ?= 2

export GUANHAO_SANDBOX ?= 1

.PHONY: run test test-sqlite test-postgres lint messages venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## make run: migrate an embedded SQLite database, load demo data, serve on http://$(HOST):$(PORT)
run: $(STAMP)
	$(BIN)/guanhao db upgrade
	$(BIN)/guanhao demo-data --host $(HOST) --port $(PORT)
	$(BIN)/guanhao serve --host $(HOST) --port $(PORT)

## make lint: ruff (lint and format) and mypy, zero findings
lint: $(STAMP)
	$(BIN)/ruff check guanhao tests bench
	$(BIN)/ruff format --check guanhao tests bench
	$(BIN)/mypy

## make messages: extract every catalog sentence from the code and templates into each language's .po
messages: $(STAMP)
	mkdir -p var
	$(BIN)/pybabel extract -F babel.cfg -k _l --no-location --sort-output -o var/messages.pot . >/dev/null
	$(BIN)/pybabel update -i var/messages.pot -d guanhao/locale -D messages --no-fuzzy-matching --ignore-obsolete -w 120

## make test: lint (a finding fails the run), then the whole suite on SQLite, then on PostgreSQL when
## GUANHAO_TEST_POSTGRES_URL is set
test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-sqlite
	@if [ -n "$$GUANHAO_TEST_POSTGRES_URL" ]; then $(MAKE) --no-print-directory test-postgres; \
	 else echo "GUANHAO_TEST_POSTGRES_URL not set: PostgreSQL leg skipped"; fi

test-sqlite: $(STAMP)
	env -u GUANHAO_TEST_POSTGRES_URL -u GUANHAO_DATABASE_URL $(BIN)/pytest -n $(JOBS) --dist loadgroup -q -p no:cacheprovider

test-postgres: $(STAMP)
	env -u GUANHAO_DATABASE_URL $(BIN)/pytest -n $(JOBS) --dist loadgroup -q -p no:cacheprovider

clean:
	rm -rf $(VENV) var .pytest_cache
