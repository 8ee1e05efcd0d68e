# exapyte: every target bootstraps the local virtualenv (.venv) by itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv run test bench bench-storage bench-checker check jepsen sim mutants clean help

help:
	@echo "make run     start a local node on config.json and show a put and a get (ONCE=1 to exit after)"
	@echo "make test    run the test suite"
	@echo "make bench   run the benchmarks (results in bench/results/)"
	@echo "make check FILES=...   check histories for linearizability"

$(STAMP): pyproject.toml requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python main.py --cluster config.json --smoke $(if $(ONCE),--once,)

# pytest exits 5 when it collected no test: that is reported, not treated as a crash.
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: bench-storage bench-checker

bench-storage: $(STAMP)
	$(BIN)/python bench/storage.py

bench-checker: $(STAMP)
	$(BIN)/python bench/checker.py

check: $(STAMP)
	$(BIN)/python -m harness check $(FILES)

jepsen sim mutants:
	@echo "make $@: not available in this release yet (it arrives with the harness and simulator)" >&2; exit 2

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis run store
