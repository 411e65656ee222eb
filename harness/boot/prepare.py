"""From "this topology on this kernel" to a ready :class:`~harness.vm.BootSpec`.

The one place that strings the pieces together, in the order that fails
fastest and cheapest: topology (validated) -> QEMU binary and its version -> kernel and its
.config (checked against what the topology needs) -> guest image (cached)
-> accelerator (probed, cached) -> QEMU argv (generated, checked against
the binary). Nothing boots until all of that passed; :func:`harness.boot.boot`
prepares every VM through :func:`prepare`, then boots it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import KernelError, PmemLabelError, TopologyError, UsageError
from harness.image.build import Image, build_initramfs
from harness.kernel.config import check_config, read_config
from harness.kernel.debian import debian_kernel, default_kernel, parse_debian_name
from harness.kernel.model import Kernel
from harness.kernel.needs import guest_needs
from harness.kernel.user import kernel_from_tree, user_kernel
from harness.paths import data_dir
from harness.qemu.argv import backing_path, device_files, kernel_cmdline, machine_argv
from harness.qemu.limits import (
    TcgThreading,
    check_limits,
    choose_tcg_thread,
    concurrent_vms,
    host_cores,
    host_memory,
)
from harness.qemu.preflight import check_version, find_binary, preflight
from harness.topology import Loaded, Topology, load
from harness.topology.labels import MAX_LSA_BYTES, parse_label_area, region_label_problem
from harness.topology.validate import COMMAND_LINE_SIZE
from harness.vm.accel import AccelChoice, choose_accel
from harness.vm.machine import BootSpec, Timeouts
from harness.vm.spec import kernel_cmdline as full_cmdline

Progress = Callable[[str], None] | None

# Environment variables mirroring the command-line options (and the Makefile's variables).
ENV_KERNEL = "NUMA_HARNESS_KERNEL"          # a bzImage, a kernel build tree, or debian:X.Y
ENV_MODULES = "NUMA_HARNESS_MODULES"        # modules_install root for ENV_KERNEL
ENV_ACCEL = "NUMA_HARNESS_ACCEL"            # auto | kvm | tcg
ENV_TCG_THREAD = "NUMA_HARNESS_TCG_THREAD"  # auto | single | multi


def backing_dir() -> Path:
    """Where relative backing-file paths of a topology (``backend: file``) live; kept across boots.

    Not under the background VMs' state directory, whose entries are VM names."""
    return data_dir() / "backing"


def check_pmem_labels(t: Topology, files_dir: Path) -> None:
    """Refuse, before anything boots, a file-backed pmem region whose devices' label areas (LSA files
    from an earlier boot) describe a namespace the kernel would not find again: one line saying why
    (:func:`~harness.topology.labels.region_label_problem`). The files are only read."""
    if not t.cxl:
        return
    devs = {d.id: d for d in t.cxl.devices}
    for i, r in enumerate(t.guest.regions):
        if r.mode != "pmem":
            continue
        areas = {}
        files = {}
        for d in r.devices:
            lsa = device_files(devs[d], str(files_dir)).get("lsa")
            if lsa is None or not Path(lsa).is_file():
                continue
            try:
                with open(lsa, "rb") as f:
                    data = f.read(MAX_LSA_BYTES)
            except OSError as e:
                raise PmemLabelError(f"cannot read the label area {lsa}: {e.strerror}") from None
            areas[d], files[d] = parse_label_area(data), lsa
        problem = region_label_problem(t, r, i, areas)
        if problem:
            raise PmemLabelError(f"the label areas of {', '.join(files.values())} cannot be honoured: {problem}",
                                 hint="the files were not touched; boot them with the topology that wrote them, "
                                 "or delete them to start empty")


def make_backing_dirs(t, files_dir: Path) -> None:
    """Create the directories file-backed memory goes into (QEMU creates the files, not their directories)."""
    paths = [backing_path(n.path, str(files_dir)) for n in t.nodes if n.backend == "file" and n.path]
    if t.cxl:
        paths += [f for d in t.cxl.devices for f in device_files(d, str(files_dir)).values()]
    for f in paths:
        try:
            Path(f).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            from harness.errors import QemuError
            raise QemuError(f"cannot create the directory of backing file {f}: {e.strerror}") from None


def tcg_thread_for(t, requested: str | None) -> TcgThreading:
    """The TCG threading for topology ``t``: ``requested`` (the command line), else
    $NUMA_HARNESS_TCG_THREAD, else the topology's machine.tcg_thread."""
    vms = concurrent_vms()
    if requested:
        return choose_tcg_thread(t.machine.smp, host_cores(), requested, "--tcg-thread", vms)
    env = os.environ.get(ENV_TCG_THREAD)
    if env:
        return choose_tcg_thread(t.machine.smp, host_cores(), env, f"${ENV_TCG_THREAD}", vms)
    return choose_tcg_thread(t.machine.smp, host_cores(), t.machine.tcg_thread, "machine.tcg_thread", vms)


@dataclass(frozen=True)
class KernelSpec:
    """Which kernel the user asked for; all None means the embedded default."""

    image: Path | None = None
    modules: Path | None = None
    tree: Path | None = None
    config: Path | None = None

    @classmethod
    def from_env(cls, image: str | None = None, modules: str | None = None, tree: str | None = None,
                 config: str | None = None) -> KernelSpec:
        """Options win over the environment; a directory given as the kernel is a build tree."""
        return cls.of(image or os.environ.get(ENV_KERNEL) or None, modules or os.environ.get(ENV_MODULES) or None,
                      tree, config)

    @classmethod
    def of(cls, image: str | None = None, modules: str | None = None, tree: str | None = None,
           config: str | None = None) -> KernelSpec:
        """Exactly these choices (the caller consulted the environment); a directory given as the
        kernel is a build tree."""
        if image and not tree and Path(image).is_dir():
            image, tree = None, image
        def path(v: str | None) -> Path | None:
            return Path(v).expanduser() if v else None
        return cls(path(image), path(modules), path(tree), path(config))


def resolve_kernel(spec: KernelSpec, progress: Progress = None) -> Kernel:
    if spec.tree and spec.image:
        raise KernelError("give either --kernel or --kernel-tree, not both")
    if spec.tree:
        return kernel_from_tree(spec.tree, progress)
    series = parse_debian_name(str(spec.image)) if spec.image else None
    if series is not None:  # --kernel debian:7.2
        if spec.modules or spec.config:
            raise KernelError(f"--modules and --kernel-config go with a kernel you built, not {spec.image}")
        return debian_kernel(series, progress)
    if spec.image:
        return user_kernel(spec.image, spec.modules, spec.config)
    if spec.modules or spec.config:
        raise KernelError("--modules and --kernel-config go with --kernel (they belong to a kernel you built)")
    return default_kernel(progress)


@dataclass
class Prepared:
    """Everything checked and built; ``spec`` boots it."""

    loaded: Loaded
    kernel: Kernel
    image: Image
    accel: AccelChoice
    qemu: str
    spec: BootSpec
    warnings: list[str]
    tcg_thread: TcgThreading | None = None   # None under KVM
    qemu_version: str = ""                    # the binary's version, as preflight read it ("10.0.2")


def cxl_commits_under_hypervisor(k: Kernel) -> bool:
    """True if the kernel commits CXL regions with the hypervisor CPUID bit visible
    (CONFIG_CXL_REGION_INVALIDATION_TEST=y), so the harness need not hide that bit."""
    if k.config is None:
        return False
    try:
        return read_config(k).get("CONFIG_CXL_REGION_INVALIDATION_TEST") == "y"
    except KernelError:
        return False


def requested_accel(asked: str | None, topology_accel: str) -> str:
    """The accelerator to ask :func:`choose_accel` for: what the user asked (``--accel`` or the
    environment), except that a topology saying ``tcg`` is not overridden by ``auto`` (pure)."""
    if asked is None or (asked == "auto" and topology_accel == "tcg"):
        return topology_accel
    return asked


#: An ed25519 public key as the guest's command line carries it (each VM makes its own).
_KEY_OF_ITS_LENGTH = "ssh-ed25519 " + "A" * 68


def check_cmdline_size(loaded: Loaded, append: str, modules: list[str]) -> None:
    """TopologyError if the topology's parameters and the harness's own (console, the guest's
    address, SSH key, module list) exceed what the kernel reads: validation keeps a margin for
    the harness's part; this is the exact count, once the modules are known."""
    line = full_cmdline(append, modules, _KEY_OF_ITS_LENGTH)
    size = len(line.encode())
    if size > COMMAND_LINE_SIZE - 1:
        raise TopologyError(str(loaded.path), "machine.kernel_cmdline",
                            f"with the harness's own parameters the kernel command line is {size} bytes; the kernel "
                            f"reads {COMMAND_LINE_SIZE - 1} and would silently drop the rest (the harness's SSH key "
                            "among it)", hint="shorten machine.kernel_cmdline")


def check_qemu_args(args: Sequence[str]) -> None:
    """UsageError for extra QEMU arguments a harness boot cannot honour."""
    if "-S" in args:
        raise UsageError("--qemu-arg -S: the harness starts QEMU paused itself and resumes it to boot",
                         hint="for gdb from the first instruction run `harness qemu-cmd TOPOLOGY --full --qemu-arg -s "
                              "--qemu-arg -S` by hand; --qemu-arg -s alone lets gdb attach to a booted guest (port 1234)")


def prepare(topology: str | Path, *, kernel: KernelSpec | None = None, accel: str | None = None,
            qemu: str | None = None, name: str | None = None, workdir: Path | None = None,
            detach: bool = False, ssh_port: int | None = None, timeouts: Timeouts | None = None,
            step: Callable[[str], None] | None = None, progress: Progress = None,
            tcg_thread: str | None = None, qemu_args: Sequence[str] = ()) -> Prepared:
    """Check and build everything for booting ``topology``; raise a HarnessError on the first problem.

    ``kernel=None`` means ``$NUMA_HARNESS_KERNEL`` (a bzImage or a build tree) if set, as on the
    command line, else the distribution's kernel.

    ``step(title)`` is called as each stage starts (for the CLI's progress display),
    ``progress(message)`` with finer detail inside a stage. ``tcg_thread`` (auto, single,
    multi) overrides the topology's machine.tcg_thread. ``qemu_args`` are appended to QEMU's
    command line as given (``-s``, ``-trace ...``); ``-S`` is refused (the harness starts QEMU
    paused itself and resumes it to boot).
    """
    say = step or (lambda _t: None)
    check_qemu_args(qemu_args)
    say("topology")
    loaded = load(topology)
    t = loaded.topology
    check_pmem_labels(t, backing_dir())
    binary = find_binary(qemu)
    check_version(binary)  # before the accelerator probe boots it (README's order)
    say("kernel")
    k = resolve_kernel(kernel or KernelSpec.from_env(), progress)  # $NUMA_HARNESS_KERNEL, as the CLI
    needs = guest_needs(t)
    check_cmdline_size(loaded, kernel_cmdline(t), list(needs.modules))
    warnings = []
    if k.config is None:
        warnings.append(f"no .config known for {k.origin}: the kernel options the topology needs were not checked "
                        "(pass --kernel-config PATH)")
    check_config(k, needs.config, needs.why)
    say("guest image")
    image = build_initramfs(k, progress)
    say("accelerator")
    requested = requested_accel(accel or os.environ.get(ENV_ACCEL), t.machine.accel)
    choice = choose_accel(requested, binary, k.image, image.path)
    threading = tcg_thread_for(t, tcg_thread) if choice.accel == "tcg" else None
    files = backing_dir()
    argv = machine_argv(t, accel=choice.accel, tcg_thread=threading.mode if threading else None, files_dir=str(files),
                        hide_hypervisor=not cxl_commits_under_hypervisor(k))
    say("QEMU preflight")
    caps = preflight(argv, binary)
    check_limits(t, qemu_version=caps.version, host_memory=host_memory(), accel=choice.accel,
                 vms=concurrent_vms())
    make_backing_dirs(t, files)
    spec = BootSpec(machine_argv=argv, kernel=k.image, initrd=image.path, append=kernel_cmdline(t),
                    modules=list(needs.modules), qemu_binary=binary, workdir=workdir, ssh_port=ssh_port,
                    timeouts=timeouts or Timeouts(), detach=detach, name=name or loaded.name,
                    qemu_args=list(qemu_args))
    return Prepared(loaded=loaded, kernel=k, image=image, accel=choice, qemu=binary, spec=spec, warnings=warnings,
                    tcg_thread=threading, qemu_version=caps.version_text)
