"""``guest.provision``: validation, the memmap= reservation, the guest plan and the parser of the
provision program's lines (recorded from a live memmap-kmem boot)."""

from __future__ import annotations

import copy

import pytest
import yaml

from harness.errors import TopologyError
from harness.guest.setup import GuestSetupError, features_mask, parse_provision_output, provision_plan
from harness.qemu.argv import kernel_cmdline
from harness.topology import load, parse
from harness.topology.provision import kernel_params, node_start, online_bytes

BASE = {
    "description": "t",
    "machine": {"smp": 2},
    "nodes": [{"id": 0, "cpus": "0-1", "memory": "1G"}, {"id": 1, "memory": "512M"}],
    "guest": {"provision": [{"node": 1, "via": "memmap-kmem"}]},
}
CXL = {"host_bridges": [{"id": "hb0", "bus_nr": 12, "root_ports": [{"id": "rp0"}]}],
       "devices": [{"id": "mem0", "port": "rp0", "volatile": "256M"}],
       "windows": [{"targets": ["hb0"], "size": "4G"}]}


def topo(**changes):
    doc = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key == "provision":
            doc["guest"]["provision"] = value
        else:
            doc[key] = value
    return parse(yaml.safe_dump(doc), "t.yaml")


def test_preset_reserves_the_whole_node_and_kmem_onlines_its_inner_blocks():
    t = load("memmap-kmem").topology
    assert node_start(t, 1) == 1 << 30
    assert kernel_params(t) == ["memmap=512M!1024M"]
    assert "memmap=512M!1024M" in kernel_cmdline(t)
    # seen live: 256 MiB online of the 512 MiB range (metadata at the start, firmware tables at the top)
    assert online_bytes(t, t.guest.provision[0]) == 256 << 20
    assert provision_plan(t) == "# numa-harness provision plan\nmemmap-kmem 1 1073741824 536870912 normal\n"


def test_a_middle_node_loses_only_the_first_block():
    t = topo(nodes=[{"id": 0, "cpus": "0-1", "memory": "1G"}, {"id": 1, "memory": "512M"},
                    {"id": 2, "memory": "256M"}])
    assert online_bytes(t, t.guest.provision[0]) == 384 << 20


@pytest.mark.parametrize("provision,path,words", [
    ([{"node": 5, "via": "memmap-kmem"}], "guest.provision[0].node", "does not exist"),
    ([{"node": 0, "via": "memmap-kmem"}], "guest.provision[0].node", "has CPUs"),
    ([{"node": 1, "via": "memmap-kmem", "size": "100M"}], "guest.provision[0].size", "multiple of 128M"),
    ([{"node": 1, "via": "memmap-kmem", "size": "1G"}], "guest.provision[0].size", "at most"),
    ([{"node": 1, "via": "memmap-kmem", "features": ["reclaim"]}], "guest.provision[0].features", "ordinary node"),
    ([{"node": 1, "via": "memmap-kmem"}, {"node": 1, "via": "memmap-kmem"}], "guest.provision[1].node", "already"),
    ([{"node": 1, "via": "dax_test", "features": ["nonsense"]}], "guest.provision[0].features[0]", "unknown service"),
    ([{"node": 1, "via": "dax_test"}], "requires", "private-node kernel series"),
    ([{"node": 1, "via": "cxl-mempolicy"}], "guest.provision[0].device", "needs a cxl.devices id"),
    ([{"node": 1, "via": "private-module"}], "requires", "private-node kernel series"),
    ([{"node": 0, "via": "private-module"}], "guest.provision[0].node", "has CPUs"),
    ([{"node": 1, "via": "memmap-kmem", "cram": True}], "guest.provision[0].cram", "private-module option"),
])
def test_bad_provision_names_the_path(provision, path, words):
    with pytest.raises(TopologyError) as e:
        topo(provision=provision)
    assert path in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("provision, path, words", [
    ({"features": ["ksm"]}, "guest.provision[0].features[0]", "not a node_private_ops flag"),
    ({"features": ["mempolicy"]}, "guest.provision[0].features", "mempolicy needs migration"),
    ({"features": ["numa_balancing"]}, "guest.provision[0].features", "numa_balancing needs migration"),
    ({"features": ["compaction"]}, "guest.provision[0].features", "compaction needs migration"),
    ({"features": ["migration", "mempolicy", "protect_write"]}, "guest.provision[0].features", "exclude each other"),
    ({"cram": True, "features": ["migration"]}, "guest.provision[0].features", "CRAM's own opt-ins"),
])
def test_private_module_takes_the_series_ops_with_the_kernels_own_rules(provision, path, words):
    with pytest.raises(TopologyError) as e:
        topo(provision=[{"node": 1, "via": "private-module", **provision}], requires=["private-nodes"])
    assert path in str(e.value) and words in str(e.value)


def test_private_module_is_planned_with_its_np_ops_mask_and_the_module_file():
    from harness.contract.targets import _provisioned
    from harness.guest.setup import GUEST_PRIVATE_MODULE
    from harness.topology.provision import CRAM_FEATURES, np_ops_mask

    t = load("private-mempolicy").topology
    start, size = 1536 << 20, 512 << 20
    assert provision_plan(t).splitlines()[1] == f"private-module 2 {start} {size} 0x3 0 {GUEST_PRIVATE_MODULE}"
    assert kernel_params(t) == ["memmap=512M!1536M"]
    assert _provisioned(t, 2) == ("private-module, ops migration|mempolicy", ["migration", "mempolicy"], "movable")
    assert _provisioned(t, 1)[0] == "memory-only (SRAT)"   # the control beside it
    t = load("private-none").topology
    assert provision_plan(t).splitlines()[1].split()[4:6] == ["0x0", "0"]
    assert _provisioned(t, 1) == ("private-module, ops none", [], "movable")
    t = load("private-cram").topology
    assert provision_plan(t).splitlines()[1].split()[4:6] == ["0x0", "1"]
    assert _provisioned(t, 1)[1] == list(CRAM_FEATURES)
    # mm/cram.c's cram_ops.flags: MIGRATION|DEMOTION|NUMA_BALANCING|PROTECT_WRITE|RECLAIM = 0x3d
    assert np_ops_mask(list(CRAM_FEATURES)) == 0x3d


def test_a_small_last_node_would_online_nothing():
    with pytest.raises(TopologyError, match="online nothing"):
        topo(nodes=[{"id": 0, "cpus": "0-1", "memory": "1G"}, {"id": 1, "memory": "256M"}])


def test_series_paths_are_planned_with_their_masks_and_device_keys():
    t = topo(provision=[{"node": 1, "via": "dax_test", "features": ["migration", "demotion"]}],
             requires=["private-nodes"])
    assert provision_plan(t).splitlines()[1] == "dax_test 1 1073741824 536870912 0x5"
    assert features_mask(["mempolicy"]) == 0x2
    nodes = [{"id": 0, "cpus": "0-1", "memory": "1G"}, {"id": 1, "memory": "512M"}]
    t = topo(nodes=nodes, cxl=CXL, requires=["private-nodes"],
             provision=[{"node": 1, "via": "cxl-compression", "device": "mem0"}])
    assert provision_plan(t).splitlines()[1] == "cxl-driver 1 cxl_compression 0c/00.0/00.0"
    assert kernel_params(t) == []


RECORDED = """provisioned node=1 via=memmap-kmem status=ok bytes=268435456 dax=dax0.0
provisioned node=2 via=dax_test status=skipped reason=modprobe dax_test failed (the kernel lacks the private-node series' dax_test module): module dax_test not found
done provisioned=2
"""


def test_parse_provision_output():
    ok, skipped = parse_provision_output(RECORDED)
    assert (ok.node, ok.via, ok.ok, ok.bytes, ok.dax) == (1, "memmap-kmem", True, 256 << 20, "dax0.0")
    assert not skipped.ok and "dax_test module" in skipped.reason and skipped.dax is None


def test_parse_provision_output_without_done_fails():
    with pytest.raises(GuestSetupError, match="did not finish"):
        parse_provision_output(RECORDED.replace("done provisioned=2\n", ""))
