# numa-harness. Every target installs what it needs first (host packages via
# scripts/install-host-deps, Python packages into .venv).
#
#   make boot  [TOPO=cxl-single] [KERNEL=path/to/bzImage|build-tree] [MODULES=dir] [ACCEL=tcg]
#   make test                      unit, QEMU and live-VM tests; then guest-tests on each MATRIX_KERNELS
#   make bench                     benchmarks: boot vs floor, restore, round trip, CLI start, pytest -n 1/-n 2
#   make up / make ssh / make down [NAME=default]   a VM kept in the background
#   make kernel KSRC=path/to/linux [FRAGMENTS="numa cxl"] [JOBS=n]   build a kernel for the harness

PYTHON  ?= python3
VENV    ?= .venv
TOPO    ?= cxl-single
KERNEL  ?=
MODULES ?=
ACCEL   ?=
NAME    ?= default
BENCH_TOPO ?= numa-basic
PYTEST_ARGS ?=
# Kernels the stock suite (guest-tests) runs on too in `make test`, after everything has run on the
# default kernel; each fetched and cached on first use. MATRIX_KERNELS= runs the default kernel only.
MATRIX_KERNELS ?= debian:7.2
KSRC    ?=
FRAGMENTS ?= numa cxl
JOBS    ?=

H     := $(VENV)/bin/harness
KOPTS := $(if $(KERNEL),--kernel $(KERNEL)) $(if $(MODULES),--modules $(MODULES)) $(if $(ACCEL),--accel $(ACCEL))

.PHONY: setup host-deps boot run up ssh down status test unit lint bench clean kernel

setup: host-deps $(VENV)/.installed

host-deps:
	@scripts/install-host-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

boot: setup
	$(H) boot $(TOPO) $(KOPTS)

up: setup
	$(H) up $(TOPO) --name $(NAME) $(KOPTS)

ssh: setup
	$(H) ssh $(NAME)

down: setup
	$(H) down $(NAME)

status: setup
	$(H) status

# Lint and type checks first: CI fails in seconds on them, before any VM boots.
lint: setup
	$(VENV)/bin/ruff check harness tests scripts guest-tests
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python scripts/kernel_matrix.py $(foreach k,$(MATRIX_KERNELS),--kernel $(k)) -- $(PYTEST_ARGS)

unit: lint
	$(VENV)/bin/pytest -m 'not live' $(PYTEST_ARGS)

# Out-of-tree build in the harness cache; boot the result with KERNEL=<printed build dir>.
kernel: setup
	@test -n "$(KSRC)" || { echo "usage: make kernel KSRC=path/to/linux [FRAGMENTS=\"numa cxl\"] [JOBS=n]" >&2; exit 2; }
	$(H) kernel build --src $(KSRC) $(foreach f,$(FRAGMENTS),--fragment $(f)) $(if $(JOBS),-j $(JOBS))

bench: setup
	$(VENV)/bin/python scripts/bench.py --topology $(BENCH_TOPO) $(KOPTS)

clean:
	rm -rf $(VENV) .pytest_cache build dist
