"""The one CXL port tree: what it derives, and that validation, region rules, guest set-up and
the QEMU argv all read their ports from it."""

import pytest
from test_guest_setup import CUSTOM  # two bridges, a cascaded switch

from harness.guest.setup import memdev_pci_key
from harness.qemu.argv import machine_argv
from harness.topology import load, parse, preset_names
from harness.topology.cxltree import CxlTree, Hop, TreeLoop
from harness.topology.model import Cxl, HostBridge, Port, Switch, Type3
from harness.topology.regions import device_path
from harness.units import Size


def test_ports_paths_and_pci_positions():
    t = parse(CUSTOM, "custom.yaml")
    tree = CxlTree(t.cxl)
    assert tree.host_bridge("e2") == "hb0" and tree.host_bridge("rpc") == "hb1"
    assert tree.host_bridge("nowhere") is None
    assert tree.path("b") == [Hop("hb0", "rpb"), Hop("us0", "d1"), Hop("us1", "e2")]
    assert tree.pci_path("b") == (0x0C, ["01.0", "00.0", "01.0", "00.0", "02.0", "00.0"])
    assert [p.slot for p in tree.ports.values()] == list(range(len(tree.ports)))  # unique across all ports
    assert (tree.ports["e2"].index, tree.ports["e2"].number, tree.ports["e2"].switch) == (2, 2, True)
    assert tree.bus_need("hb0") == 1 + 2 + (1 + 2) + (1 + 3)  # own bus, root ports, two switches


def _loop() -> Cxl:
    """us0 and us1 plugged into each other's downstream ports, a device below them (unvalidated)."""
    return Cxl(host_bridges=[HostBridge(id="hb0", bus_nr=12, root_ports=[Port(id="rp0")])],
               switches=[Switch(id="us0", upstream="b0", downstream_ports=[Port(id="a0")]),
                         Switch(id="us1", upstream="a0", downstream_ports=[Port(id="b0")])],
               devices=[Type3(id="m", port="b0", volatile=Size(1 << 28))])


def test_loops_are_found_not_followed():
    tree = CxlTree(_loop())
    assert tree.switch_loop("us0") == ["us0", "us1", "us0"]
    assert tree.host_bridge("a0") is None and tree.under_host_bridges() == {"rp0": "hb0"}
    with pytest.raises(TreeLoop, match="loop"):
        tree.path("m")
    with pytest.raises(TreeLoop):
        tree.pci_path("m")


def test_empty_without_cxl():
    assert CxlTree(None).ports == {} and CxlTree(None).under_host_bridges() == {}


CXL_PRESETS = [p for p in preset_names() if load(p).topology.cxl]


@pytest.mark.parametrize("preset", CXL_PRESETS)
def test_argv_regions_and_guest_setup_agree_with_the_tree(preset):
    t = load(preset).topology
    assert t.cxl
    tree = CxlTree(t.cxl)
    argv = machine_argv(t, accel="tcg")
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    for port in tree.ports.values():
        kind = "cxl-downstream" if port.switch else "cxl-rp"
        assert f"{kind},port={port.number},bus={port.parent},id={port.id},chassis=0,slot={port.slot}" in devices
    for d in t.cxl.devices:
        assert device_path(t, d.id) == tree.path(d.id)
        assert tree.path(d.id)[-1].dport == d.port
        bus, hops = tree.pci_path(d.id)
        assert memdev_pci_key(t, d.id) == f"{bus:02x}/" + "/".join(hops)


def test_a_port_number_given_is_kept_and_the_slot_still_counts():
    cxl = Cxl(host_bridges=[HostBridge(id="hb0", bus_nr=12, root_ports=[Port(id="rp0", port=5), Port(id="rp1")])])
    tree = CxlTree(cxl)
    assert [(p.number, p.index, p.slot) for p in tree.ports.values()] == [(5, 0, 0), (1, 1, 1)]
