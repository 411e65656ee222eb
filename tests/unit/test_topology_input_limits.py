"""Input that used to pass validation and then failed at boot (or after it): each is refused
before anything runs, at its YAML path, with the limit it breaks."""

from __future__ import annotations

import copy

import pytest
import yaml

from harness.errors import QemuError, TopologyError
from harness.qemu.limits import check_limits
from harness.qemu.preflight import Capabilities, check_cpu, parse_cpu_help
from harness.topology import parse

BASE = {
    "description": "limits",
    "machine": {"smp": 2},
    "nodes": [{"id": 0, "cpus": "0-1", "memory": "1G"}, {"id": 1, "memory": "1G", "initiator": 0}],
    "hmat": {"links": [{"initiator": 0, "target": 0, "latency": 10, "bandwidth": "20G"},
                       {"initiator": 0, "target": 1, "latency": 150, "bandwidth": "10G"}]},
}


def _errors(doc: dict) -> list[tuple[str, str]]:
    with pytest.raises(TopologyError) as exc:
        parse(yaml.safe_dump(doc), "t.yaml")
    return [(i.path, i.message + " " + (i.hint or "")) for i in exc.value.issues]


def _with(**machine) -> dict:
    doc = copy.deepcopy(BASE)
    doc["machine"].update(machine)
    return doc


def test_base_is_valid():
    parse(yaml.safe_dump(BASE), "t.yaml")


def test_kernel_cmdline_past_the_kernel_limit_with_the_harness_parameters():
    parse(yaml.safe_dump(_with(kernel_cmdline="x" * 1663)), "t.yaml")  # 2047 - 384 fits
    [(path, text)] = _errors(_with(kernel_cmdline="loglevel=8 " + "x" * 1700))
    assert path == "machine.kernel_cmdline"
    assert "1711 bytes" in text and "2047" in text and "1663" in text


def test_kernel_cmdline_with_an_unbalanced_quote():
    parse(yaml.safe_dump(_with(kernel_cmdline='dyndbg="file cxl/* +p"')), "t.yaml")
    [(path, text)] = _errors(_with(kernel_cmdline='dyndbg="file cxl/* +p'))
    assert path == "machine.kernel_cmdline" and "unbalanced double quote" in text and "SSH key" not in text


def test_hmat_latency_beyond_what_hmat_encodes():
    doc = copy.deepcopy(BASE)
    doc["hmat"]["links"][1]["latency"] = 10**30
    [(path, text)] = _errors(doc)
    assert path == "hmat.links[1].latency" and "64-bit" in text
    doc["hmat"]["links"][1]["latency"] = 655350      # QEMU 10.0 refuses it next to 10 (its own check)
    [(path, text)] = _errors(doc)
    assert path == "hmat.links[1].latency" and "65534 × 10 ns" in text
    doc["hmat"]["links"][1]["latency"] = 655340      # 65534 × 10: the last that encodes
    parse(yaml.safe_dump(doc), "t.yaml")


def test_hmat_bandwidth_range_and_alignment():
    doc = copy.deepcopy(BASE)
    doc["hmat"]["links"][0]["bandwidth"] = "1M"
    doc["hmat"]["links"][1]["bandwidth"] = "65535M"  # QEMU 10.0 refuses it next to 1M
    [(path, text)] = _errors(doc)
    assert path == "hmat.links[1].bandwidth" and "65534" in text
    doc["hmat"]["links"][1]["bandwidth"] = "65534M"
    parse(yaml.safe_dump(doc), "t.yaml")
    doc["hmat"]["links"][1]["bandwidth"] = "1023K"
    [(path, text)] = _errors(doc)
    assert path == "hmat.links[1].bandwidth" and "MiB" in text


def test_absurdly_long_device_id():
    doc = copy.deepcopy(BASE)
    doc["pci_devices"] = [{"id": "d" * 5000, "driver": "pci-testdev"}]
    [(path, text)] = _errors(doc)
    assert path == "pci_devices[0].id" and "5000 characters" in text and "d" * 100 not in text


def test_cpu_host_under_tcg():
    [(path, text)] = _errors(_with(cpu="host", accel="tcg"))
    assert path == "machine.cpu" and "needs KVM" in text
    t = parse(yaml.safe_dump(_with(cpu="host")), "t.yaml")  # accel auto: decided at boot
    with pytest.raises(QemuError, match="needs KVM"):
        check_limits(t, qemu_version=(10, 0, 2), host_memory=None, accel="tcg")
    check_limits(t, qemu_version=(10, 0, 2), host_memory=None, accel="kvm")


def test_initiator_without_an_hmat_section():
    doc = copy.deepcopy(BASE)
    del doc["hmat"]
    [(path, text)] = _errors(doc)
    assert path == "nodes[1].initiator" and "hmat=on" in text


CPU_HELP = """\
Available CPUs:
  Skylake-Client        (alias configured by machine type)
  max                   Enables all features supported by the accelerator in the current host

Recognized CPUID flags:
  avx avx2 avx512f hypervisor
  x2apic
"""


def test_cpu_help_is_read_and_unknown_flags_and_models_refused():
    models, flags = parse_cpu_help(CPU_HELP)
    assert models == {"Skylake-Client", "max"} and flags == {"avx", "avx2", "avx512f", "hypervisor", "x2apic"}
    caps = Capabilities(binary="qemu", version=(10, 0, 2), devices=set(), objects=set(), cpu_models=models, cpu_flags=flags)
    check_cpu("max,-hypervisor,+avx2,l3-cache=off", caps)
    with pytest.raises(QemuError, match="knows no CPU flag 'avx9'.*did you mean"):
        check_cpu("max,+avx9", caps)
    with pytest.raises(QemuError, match="knows no CPU model 'Skylake-Clent'.*did you mean 'Skylake-Client'"):
        check_cpu("Skylake-Clent", caps)
    old = Capabilities(binary="qemu", version=(10, 0, 2), devices=set(), objects=set())  # CPU list not read
    check_cpu("max,+avx9", old)


def test_exact_command_line_size_once_the_modules_are_known():
    """Validation keeps a margin for the harness's own parameters; preparing a boot counts them."""
    from harness.boot.prepare import check_cmdline_size
    from harness.kernel.needs import guest_needs
    from harness.topology import load

    loaded = load("cxl-single")
    modules = list(guest_needs(loaded.topology).modules)
    check_cmdline_size(loaded, "x" * 1663, modules)  # what validation lets through fits with the real modules
    with pytest.raises(TopologyError, match="kernel command line is 2[0-9]{3} bytes; the kernel reads 2047"):
        check_cmdline_size(loaded, "x" * 1663, modules + [f"extra_module_{i}" for i in range(30)])
