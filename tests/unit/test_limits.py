"""QEMU and host limits checked before boot, and the TCG threading choice."""

from __future__ import annotations

import pytest
import yaml

from harness.errors import QemuError
from harness.qemu.limits import TcgThreading, check_limits, choose_tcg_thread, host_ram_needed, q35_max_cpus
from harness.topology import parse

G = 1 << 30


def topo(smp: int = 2, memory: str = "2G", **extra) -> object:
    doc = {"description": "t", "machine": {"smp": smp}, "nodes": [{"id": 0, "cpus": f"0-{smp - 1}", "memory": memory}], **extra}
    return parse(yaml.safe_dump(doc), "t.yaml")


def test_q35_cpu_table():
    assert q35_max_cpus((10, 0, 2)) == 4096
    assert q35_max_cpus((8, 2, 0)) == 1024
    assert q35_max_cpus((8, 0)) == 288


def test_smp_beyond_qemus_q35():
    with pytest.raises(QemuError) as e:
        check_limits(topo(smp=1500), qemu_version=(8, 2, 0), host_memory=64 * G, accel="tcg")
    assert "machine.smp is 1500, but QEMU 8.2.0's q35 machine takes at most 1024 vCPUs" in str(e.value)
    check_limits(topo(smp=1500), qemu_version=(10, 0, 2), host_memory=64 * G, accel="tcg")


def test_memory_beyond_the_host():
    with pytest.raises(QemuError) as e:
        check_limits(topo(memory="100T"), qemu_version=(10, 0), host_memory=24 * G, accel="tcg")
    assert "needs 100T of host memory" in str(e.value) and "this host has 24G" in str(e.value)


def test_file_backed_memory_does_not_count_against_host_ram():
    t = parse(yaml.safe_dump({"description": "t", "nodes": [
        {"id": 0, "cpus": "0-1", "memory": "1G"},
        {"id": 1, "memory": "30G", "backend": "file", "path": "/x/n1"}]}), "t.yaml")
    assert host_ram_needed(t) == 1 * G
    check_limits(t, qemu_version=(10, 0), host_memory=24 * G, accel="tcg")


def test_tcg_address_space():
    with pytest.raises(QemuError) as e:
        check_limits(topo(memory="1T"), qemu_version=(10, 0), host_memory=None, accel="tcg")
    assert "TCG's x86 CPUs address 1T" in str(e.value)
    check_limits(topo(memory="1T"), qemu_version=(10, 0), host_memory=None, accel="kvm")


@pytest.mark.parametrize("vcpus,cores,requested,mode", [
    (4, 2, "auto", "single"), (2, 2, "auto", "multi"), (1, 8, "auto", "multi"),
    (4, 2, "multi", "multi"), (1, 8, "single", "single"),
])
def test_tcg_threading(vcpus, cores, requested, mode):
    choice = choose_tcg_thread(vcpus, cores, requested, "--tcg-thread")
    assert choice.mode == mode
    if requested == "auto" and mode == "single":
        assert choice.reason == f"{vcpus} vCPUs > {cores} host cores: one thread per vCPU would starve them"
    if requested != "auto":
        assert choice == TcgThreading(mode, f"{mode} requested by --tcg-thread")


def test_tcg_thread_goes_into_accel_option():
    from harness.qemu.argv import machine_argv

    argv = machine_argv(topo(), accel="tcg", tcg_thread="single")
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    assert machine_argv(topo(), accel="tcg")[3] == "tcg"


@pytest.mark.parametrize("vcpus,cores,vms,mode", [
    (2, 2, 2, "single"), (1, 2, 2, "multi"), (2, 4, 2, "multi"), (2, 1, 3, "single"), (2, 2, 1, "multi"),
])
def test_tcg_threading_counts_the_vms_running_at_once(vcpus, cores, vms, mode):
    choice = choose_tcg_thread(vcpus, cores, "auto", vms=vms)
    assert choice.mode == mode
    if (vcpus, cores, vms) == (2, 2, 2):
        assert choice.reason == "2 vCPUs > 1 host core per VM (2 cores, 2 VMs at once): one thread per vCPU would starve them"


def test_concurrent_vms_is_the_xdist_worker_count():
    from harness.qemu.limits import concurrent_vms

    assert concurrent_vms({}) == 1
    assert concurrent_vms({"PYTEST_XDIST_WORKER_COUNT": "3"}) == 3
    assert concurrent_vms({"PYTEST_XDIST_WORKER_COUNT": "junk"}) == 1


def test_memory_limit_is_shared_by_the_vms_running_at_once():
    gib = 1 << 30
    check_limits(topo(memory="2G"), qemu_version=(10, 0), host_memory=4 * gib, accel="tcg", vms=2)
    with pytest.raises(QemuError) as e:
        check_limits(topo(memory="3G"), qemu_version=(10, 0), host_memory=4 * gib, accel="tcg", vms=2)
    assert "each of the 2 VMs running at once (pytest-xdist workers) has 2G" in str(e.value)
    assert "run fewer workers" in (e.value.hint or "")
