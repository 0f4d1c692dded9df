# The two README commands:  `make demo`  and  `make test`.
# Both create the virtual environment (.venv) from scratch when it is missing or stale
# (scripts/venv.sh: uv from PyPI as the installer, pip as the fallback; USE_PIP=1 forces pip).
# `make demo` installs what the demo runs on only; every other target installs everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# Headless Chromium for the dashboard's browser test (tests/test_dashboard_browser.py), from
# Debian's packages; the test is skipped without it locally and fails without it under CI=true.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# PostgreSQL's server binaries for the SQL outbox's tests (tests/pg_server.py starts a server of
# its own from them; the machine's own PostgreSQL, if any, is never used), from Debian's
# packages when no /usr/lib/postgresql/*/bin/initdb exists; the tests skip without them locally
# and fail under CI=true.
INITDB ?= $(or $(lastword $(sort $(wildcard /usr/lib/postgresql/*/bin/initdb))),/usr/lib/postgresql/15/bin/initdb)

# The HTTP load generator of `make bench-http` (benchmarks/http_load.py), from Debian's packages;
# installed on demand, never needed by the tests.
WRK ?= /usr/bin/wrk

.PHONY: demo demo-short demo-basics simulate test test-fast lint types unit bench bench-quick bench-docs bench-instr bench-http bench-grpc bench-redis bench-stall bench-idempotency bench-hedge bench-lock bench-outbox bench-throttle bench-chaos bench-hotkeys bench-all clean

# the library editable with its extras, plus the dependency groups of pyproject.toml (test,
# lint, demo, docs, bench); a full environment serves the demo too
$(STAMP): pyproject.toml scripts/venv.sh
	scripts/venv.sh $(PYTHON) $(VENV) dev
	@touch $(STAMP) $(DEMO_STAMP)

# the demo's own: the gRPC and httpx extras and the demo group (uvicorn, starlette, rich)
$(DEMO_STAMP): pyproject.toml scripts/venv.sh
	scripts/venv.sh $(PYTHON) $(VENV) demo
	@touch $(DEMO_STAMP)

# The storefront: order service (ASGI) -> payment (gRPC) + inventory (HTTP) under injected
# faults, run without and then with the policies (16 s each); prints a side-by-side summary.
demo: $(DEMO_STAMP)
	$(BIN)/python -m examples.storefront

demo-short: $(DEMO_STAMP)
	$(BIN)/python -m examples.storefront --short

# The basics: decorators and a pipeline against a flaky function (about a second).
demo-basics: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py

# The policy simulator on a checked-in scenario (virtual time; writes simulate.png).
simulate: $(STAMP)
	$(BIN)/python -m resilience simulate examples/scenarios/payment-faults.toml --every 5 --plot simulate.png

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y chromium chromium-driver

$(INITDB):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y postgresql

$(WRK):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y wrk

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/twins.py --check

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(CHROMIUM) $(INITDB)
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

test: lint types unit

# Skips the tests marked slow (storefront and multi-process runs); CI runs `make test`, i.e. all.
test-fast: $(STAMP) $(CHROMIUM) $(INITDB)
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

bench-outbox: $(STAMP)
	$(BIN)/python -m benchmarks.bench_outbox --json benchmarks/results/outbox.json

bench-throttle: $(STAMP)
	$(BIN)/python -m benchmarks.bench_throttle --instr --json benchmarks/results/throttle.json

bench-chaos: $(STAMP)
	$(BIN)/python -m benchmarks.bench_chaos --json benchmarks/results/chaos.json

bench-hotkeys: $(STAMP)
	$(BIN)/python -m benchmarks.bench_hotkeys --json benchmarks/results/hotkeys.json

bench-all: $(STAMP)  # one after the other, even under make -j: runs must not overlap
	$(MAKE) bench
	$(MAKE) bench-grpc
	$(MAKE) bench-redis
	$(MAKE) bench-stall
	$(MAKE) bench-idempotency
	$(MAKE) bench-hedge
	$(MAKE) bench-lock
	$(MAKE) bench-outbox
	$(MAKE) bench-chaos
	$(MAKE) bench-hotkeys
	$(MAKE) bench-docs

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache artifacts
