# numa-harness. Every target installs what it needs first (host packages via
# scripts/install-host-deps, Python packages into .venv).
#
#   make boot  [TOPO=cxl-single] [KERNEL=path/to/bzImage|build-tree|debian:X.Y] [MODULES=dir] [ACCEL=tcg]
#   make test  [KERNEL=...] [MODULES=...] [ACCEL=...] [TOPO=name]   unit, QEMU and live-VM tests; then
#                                  guest-tests on each MATRIX_KERNELS (TOPO= runs only that topology's tests)
#   make unit  [KERNEL=...] [ACCEL=...]   everything but the live tests
#   make bench [TOPO=numa-basic] [KERNEL=...] [MODULES=...] [ACCEL=...]   benchmarks: boot vs floor, restore, round trip, CLI start,
#                                  pytest -n 1/-n 2
#   make up / make ssh / make down [NAME=default] [TOPO=...] [KERNEL=...]   a VM kept in the background
#   make kernel KSRC=path/to/linux [FRAGMENTS="numa cxl"] [JOBS=n]   build a kernel for the harness
#   make nightly [NIGHTLY_OUT=nightly-out]   the nightly matrix's local subset under TCG: JUnit, HTML, bundles
#
# KERNEL, MODULES and ACCEL reach pytest (and every boot the tests make) as $NUMA_HARNESS_KERNEL,
# $NUMA_HARNESS_MODULES and $NUMA_HARNESS_ACCEL; the CLI targets pass them as options.

PYTHON  ?= python3
VENV    ?= .venv
TOPO    ?=
KERNEL  ?=
MODULES ?=
ACCEL   ?=
NAME    ?= default
# the topology `make bench` measures when TOPO= is not given
BENCH_TOPO ?= numa-basic
PYTEST_ARGS ?=
# Kernels the stock suite (guest-tests) runs on too in `make test`, after everything has run on the
# first kernel (KERNEL=, else the default); each fetched and cached on first use. MATRIX_KERNELS= runs
# the first kernel only, and so does a KERNEL= of your own unless MATRIX_KERNELS is given.
MATRIX_KERNELS ?= $(if $(KERNEL),,debian:7.2)
KSRC    ?=
FRAGMENTS ?= numa cxl
JOBS    ?=
NIGHTLY_OUT ?= nightly-out

H     := $(VENV)/bin/harness
KOPTS  = $(if $(KERNEL),--kernel $(KERNEL)) $(if $(MODULES),--modules $(MODULES)) $(if $(ACCEL),--accel $(ACCEL))
# the same choices for pytest and everything it starts
KENV   = $(if $(KERNEL),NUMA_HARNESS_KERNEL=$(KERNEL)) $(if $(MODULES),NUMA_HARNESS_MODULES=$(MODULES)) \
         $(if $(ACCEL),NUMA_HARNESS_ACCEL=$(ACCEL))
BOOT_TOPO = $(or $(TOPO),cxl-single)

.PHONY: setup host-deps boot run up ssh down status test unit lint bench clean kernel nightly

setup: host-deps $(VENV)/.installed

host-deps:
	@scripts/install-host-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,report]' --group dev
	touch $@

boot: setup
	$(H) boot $(BOOT_TOPO) $(KOPTS)

up: setup
	$(H) up $(BOOT_TOPO) --name $(NAME) $(KOPTS)

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
	$(KENV) $(VENV)/bin/python scripts/kernel_matrix.py $(foreach k,$(MATRIX_KERNELS),--kernel $(k)) -- \
		$(if $(TOPO),--nh-topology $(TOPO)) $(PYTEST_ARGS)

unit: lint
	$(KENV) $(VENV)/bin/pytest -m 'not live' $(PYTEST_ARGS)

# Out-of-tree build in the harness cache; boot the result with KERNEL=<printed build dir>.
kernel: setup
	@test -n "$(KSRC)" || { echo "usage: make kernel KSRC=path/to/linux [FRAGMENTS=\"numa cxl\"] [JOBS=n]" >&2; exit 2; }
	$(H) kernel build --src $(KSRC) $(foreach f,$(FRAGMENTS),--fragment $(f)) $(if $(JOBS),-j $(JOBS))

# The matrix (harness/ci/matrix.yaml) as the nightly workflow runs it, reduced to its `local` cells,
# under TCG; a cell whose kernel is not here is skipped, saying why. PYTEST_ARGS go to every cell.
nightly: setup
	$(H) nightly --local --out $(NIGHTLY_OUT) -- $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python scripts/bench.py --topology $(or $(TOPO),$(BENCH_TOPO)) $(KOPTS)

clean:
	rm -rf $(VENV) .pytest_cache build dist $(NIGHTLY_OUT)
