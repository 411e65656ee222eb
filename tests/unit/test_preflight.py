"""Preflight logic on fabricated capabilities (parsing and checking are pure)."""

import pytest

from harness.errors import QemuError
from harness.qemu.argv import machine_argv
from harness.qemu.preflight import (
    Capabilities,
    argv_uses,
    check_argv,
    load_features,
    parse_props,
    parse_type_list,
    parse_version,
)
from harness.topology import load

DEVICE_HELP = '''Controller/Bridge/Hub devices:
name "pxb-cxl", bus PCI, desc "CXL Host Bridge"
name "cxl-rp", bus PCI, desc "CXL Root Port"
Storage devices:
name "cxl-type3", bus PCI, desc "CXL Memory Device (Type 3)"
'''
TYPE3_HELP_80 = '''cxl-type3 options:
  lsa=<link<memory-backend>>
  memdev=<link<memory-backend>>
  persistent-memdev=<link<memory-backend>>
  sn=<uint64>            -  (default: 18446744073709551615)
  volatile-memdev=<link<memory-backend>>
'''


def caps(version=(10, 0, 2), type3_props=None, devices=None, objects=("memory-backend-ram",)):
    devs = set(devices or parse_type_list(DEVICE_HELP))
    return Capabilities(binary="/usr/bin/qemu-system-x86_64", version=version, devices=devs, objects=set(objects),
                        device_props={"cxl-type3": parse_props(type3_props or TYPE3_HELP_80),
                                      "pxb-cxl": {"bus_nr", "numa_node"}, "cxl-rp": {"port", "chassis", "slot"}},
                        object_props={"memory-backend-ram": {"size", "share"}})


def test_parsers():
    assert parse_type_list(DEVICE_HELP) == {"pxb-cxl", "cxl-rp", "cxl-type3"}
    assert "volatile-memdev" in parse_props(TYPE3_HELP_80)
    assert parse_type_list("List of user creatable objects:\n  acpi-generic-port\n  memory-backend-ram\n") == {"acpi-generic-port", "memory-backend-ram"}
    assert parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)") == (10, 0, 2)


def test_cxl_single_passes_on_qemu_10():
    check_argv(machine_argv(load("cxl-single").topology), caps(), load_features())


def test_volatile_memory_on_qemu_7_2_names_feature_and_version():
    old = TYPE3_HELP_80.replace("  volatile-memdev=<link<memory-backend>>\n", "").replace("  persistent-memdev=<link<memory-backend>>\n", "")
    with pytest.raises(QemuError) as e:
        check_argv(machine_argv(load("cxl-single").topology), caps(version=(8, 0, 0), type3_props=old), load_features())
    assert "volatile CXL type-3 memory" in str(e.value)
    assert ">= 8.0" in str(e.value)


def test_too_old_qemu_is_refused_outright():
    with pytest.raises(QemuError) as e:
        check_argv(machine_argv(load("numa-basic").topology), caps(version=(7, 2, 0)), load_features())
    assert "7.2.0" in str(e.value) and "needs QEMU >= 8.0" in str(e.value)


def test_missing_device_type_names_feature():
    with pytest.raises(QemuError) as e:
        check_argv(machine_argv(load("cxl-switch").topology), caps(), load_features())
    assert "CXL switches" in str(e.value) and "cxl-upstream" in str(e.value)


def test_generic_port_needs_9_2():
    argv = ["-object", "acpi-generic-port,id=gp0,pci-bus=cxl.1,node=1"]
    with pytest.raises(QemuError) as e:
        check_argv(argv, caps(version=(9, 1, 0), objects=("acpi-generic-port",)), load_features())
    assert "generic ports" in str(e.value) and ">= 9.2" in str(e.value)


def test_argv_uses_reads_machine_props():
    uses = argv_uses(["-machine", "q35,cxl=on,hmat=on", "-M", "cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G"])
    assert ("machine", "q35", {"cxl", "hmat"}) in uses
    assert ("machine", "", {"cxl-fmw"}) in uses

