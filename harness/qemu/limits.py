"""Limits QEMU and the host put on a machine, checked before QEMU starts.

QEMU reports an impossible machine only by exiting at once (``cannot set up
guest memory 'pc.ram': Cannot allocate memory``, ``Invalid SMP CPUs``), and a
machine far beyond the host can take the host down with it. These checks are
pure given the QEMU version, the host's memory and the accelerator; the
readers of host facts are separate.

Also here: TCG threading. QEMU's default multi-threaded TCG runs one host
thread per vCPU; with more vCPUs than host cores the vCPU threads starve each
other and the guest reports RCU stalls and network timeouts (measured: a
4-vCPU guest on a 2-core host stalled in 2 of 3 boots, and booted every time
with ``thread=single``). :func:`choose_tcg_thread` picks the mode and says why.

VMs that run at once share the host: under pytest-xdist every worker boots its own, so the
cores and the memory one VM may count on are the host's divided by the number of workers
(:func:`concurrent_vms`, from ``PYTEST_XDIST_WORKER_COUNT``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from harness.errors import QemuError
from harness.topology.model import Topology
from harness.units import format_size

# The most vCPUs QEMU's q35 machine types take (query-machines "cpu-max" of pc-q35-X.Y):
# 4096 since 9.0, 1024 in 8.1 and 8.2, 288 before. tests/qemu checks it against the installed QEMU.
Q35_MAX_CPUS = (((9, 0), 4096), ((8, 1), 1024), ((0, 0), 288))
# Under TCG, x86 CPUs have 40 physical address bits (TCG_PHYS_ADDR_BITS): RAM, the PCI hole
# below 4 GiB, hotplug space and the CXL windows all have to fit in 1 TiB.
TCG_ADDRESS_SPACE = 1 << 40
PCI_HOLE = 4 << 30


def q35_max_cpus(version: tuple[int, ...]) -> int:
    for since, n in Q35_MAX_CPUS:
        if tuple(version[:2]) >= since:
            return n
    return Q35_MAX_CPUS[-1][1]


def host_ram_needed(t: Topology) -> int:
    """Bytes of host memory the guest's backends take: nodes plus CXL devices not backed by files."""
    need: int = sum(int(n.memory) for n in t.nodes if n.backend != "file")
    if t.cxl:
        need += sum(d.volatile + d.persistent + d.lsa for d in t.cxl.devices if d.backend != "file")
    return need


def concurrent_vms(env: Mapping[str, str] | None = None) -> int:
    """How many harness VMs run at once on this host: pytest-xdist's worker count, else 1."""
    env = os.environ if env is None else env
    try:
        return max(1, int(env.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    except ValueError:
        return 1


def check_limits(t: Topology, *, qemu_version: tuple[int, ...], host_memory: int | None, accel: str,
                 vms: int = 1) -> None:
    """Raise QemuError if QEMU or the host cannot run ``t`` (one of ``vms`` VMs running at once,
    each with its share of ``host_memory``)."""
    cap = q35_max_cpus(qemu_version)
    if t.machine.smp > cap:
        ver = ".".join(map(str, qemu_version))
        raise QemuError(f"machine.smp is {t.machine.smp}, but QEMU {ver}'s q35 machine takes at most {cap} vCPUs",
                        hint=f"lower machine.smp to {cap} or less")
    need = host_ram_needed(t)
    share = host_memory // max(1, vms) if host_memory is not None else None
    if share is not None and need > share:
        have = f"this host has {format_size(_round_mib(share))}" if vms <= 1 else \
            f"each of the {vms} VMs running at once (pytest-xdist workers) has {format_size(_round_mib(share))}"
        raise QemuError(f"the topology needs {format_size(_round_mib(need))} of host memory for its RAM-backed memory, "
                        f"but {have}",
                        hint="shrink nodes[].memory / cxl.devices[] capacities, or back them with files (backend: file)"
                             + (", or run fewer workers (-n)" if vms > 1 else ""))
    if accel == "tcg" and t.machine.cpu.split(",")[0] == "host":
        raise QemuError("machine.cpu is host, which needs KVM, and this boot runs under TCG (QEMU refuses -cpu host there)",
                        hint="use cpu: max (the default), or --accel kvm on a host where KVM works (harness doctor says)")
    if accel == "tcg":
        top = max(t.total_memory, t.machine.maxmem or 0) + PCI_HOLE
        if t.cxl:
            top += sum(w.size for w in t.cxl.windows)
        if top > TCG_ADDRESS_SPACE:
            raise QemuError(f"memory, hotplug space and CXL windows need {format_size(_round_mib(top))} of guest address space, "
                            "but TCG's x86 CPUs address 1T (40 physical address bits)",
                            hint="shrink machine.memory / maxmem or cxl.windows[].size")


def _round_mib(n: int) -> int:
    return n - n % (1 << 20)


def host_memory() -> int | None:
    """The host's MemTotal in bytes, or None if /proc/meminfo cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def host_cores() -> int:
    """CPUs this process may run on (its affinity mask), the cores QEMU's threads share."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class TcgThreading:
    """``mode`` for ``-accel tcg,thread=``: single or multi, and why (shown in the boot summary)."""

    mode: str
    reason: str


def choose_tcg_thread(vcpus: int, cores: int, requested: str = "auto", source: str = "",
                      vms: int = 1) -> TcgThreading:
    """TCG threading for ``vcpus`` vCPUs on ``cores`` host cores shared by ``vms`` VMs at once (pure).

    ``requested`` single or multi is obeyed (``source`` says who asked, e.g. "--tcg-thread");
    auto takes multi while every vCPU can have a core of the VM's share, single beyond.
    """
    if requested in ("single", "multi"):
        return TcgThreading(requested, f"{requested} requested" + (f" by {source}" if source else ""))
    if requested != "auto":
        raise ValueError(f"tcg thread mode must be auto, single or multi, not {requested!r}")
    if vms > 1:
        share = max(1, cores // vms)
        where = f"{share} host core{'s' if share != 1 else ''} per VM ({cores} cores, {vms} VMs at once)"
    else:
        share, where = cores, f"{cores} host cores"
    if vcpus > share:
        return TcgThreading("single", f"{vcpus} vCPUs > {where}: one thread per vCPU would starve them")
    return TcgThreading("multi", f"{vcpus} vCPUs <= {where}")
