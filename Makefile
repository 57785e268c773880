# nextbest — every target creates .venv on first use.
# `make test` runs the whole suite; `make test-fast` leaves out the tests marked slow (about a second or
# more each: subprocess servers, simulations, training, property tests) and takes under a minute.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast protos lint bench serve clean check-protos models mutation fuzz

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m nextbest demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "not slow"

# The server's edge fuzzed with 2,000 requests per database (PostgreSQL too when
# NEXTBEST_TEST_DATABASE_URL is set); `make test` runs a short version.
fuzz: $(STAMP)
	NEXTBEST_FUZZ_REQUESTS=$${NEXTBEST_FUZZ_REQUESTS:-2000} $(PY) -m pytest -q -s tests/server/test_fuzz.py

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos -I$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") --python_out=src --pyi_out=src --grpc_python_out=src \
		protos/nextbest/api/v1/*.proto

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Issue 25's figures come from one run of this target: the servers (empty, memory, SQLite and, with
# NEXTBEST_BENCH_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:5432/postgres, PostgreSQL; one and two
# processes), the pipeline in process against the empty server, and the durable write against the driver.
BENCH_PG = $(if $(NEXTBEST_BENCH_POSTGRES),--postgres $(NEXTBEST_BENCH_POSTGRES),)
bench: $(STAMP)
	$(PY) benchmarks/bench_next_action.py $(BENCH_PG) --processes 1,2
	$(PY) benchmarks/bench_decide.py --json benchmarks/results/decide.json
	$(PY) benchmarks/bench_store_write.py $(BENCH_PG) --json benchmarks/results/store_write.json
	$(PY) benchmarks/bench_contact_policy.py
	$(PY) benchmarks/bench_scoring.py
	$(PY) benchmarks/bench_uplift_hillstrom.py

# The fault harness (benchmarks/reliability.py): SIGKILLs, SIGTERM, PostgreSQL stopped and frozen (on a
# cluster of its own), SQLite on a full tmpfs, 2x overload, audited by a ledger; root for tmpfs and
# PostgreSQL (~15 min). `make test` runs its short version (tests/reliability).
.PHONY: reliability
reliability: $(STAMP)
	$(PY) benchmarks/reliability.py --json benchmarks/reliability.json
	@# The overload again, through the edge (nginx in front, as in production; needs nginx).
	$(PY) benchmarks/reliability.py --only overload --overload-edge --json benchmarks/reliability-edge.json

# Mutation testing of src/nextbest/stats/ against the fast stats tests (not in CI: about half an hour on
# two cores); the score and every survivor are in benchmarks/RESULTS.md.
mutation: $(STAMP)
	bash benchmarks/mutation.sh

# The bundled models, trained on the project's own simulated store of 320,000 customers (40 minutes on
# a 2-core machine, 37 of them simulating in two processes; 111 minutes simulating on a slower spell of
# the same host), and the churn model on a longer store of 8,000 customers x 42 days (one minute).
models: $(STAMP)
	$(PY) -m nextbest.simulate.bundle --models-dir models
	$(PY) -m nextbest.simulate.bundle --models-dir models --kinds churn --customers 8000 --days 42 \
	  --database var/churn-sim.db

serve: $(STAMP)
	$(PY) -m nextbest serve

clean:
	rm -rf $(VENV) var build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
