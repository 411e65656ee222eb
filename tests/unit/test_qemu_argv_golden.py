"""Golden files: the generated argv of every preset, reviewed by hand.

Each tests/golden/<preset>.args holds one option per line. They were checked
against QEMU's docs/system/devices/cxl.rst (pxb-cxl/cxl-rp/cxl-upstream/
cxl-downstream/cxl-type3 forms, -M cxl-fmw.N.targets.M/size/
interleave-granularity) and the -numa section of qemu-options.hx (node,
dist, hmat-lb, hmat-cache); tests/golden/REVIEW.md records what was checked.
Regenerate after an intended change with UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.qemu.argv import machine_argv
from harness.topology import load, preset_names

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def render(argv: list[str]) -> str:
    lines, i = [], 0
    while i < len(argv):
        if argv[i].startswith("-") and i + 1 < len(argv):
            lines.append(f"{argv[i]} {argv[i + 1]}")
            i += 2
        else:
            lines.append(argv[i])
            i += 1
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("preset", preset_names())
def test_generated_argv_matches_golden(preset):
    got = render(machine_argv(load(preset).topology, accel="tcg"))
    f = GOLDEN / f"{preset}.args"
    if os.environ.get("UPDATE_GOLDEN"):
        f.write_text(got)
    assert f.is_file(), f"no golden file {f}; run with UPDATE_GOLDEN=1 and review it"
    assert got == f.read_text()


def test_every_golden_file_has_a_preset():
    assert sorted(p.stem for p in GOLDEN.glob("*.args")) == preset_names()


def test_generation_is_deterministic():
    for preset in preset_names():
        t = load(preset).topology
        assert machine_argv(t, accel="tcg") == machine_argv(t, accel="tcg")


def test_kvm_keeps_hypervisor_bit():
    t = load("numa-basic").topology
    argv = machine_argv(t, accel="kvm")
    assert argv[argv.index("-cpu") + 1] == "max"
    assert argv[argv.index("-accel") + 1] == "kvm"
    tcg = machine_argv(t, accel="tcg")
    assert tcg[tcg.index("-cpu") + 1] == "max,-hypervisor"


def test_argv_is_a_list_of_plain_strings():
    for preset in preset_names():
        argv = machine_argv(load(preset).topology)
        assert all(isinstance(a, str) and a and "\n" not in a for a in argv)
