"""A failed test's bundle: one folder with everything needed to read and reproduce the failure.

``--nh-artifacts DIR`` (default: ``numa-harness-artifacts`` under pytest's basetemp) holds one folder
per failed test, named after its node id::

    failure.txt            the failure as the report shows it, with its diagnostics
    qemu-argv.json / .txt  the QEMU command line the machine booted with
    topology.yaml          the topology file
    kernel.config          the kernel's .config (absent when the kernel's is unknown)
    console.log            the whole serial console, copied when the test failed
    dmesg.txt              the guest's whole kernel log then; dmesg-since-test.txt: after the test's mark
    stats-before.json      the statistics as the test began; stats-after.json: when it failed
    workloads.json         every guest-program command the test ran and what it printed
    bundle.json            test, topology, kernel, accelerator, QEMU version, boot time
    reproduce.sh           boots the same machine and kernel and runs the same test again

Nothing here is removed by the harness: the failure report names the bundle's console log, not the
VM's work directory (which a clean shutdown removes).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.plugin.failure import Failure

if TYPE_CHECKING:  # annotations only: the plugin imports this module at every pytest start
    from harness.boot import Machine

#: The default folder under pytest's basetemp.
DEFAULT_DIR = "numa-harness-artifacts"
#: Environment variables a reproduction needs as they were (the kernel, QEMU, caches).
ENV_KEPT = ("NUMA_HARNESS_KERNEL", "NUMA_HARNESS_MODULES", "NUMA_HARNESS_ACCEL", "NUMA_HARNESS_TCG_THREAD",
            "NUMA_HARNESS_QEMU", "NUMA_HARNESS_CACHE", "NUMA_HARNESS_SERIES_KERNEL", "XDG_CACHE_HOME")


def folder_name(nodeid: str) -> str:
    """A file-system-safe folder name for a test node id (pure)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "--")).strip("_.")
    return name[:150] or "test"


def reproduce_script(*, python: str, rootdir: str, nodeid: str, options: Sequence[str],
                     env: Mapping[str, str]) -> str:
    """``reproduce.sh``: the same test, on the same machine and kernel, with the same options (pure)."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    cmd = shlex.join([python, "-m", "pytest", nodeid, *options])
    return ("#!/bin/sh\n"
            "# Reproduce a failed numa-harness test: boots the same topology on the same kernel and runs\n"
            "# the same test. Extra arguments go to pytest (e.g. --nh-keep-vm-on-failure).\n"
            "set -e\n"
            f"{exports}"
            f"cd {shlex.quote(rootdir)}\n"
            f'exec {cmd} "$@"\n')


def machine_options(m: Machine, qemu: str | None) -> list[str]:
    """The plugin options that boot ``m``'s kernel and accelerator again: the resolved kernel files,
    not a name (``debian:7.2`` could resolve to a newer release later)."""
    k = m.prepared.kernel
    opts = ["--nh-kernel", str(k.image)]
    if k.modules_root is not None:
        opts += ["--nh-modules", str(k.modules_root)]
    if k.config is not None:
        opts += ["--nh-kernel-config", str(k.config)]
    opts += ["--nh-accel", m.prepared.accel.accel]
    if qemu:
        opts += ["--nh-qemu", qemu]
    return opts


def write_bundle(root: Path, *, nodeid: str, m: Machine, failure: Failure, failure_text: str,
                 reproduce: str, properties: Sequence[tuple[str, Any]]) -> Path:
    """Write ``nodeid``'s bundle under ``root``; its folder."""
    d = root / folder_name(nodeid)
    d.mkdir(parents=True, exist_ok=True)
    p = m.prepared

    def text(name: str, content: str) -> None:
        (d / name).write_text(content if content.endswith("\n") or not content else content + "\n")

    def as_json(name: str, data: Any) -> None:
        (d / name).write_text(json.dumps(data, indent=1, default=str) + "\n")

    argv = list(m.vm.qemu_argv)
    as_json("qemu-argv.json", argv)
    text("qemu-argv.txt", " \\\n    ".join(shlex.quote(a) for a in argv))
    shutil.copyfile(p.loaded.path, d / "topology.yaml")
    if p.kernel.config is not None and p.kernel.config.is_file():
        shutil.copyfile(p.kernel.config, d / "kernel.config")
    if m.console_log.is_file():
        shutil.copyfile(m.console_log, d / "console.log")
    if failure.dmesg is not None:
        text("dmesg.txt", failure.dmesg)
    if failure.dmesg_since is not None:
        text("dmesg-since-test.txt", failure.dmesg_since)
    if failure.before is not None:
        as_json("stats-before.json", failure.before.to_json())
    if failure.after is not None:
        as_json("stats-after.json", failure.after.to_json())
    as_json("workloads.json", failure.workloads)
    as_json("bundle.json", {"test": nodeid, "topology": p.loaded.name, "kernel": str(p.kernel.image),
                            "kernel_release": p.kernel.release, "accel": p.accel.accel,
                            "qemu": p.qemu, "qemu_version": p.qemu_version,
                            "properties": [[k, v] for k, v in properties]})
    sections = "".join(f"\n--- {title} ---\n{body}\n" for title, body in failure.sections(str(d / "console.log")))
    text("failure.txt", failure_text + "\n" + sections)
    script = d / "reproduce.sh"
    script.write_text(reproduce)
    script.chmod(0o755)
    return d


def kept_env() -> dict[str, str]:
    """The harness's environment variables that are set now."""
    return {k: os.environ[k] for k in ENV_KEPT if k in os.environ}


def python() -> str:
    return sys.executable
