"""The private/managed memory node contract, promise by promise, with its negative controls.

The checks live in the package (:mod:`harness.contract`: pure verdicts, one guest run per
topology), so a kernel developer's own repository runs the same ones with
``run_contract(vm, vm.topology)``; this file turns each verdict into a pytest outcome:

* on a private/managed node (the ``private-node`` preset on a kernel with the series) each
  promise passes or fails; on a kernel without the series every one skips, naming the masks
  it looked for;
* on the negative controls, an ordinary memory-only node (``memory-only``) and a node whose
  memory came through ``memmap=`` pmem, devdax and kmem (``memmap-kmem``), every isolation
  promise must be broken: an expected failure with the measured numbers. A control that does
  not leak fails its test, because the check could not have caught a leak. The opt-in side of
  each promise (mbind, move_pages, migrate_pages, kswapd/kcompactd, demotion) must hold there.

The guest work runs once per topology (the first test of it), about 40 s under TCG.

On a kernel carrying the series (``--kernel-tree`` of a build with ``CONFIG_CRAM=y``) the private
nodes made through the series' own API run too (:data:`SERIES_CASES`: ``private-mempolicy``,
``private-none``, ``private-cram``); on any other kernel one test skips, saying how to build one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.contract import PROMISES
from harness.contract.run import DEFAULT_CASES as CASES
from harness.contract.run import SERIES_CASES, run_contract
from harness.kernel.build import SERIES_BUILD_HINT, is_series_build

_RESULTS: dict[str, list] = {}


def _series_kernel(config: pytest.Config) -> bool:
    tree = config.getoption("nh_kernel_tree", None)
    return bool(tree) and is_series_build(Path(tree).expanduser().resolve())


#: Topologies where the contract's hog has nowhere to fall back to (a private node without any
#: opt-in and no other memory node): the OOM killer ends it, by design, during the pressure step.
HOG_OOM = {"private-none"}


def _params(series: bool):
    for topo, roles in CASES + (SERIES_CASES if series else []):
        marks = [pytest.mark.topology(topo)]
        if topo in HOG_OOM:
            marks.append(pytest.mark.expect_kernel_problem("oom", strict=False))
        for role in roles:
            for promise in PROMISES:
                yield pytest.param(topo, role, promise, marks=marks, id=f"{topo}-{role}-{promise}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.name == "test_contract":
        metafunc.parametrize("topo,role,promise", list(_params(_series_kernel(metafunc.config))))


def test_the_series_cases_need_a_series_kernel(request):
    if not _series_kernel(request.config):
        pytest.skip(f"the private nodes made through the series' API ({', '.join(t for t, _ in SERIES_CASES)}) need "
                    f"a kernel with the series, booted with --kernel-tree: {SERIES_BUILD_HINT}")


def test_contract(vm, topo, role, promise, record_property):
    if topo not in _RESULTS:
        roles = dict(CASES + SERIES_CASES)[topo]
        _RESULTS[topo] = run_contract(vm, vm.topology, roles=roles)
    found = [v for v in _RESULTS[topo] if v.role == role and v.promise == promise]
    assert found, f"no {role} verdict for {promise} on {topo}"
    for v in found:
        record_property(f"measured_{promise}_{role}", v.observed)
    lines = [f"{v.target}: {v.observed}" for v in found]
    outcomes = {v.outcome for v in found}
    if outcomes & {"fail", "xpass"}:
        pytest.fail("; ".join(f"[{v.outcome}] {v.target}: {v.observed}" for v in found
                              if v.outcome in ("fail", "xpass")), pytrace=False)
    if "xfail" in outcomes:
        pytest.xfail("; ".join(lines))
    if outcomes == {"skip"}:
        pytest.skip("; ".join(lines))
