# exapyte: every target bootstraps the local virtualenv (.venv) by itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv run test bench bench-storage bench-checker bench-raft check jepsen sim mutants clean help

help:
	@echo "make run     start a local node on config.json and show a put and a get (ONCE=1 to exit after)"
	@echo "make test    run the test suite"
	@echo "make bench   run the benchmarks (results in bench/results/)"
	@echo "make check FILES=...   check histories for linearizability"
	@echo "make jepsen TOPOLOGY=three-region [WORKLOAD=register] [NEMESIS=partition,kill,pause] [TIME=60] [BUGS=stale-reads] [HOSTS=netns]"
	@echo "            [PROTOCOL=multipaxos] [DISTRIBUTION=sharded|hierarchical] [SHARDS=8] [REPLICATION_FACTOR=3] [DB=sim]"

# The package itself is installed editable, so `import exapyte` works from any directory with
# .venv/bin/python. pip builds it in an isolated environment with the setuptools that
# pyproject.toml asks for, from the same index as the requirements. Its build step runs with -qq:
# setuptools' notes about editable layouts are not for the user; a failed build is still shown.
$(STAMP): pyproject.toml requirements.txt
	@echo "creating $(VENV) with $(PY) ..."
	@$(PY) -m venv $(VENV)
	@echo "upgrading pip ..."
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing requirements ..."
	@$(BIN)/python -m pip install --quiet -r requirements.txt
	@echo "installing exapyte (editable) ..."
	@$(BIN)/python -m pip install --quiet --quiet -e .
	@touch $(STAMP)
	@echo "$(VENV) is ready"

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python main.py --cluster config.json --smoke $(if $(ONCE),--once,)

# pytest exits 5 when it collected no test: that is reported, not treated as a crash.
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: bench-storage bench-checker bench-raft

bench-storage: $(STAMP)
	$(BIN)/python bench/storage.py

bench-checker: $(STAMP)
	$(BIN)/python bench/checker.py

# Starts etcd itself when the etcd binary is installed (apt-get install etcd-server); reported as
# missing otherwise. PySyncObj is a benchmark-only dependency, installed here when absent.
bench-raft: $(STAMP)
	@$(BIN)/python -c "import pysyncobj" 2>/dev/null || \
		$(BIN)/python -m pip install --quiet 'pysyncobj>=0.3.12,<0.4'
	$(BIN)/python bench/raft.py

check: $(STAMP)
	$(BIN)/python -m harness check $(FILES)

# The Jepsen-style harness: real node processes, per-link Toxiproxy faults, checkers, report.
# make jepsen TOPOLOGY=three-region [WORKLOAD=register|kv|set|counter|bank|session|bounded|prefix|eventual|levels] [NEMESIS=partition,kill,pause,clock] [TIME=60]
#             [RATE=100] [SEED=n] [BUGS=stale-reads] [CONCURRENCY=5]; results in store/latest/.
# BUGS without NEMESIS runs each bug's own fault mix, and without WORKLOAD the workload at the
# level the bug breaks (register for the others; see python -m harness test --help).
# HOSTS=netns runs each node in a network namespace of its own, partitions as iptables rules (root).
# DB=sim runs the same spec in the deterministic simulator (same checkers and report, a replay command).
# SEED is passed only when given (the simulator's default SEED must not pin the harness's seed).
# PROTOCOL=raft|multipaxos|zab DISTRIBUTION=centralized|sharded|hierarchical SHARDS=n
# REPLICATION_FACTOR=r go into every node's config; PROTOCOL and SHARDS only when given (the
# simulator's defaults below must not leak into the harness: its SHARDS default is 8 when sharded).
TOPOLOGY ?= three-region
TIME ?= 60
jepsen: $(STAMP)
	$(BIN)/python -m harness test --topology $(TOPOLOGY) $(if $(WORKLOAD),--workload $(WORKLOAD),) --time $(TIME) \
		$(if $(NEMESIS),--nemesis $(NEMESIS),) $(if $(RATE),--rate $(RATE),) \
		$(if $(filter command line environment,$(origin SEED)),--seed $(SEED),) \
		$(if $(BUGS),--bugs $(BUGS),) $(if $(CONCURRENCY),--concurrency $(CONCURRENCY),) \
		$(if $(HOSTS),--hosts $(HOSTS),) $(if $(DB),--db $(DB),) \
		$(if $(filter command line environment,$(origin PROTOCOL)),--protocol $(PROTOCOL),) \
		$(if $(DISTRIBUTION),--distribution $(DISTRIBUTION),) \
		$(if $(filter command line environment,$(origin SHARDS)),--shards $(SHARDS),) \
		$(if $(REPLICATION_FACTOR),--replication-factor $(REPLICATION_FACTOR),) \
		$(if $(REPLICATION),--replication $(REPLICATION),)

# The deterministic simulator: SEEDS seeds from SEED, on 2 worker processes.
SEEDS ?= 100
SEED ?= 0
# make sim [SEEDS=1000] [PROTOCOL=raft|multipaxos|zab] [SHARDS=8] [NODES=3|5]
PROTOCOL ?= raft
SHARDS ?= 1
NODES ?= 3
sim: $(STAMP)
	$(BIN)/python -m exapyte.sim --protocol $(PROTOCOL) --shards $(SHARDS) --nodes $(NODES) \
		--seed $(SEED) --seeds $(SEEDS) --workers 2

# Every mutant must be caught, and the unmodified core must pass 1000 seeds (plus 200 on 5 nodes).
mutants: $(STAMP)
	$(BIN)/python -m tests.mutants --baseline-seeds 1000 --workers 2

clean:
	rm -rf $(VENV) exapyte.egg-info .pytest_cache .hypothesis run store
