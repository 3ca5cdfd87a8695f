# The two commands a user needs: `make run` and `make test`.  Both install
# whatever is missing first (scripts/setup.sh, scripts/fetch_kernel.sh).
PY := .venv/bin/python
CONFIG ?= configs/ufs41.toml
PYTEST_ARGS ?=

.PHONY: setup kernel doctor run test unit lint docs-slow bench conformance clean

setup:
	@scripts/setup.sh

kernel: setup
	@scripts/fetch_kernel.sh
	@scripts/fetch_ublk_header.sh
	@scripts/fetch_fio.sh
	@scripts/build_zram_multi.sh >/dev/null

# Lists every external program and file the project and its tests use
# (scripts/dependencies.txt) with its version; fails naming what is missing.
doctor:
	@scripts/doctor.sh

run: setup
	.venv/bin/blockemu serve $(CONFIG)

lint: setup
	.venv/bin/ruff check blockemu plugins scripts tests
	.venv/bin/mypy
	.venv/bin/lint-imports

unit: setup
	$(PY) -m pytest -q tests/unit tests/property $(PYTEST_ARGS)

test: setup kernel doctor lint
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The docs' slow blocks too (VM runs, long experiments); make test runs the rest of
# every page (docs/testing.md, Docs that run).
docs-slow: setup kernel
	$(PY) -m pytest -q -ra -m docs_slow tests/docs $(PYTEST_ARGS)

# fio's whole zoned suite (t/zbd/test-zbd-support) on blockemu's ZNS model and
# on null_blk, for the installed and the newest fio, with and without zone
# limits (limits only for a fio that reads max_active_zones: 3.36 on), in one
# VM boot; prints the table docs/zns.md shows.  `make test`
# runs a subset (tests/kernel/test_zbd_vm.py).
conformance: kernel doctor
	$(PY) -m tests.kernel.zbd_suite $(CONFORMANCE_ARGS)

bench: setup
	$(PY) scripts/bench_nbd.py

clean:
	rm -rf .venv .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis
