"""Forms the validator now accepts really commit in the guest, and a 4-vCPU machine boots reliably.

* a 3-way interleave over three host bridges (cxl-interleave-3way): the
  region commits with interleave_ways 3 and onlines as a 768 MiB node;
* a switch with port/serial numbers and its mailbox CCI, with an LSA on a
  volatile device (cxl-switch-cci): the guest enumerates the switch CCI and
  the region on the LSA-carrying device commits;
* file-backed persistent memory (cxl-pmem-file) boots and its pmem region commits;
  booted twice on the same files, the second boot finds the first boot's namespace
  in the label area and the marker the first boot wrote through its devdax device;
* the same for interleaved persistent regions (cxl-pmem-interleave: 2 ways across a switch;
  pmem-4way-two-switches: 4 ways across two host bridges, a switch under each), whose devices
  the topology gives no serial;
* the two-switch 4-vCPU topology boots five times in a row on a small host
  (TCG single-threaded when vCPUs outnumber cores), wall time printed.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from harness.boot import Machine, boot
from harness.guest.expect import mismatches
from harness.guest.workloads import PROGRAMS_DIR
from harness.stats import snapshot

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]

TWO_SWITCH = Path(__file__).parent / "topologies" / "two-switch-4cpu.yaml"
FOUR_WAY_PMEM = Path(__file__).parent / "topologies" / "pmem-4way-two-switches.yaml"


def region_facts(vm: Machine, name: str) -> dict[str, str]:
    out = vm.run(f"cd /sys/bus/cxl/devices/{name} && for f in commit interleave_ways interleave_granularity size; "
                 "do echo $f=$(cat $f); done", timeout=60, check=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def test_three_way_interleave_commits_and_onlines():
    with boot("cxl-interleave-3way", accel="tcg", baseline=False) as vm:
        t, res = vm.topology, vm.setup
        facts = region_facts(vm, res.regions[0].name)
        after = snapshot(vm, boot_log=False)
        vm.check_health()
    assert facts["commit"] == "1" and facts["interleave_ways"] == "3", facts
    assert int(facts["size"], 16) == 768 << 20
    assert res.regions[0].node is not None
    assert t.expect is not None and mismatches(t.expect, after) == []


def test_switch_with_mailbox_cci_and_volatile_lsa():
    with boot("cxl-switch-cci", accel="tcg", baseline=False) as vm:
        res = vm.setup
        facts = region_facts(vm, res.regions[0].name)
        # The CCI is PCI function 1 beside the upstream port: class 0x0c0b (CXL switch CCI),
        # vendor 0x19e5 device 0xa123 in QEMU; read the functions under the root port's bus.
        pci = vm.run("for d in /sys/bus/pci/devices/*; do echo $(basename $d) $(cat $d/class) $(cat $d/vendor):$(cat $d/device); done",
                     timeout=60, check=True).stdout
        lsa = vm.run(f"cat /sys/bus/cxl/devices/{res.memdevs['mem0']}/label_storage_size", timeout=60).stdout.strip()
        vm.check_health()
    assert facts["commit"] == "1"
    functions = [ln.split() for ln in pci.splitlines()]
    ccis = [f for f in functions if f[0].endswith(".1") and f[1].startswith("0x0c0b")]
    assert len(ccis) == 1, pci
    upstream = ccis[0][0][:-1] + "0"
    assert any(f[0] == upstream for f in functions), "the CCI is not beside the upstream port"
    assert lsa == str(1 << 20), f"label_storage_size {lsa!r}"


def test_file_backed_pmem_boots_and_commits():
    with boot("cxl-pmem-file", accel="tcg", baseline=False) as vm:
        p, res = vm.prepared, vm.setup
        facts = region_facts(vm, res.regions[0].name)
        vm.check_health()
    assert facts["commit"] == "1"
    files = [a.split("mem-path=", 1)[1].replace(",,", ",") for a in p.spec.machine_argv if "mem-path=" in a]
    assert files and all(Path(f).is_file() for f in files), files


def daxmark(vm: Machine, dax: str, *args: str) -> dict:
    r = vm.run(f"{PROGRAMS_DIR}/daxmark --dev /dev/{dax} " + " ".join(args), timeout=60, check=True)
    return json.loads(r.stdout)


def boot_twice_reading_back(topology: str | Path) -> None:
    """Boot 1 creates the region and a devdax namespace (labels written to the LSA files) and
    writes a marker through /dev/daxN.M; boot 2, on the same files, creates the region again,
    finds that namespace in the labels instead of failing to create one, and reads the marker."""
    marker = f"numa-harness boot 1 {time.time_ns()}"
    seen = []
    for n in (1, 2):
        with boot(topology, accel="tcg", baseline=False) as vm:
            reg = vm.setup.regions[0]
            assert reg.dax, reg
            if n == 1:
                before = daxmark(vm, reg.dax, "--read", "64")
                wrote = daxmark(vm, reg.dax, "--write", shlex.quote(marker))
            got = daxmark(vm, reg.dax, "--read", "64")
            uuid = vm.run(f"cat /sys/bus/nd/devices/*/{reg.namespace}/uuid", timeout=60, check=True).stdout.strip()
            vm.check_health()
        seen.append((reg, uuid, got))
    (first, uuid1, got1), (second, uuid2, got2) = seen
    assert before["ok"] and before["text"] == "", f"fresh media: {before}"
    assert wrote["ok"] and got1["text"] == marker
    assert first.labels == "created" and second.labels == "reused", (first, second)
    assert second.namespace == first.namespace and uuid2 == uuid1, "the same namespace (label uuid) came back"
    assert got2["ok"] and got2["text"] == marker, f"boot 2 read {got2}"
    assert len(second.memdevs) == len(first.memdevs) == len(vm.topology.guest.regions[0].devices)


def test_file_backed_pmem_second_boot_reuses_the_namespace_and_its_data(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMA_HARNESS_DATA", str(tmp_path / "data"))
    boot_twice_reading_back("cxl-pmem-file")


@pytest.mark.parametrize("topology", ["cxl-pmem-interleave", FOUR_WAY_PMEM], ids=["2way-switch", "4way-two-switches"])
def test_interleaved_pmem_second_boot_reuses_the_namespace_and_its_data(topology, tmp_path, monkeypatch):
    """The same across an interleaved region whose devices the topology gives no serial (the
    harness derives them): 2 ways across a switch, and 4 ways across two host bridges' switches."""
    monkeypatch.setenv("NUMA_HARNESS_DATA", str(tmp_path / "data"))
    boot_twice_reading_back(topology)


@pytest.mark.slow
def test_two_switch_four_vcpus_boots_five_times():
    times = []
    for i in range(5):
        t0 = time.monotonic()
        with boot(TWO_SWITCH, accel="tcg", baseline=False) as vm:
            p, t, res = vm.prepared, vm.topology, vm.setup
            after = snapshot(vm, boot_log=False)
            vm.check_health()
        times.append(time.monotonic() - t0)
        print(f"boot {i + 1}: {times[-1]:.1f} s wall (boot, 4-way region set-up, shutdown); "
              f"TCG threads: {p.tcg_thread.mode if p.tcg_thread else '-'}")
        assert res.regions[0].node is not None
        assert t.expect is not None and mismatches(t.expect, after) == []
    print(f"5 boots: min {min(times):.1f} s, max {max(times):.1f} s, total {sum(times):.1f} s")
