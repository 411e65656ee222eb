"""Persistent CXL regions across boots, host side: device serials, the interleave-set cookie, the
label-area parser (on label areas a 6.12 guest wrote) and the one-line refusal before boot."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import pytest

from harness.boot.prepare import check_pmem_labels
from harness.errors import PmemLabelError, TopologyError
from harness.qemu.argv import device_files, machine_argv
from harness.topology import load, parse
from harness.topology.labels import (
    DEFAULT_SERIAL_BASE,
    LabelArea,
    default_serial,
    device_serial,
    fletcher64,
    interleave_set_cookie,
    parse_label_area,
    region_cookie,
    region_label_problem,
)

DATA = Path(__file__).parent / "data" / "pmem-labels"
TWO_SWITCH = Path(__file__).parents[1] / "live" / "topologies" / "pmem-4way-two-switches.yaml"


def lsa(name: str) -> bytes:
    return gzip.decompress((DATA / f"{name}-lsa.raw.gz").read_bytes())


def two_way(serials: tuple[int | None, int | None] = (11, 12), order: tuple[str, str] = ("pmem0", "pmem1")):
    """cxl-pmem-interleave with the given serials and region order."""
    t = load("cxl-pmem-interleave").topology
    assert t.cxl
    devs = [dataclasses.replace(d, serial=s) for d, s in zip(t.cxl.devices, serials, strict=True)]
    region = dataclasses.replace(t.guest.regions[0], devices=list(order))
    return dataclasses.replace(t, cxl=dataclasses.replace(t.cxl, devices=devs),
                               guest=dataclasses.replace(t.guest, regions=[region]))


def test_fletcher64_is_the_kernels():
    # nd_fletcher64 over u32 words: lo = running sum mod 2^32, hi = sum of the running sums.
    assert fletcher64(bytes(16)) == 0
    assert fletcher64((1).to_bytes(4, "little") + (2).to_bytes(4, "little")) == (1 + 3) << 32 | 3
    assert fletcher64(b"\xff\xff\xff\xff" * 2) == 0xFFFFFFFD_FFFFFFFE, "hi wraps at 64 bits after the shift"


def test_cookie_of_serials_at_dpa_0():
    # The label areas below were written by a region of serials 11 and 12 at DPA 0.
    assert interleave_set_cookie([(0, 11), (0, 12)]) == 0x5A00000017
    assert interleave_set_cookie([(0, 0), (0, 0)]) == 0, "QEMU's default serials make the cookie the kernel refuses"


def test_label_areas_written_by_the_guest_parse():
    a, b = parse_label_area(lsa("2way-serial11-pos0")), parse_label_area(lsa("2way-serial12-pos1"))
    assert a.initialised and b.initialised
    (la,), (lb,) = a.labels, b.labels
    assert la.uuid == lb.uuid == "76bef170-45f5-4e81-ab70-e07cc2d847ec"
    assert (la.position, lb.position) == (0, 1) and la.nlabel == lb.nlabel == 2
    assert la.isetcookie == lb.isetcookie == 0x5A00000017
    assert la.rawsize == 256 << 20 and la.dpa == 0
    # The older index block still lists slot 0 (the label written while updating); the newer lists slot 1.
    assert la.slot == 1


def test_empty_and_damaged_label_areas():
    assert parse_label_area(bytes(1 << 20)) == LabelArea(initialised=False)
    data = bytearray(lsa("2way-serial11-pos0"))
    data[0x700 + 10] ^= 0xFF            # the active label's checksum no longer matches
    assert parse_label_area(bytes(data)).labels == ()
    data = bytearray(lsa("2way-serial11-pos0"))
    data[5] ^= 0xFF                       # index block 0 damaged: block 1 (older, slot 0, UPDATING) is used
    labels = parse_label_area(bytes(data)).labels
    assert [lb.slot for lb in labels] == [0] and labels[0].flags & 0x8


def test_default_serials_are_stable_distinct_and_only_for_persistent_devices():
    t = load("cxl-pmem-interleave").topology
    assert t.cxl
    serials = [device_serial(d) for d in t.cxl.devices]
    assert serials == [default_serial("pmem0"), default_serial("pmem1")]
    assert len(set(serials)) == 2 and all(s and s >> 48 == DEFAULT_SERIAL_BASE >> 48 for s in serials)
    argv = " ".join(machine_argv(t, accel="tcg"))
    assert f"id=pmem0,sn={serials[0]}" in argv
    vol = load("cxl-single").topology
    assert vol.cxl and device_serial(vol.cxl.devices[0]) is None, "a volatile device keeps QEMU's default"
    assert device_serial(load("cxl-pmem-file").topology.cxl.devices[0]) == 7, "a given serial is kept"


def test_serial_0_on_a_persistent_device_is_refused():
    text = (Path(__file__).parents[2] / "harness/topology/presets/cxl-pmem.yaml").read_text().replace("serial: 1", "serial: 0")
    with pytest.raises(TopologyError) as e:
        parse(text, "x.yaml")
    assert "cxl.devices[0].serial" in str(e.value) and "serial 0" in str(e.value)


def areas(*names: str) -> dict[str, LabelArea]:
    return {f"pmem{i}": parse_label_area(lsa(n)) for i, n in enumerate(names)}


def test_labels_that_match_the_topology_are_honoured():
    t = two_way()
    assert region_cookie(t, t.guest.regions[0]) == 0x5A00000017
    assert region_label_problem(t, t.guest.regions[0], 0, areas("2way-serial11-pos0", "2way-serial12-pos1")) is None
    assert region_label_problem(t, t.guest.regions[0], 0, {}) is None, "no files yet: nothing to honour"
    empty = {"pmem0": LabelArea(initialised=False), "pmem1": LabelArea(initialised=False)}
    assert region_label_problem(t, t.guest.regions[0], 0, empty) is None


@pytest.mark.parametrize("topo, files, words", [
    (two_way(order=("pmem1", "pmem0")), ("2way-serial11-pos0", "2way-serial12-pos1"),
     ["pmem1 holds position 1", "list the devices as [pmem0, pmem1]"]),
    (two_way(serials=(11, 13)), ("2way-serial11-pos0", "2way-serial12-pos1"), ["cookie 0x5a00000017", "a serial"]),
    (two_way(serials=(None, None)), ("2way-noserial-pos0", "2way-noserial-pos1"), ["cookie 0", "serial 0"]),
])
def test_labels_that_cannot_be_honoured_say_why_in_one_line(topo, files, words):
    problem = region_label_problem(topo, topo.guest.regions[0], 0, areas(*files))
    assert problem and "\n" not in problem and problem.startswith("guest.regions[0]: "), problem
    assert all(w in problem for w in words), problem


def test_half_labelled_or_mixed_namespaces_are_refused():
    t = two_way()
    half = {"pmem0": parse_label_area(lsa("2way-serial11-pos0")), "pmem1": LabelArea(initialised=False)}
    assert "pmem1 holds no namespace label" in (region_label_problem(t, t.guest.regions[0], 0, half) or "")
    mixed = areas("2way-serial11-pos0", "2way-noserial-pos1")
    assert region_label_problem(t, t.guest.regions[0], 0, mixed)


def test_check_before_boot_reads_the_files_and_leaves_them(tmp_path):
    t = two_way(serials=(None, None))
    assert t.cxl
    for d, name in zip(t.cxl.devices, ("2way-noserial-pos0", "2way-noserial-pos1"), strict=True):
        f = Path(device_files(d, str(tmp_path))["lsa"])
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(lsa(name))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.raw")}
    with pytest.raises(PmemLabelError) as e:
        check_pmem_labels(t, tmp_path)
    assert "cannot be honoured" in e.value.message and "pmem0-lsa.raw" in e.value.message
    assert "\n" not in str(e.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.raw")} == before, "the files were only read"
    check_pmem_labels(two_way(), tmp_path / "elsewhere")   # no files: a first boot


def test_four_way_two_switch_topology_validates_and_gets_serials():
    t = load(TWO_SWITCH).topology
    assert t.cxl and len({device_serial(d) for d in t.cxl.devices}) == 4
    assert region_label_problem(t, t.guest.regions[0], 0, {}) is None
