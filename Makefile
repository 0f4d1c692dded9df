# The two README commands:  `make demo`  and  `make test`.
# Both create the virtual environment (.venv) from scratch when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Headless Chromium for the dashboard's browser test (tests/test_dashboard_browser.py), from
# Debian's packages; the test is skipped without it locally and fails without it under CI=true.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The HTTP load generator of `make bench-http` (benchmarks/http_load.py), from Debian's packages;
# installed on demand, never needed by the tests.
WRK ?= /usr/bin/wrk

.PHONY: demo demo-short demo-basics simulate test test-fast lint types unit bench bench-quick bench-docs bench-instr bench-http bench-grpc bench-redis bench-stall bench-idempotency bench-hedge bench-lock bench-throttle bench-chaos bench-all clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	@# a venv made before the rename still holds the editable install under the old name
	@if $(BIN)/python -m pip show --quiet resilience >/dev/null 2>&1; then \
		$(BIN)/python -m pip uninstall --quiet --yes resilience; fi
	@# the library editable with its extras, plus the dependency groups of pyproject.toml
	@# (test, lint, demo, docs, bench), which pip >= 25.1 installs with --group
	$(BIN)/python -m pip install --quiet -e '.[all,plot]' --group dev
	@touch $(STAMP)

# The storefront: order service (ASGI) -> payment (gRPC) + inventory (HTTP) under injected
# faults, run without and then with the policies; prints a side-by-side summary (< 1 minute).
demo: $(STAMP)
	$(BIN)/python -m examples.storefront

demo-short: $(STAMP)
	$(BIN)/python -m examples.storefront --short

# The basics: decorators and a pipeline against a flaky function (about a second).
demo-basics: $(STAMP)
	$(BIN)/python examples/demo.py

# The policy simulator on a checked-in scenario (virtual time; writes simulate.png).
simulate: $(STAMP)
	$(BIN)/python -m resilience simulate examples/scenarios/payment-faults.toml --every 5 --plot simulate.png

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y chromium chromium-driver

$(WRK):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y wrk

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/twins.py --check

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(CHROMIUM)
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

test: lint types unit

# Skips the tests marked slow (storefront and multi-process runs); CI runs `make test`, i.e. all.
test-fast: $(STAMP) $(CHROMIUM)
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -m "not slow"

# Writes benchmarks/results/micro.json; `make bench-docs` then regenerates the benchmark tables
# of docs/benchmarks.md and docs/redis.md from the JSON files in benchmarks/results/
# (tests/project/test_benchmarks_report.py checks they match). The other bench-* targets each re-run one
# script (the commands are those of SOURCES in benchmarks/report.py); `make bench-all` runs
# them all but bench-http (installs wrk), bench-instr and bench-throttle (need valgrind), then
# bench-docs.
bench: $(STAMP)
	$(BIN)/python -m benchmarks --json benchmarks/results/micro.json

bench-docs: $(STAMP)
	$(BIN)/python -m benchmarks.report --write docs/benchmarks.md docs/redis.md

bench-instr: $(STAMP)
	$(BIN)/python -m benchmarks.instr --json benchmarks/results/instr.json

bench-http: $(STAMP) $(WRK)
	$(BIN)/python -m benchmarks.http_load --json benchmarks/results/http_load.json

bench-grpc: $(STAMP)
	$(BIN)/python -m benchmarks.bench_grpc --json benchmarks/results/grpc.json

bench-redis: $(STAMP)
	$(BIN)/python -m benchmarks.bench_redis --seconds 1 --rounds 4 --json benchmarks/results/redis.json

bench-stall: $(STAMP)
	$(BIN)/python -m benchmarks.redis_stall --runs 3 --json benchmarks/results/redis_stall.json

bench-idempotency: $(STAMP)
	$(BIN)/python -m benchmarks.bench_idempotency --json benchmarks/results/idempotency.json
	$(BIN)/python -m benchmarks.bench_idempotency --mode evict --json benchmarks/results/idempotency_evict.json

bench-hedge: $(STAMP)
	$(BIN)/python -m benchmarks.bench_hedge --json benchmarks/results/hedge.json

bench-lock: $(STAMP)
	$(BIN)/python -m benchmarks.bench_lock --json benchmarks/results/lock.json

bench-throttle: $(STAMP)
	$(BIN)/python -m benchmarks.bench_throttle --instr --json benchmarks/results/throttle.json

bench-chaos: $(STAMP)
	$(BIN)/python -m benchmarks.bench_chaos --json benchmarks/results/chaos.json

bench-all: $(STAMP)  # one after the other, even under make -j: runs must not overlap
	$(MAKE) bench
	$(MAKE) bench-grpc
	$(MAKE) bench-redis
	$(MAKE) bench-stall
	$(MAKE) bench-idempotency
	$(MAKE) bench-hedge
	$(MAKE) bench-lock
	$(MAKE) bench-chaos
	$(MAKE) bench-docs

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache artifacts
