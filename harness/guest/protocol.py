"""The host<->guest protocol, in one place: kernel parameters, milestone lines, guest paths.

The guest side of this contract is ``files/init`` (and the programs in ``files/``); the unit
tests check that those files and this module agree. Host modules import the names from here
and restate none of them.

Kernel command line (read by the guest's /init; all optional; :func:`guest_cmdline` builds them)
--------------------------------------------------------------------------------------------------
``harness.modules=a,b,c`` (:data:`CMDLINE_MODULES`)
    Modules to ``modprobe``, in order. Only modules the image carries (and their
    dependencies) can load; a module built into the kernel counts as loaded.
``harness.sshkey=KEY`` (:data:`CMDLINE_SSHKEY`)
    root's authorized key: the bare base64 body of an ``ssh-ed25519`` key, or
    ``TYPE:BASE64`` for other key types. No comment, no spaces (see :func:`sshkey_param`).
``harness.ip=10.0.2.15/24`` (:data:`CMDLINE_IP`), ``harness.gw=10.0.2.2`` (:data:`CMDLINE_GW`)
    Address of the first ethernet interface and the default route (QEMU user-mode
    networking defaults, :data:`GUEST_IP`/:data:`GUEST_GW`; ``harness.gw=none`` for no
    route). ``virtio_net`` is loaded by /init when no ethernet interface exists yet.
``harness.hostname=NAME`` (:data:`CMDLINE_HOSTNAME`)
    The guest's hostname (default :data:`DEFAULT_HOSTNAME`).
``harness.init=poweroff|shell`` (:data:`CMDLINE_INIT`)
    ``poweroff``: print the first milestone and power off (bare-boot floor).
    ``shell``: no network or sshd, just the console shell.

Milestone lines
---------------
The guest prints one console line per milestone, each starting :data:`GUEST_PREFIX`, in
this order: :data:`MILESTONE_INIT`, :data:`MILESTONE_MODPROBE_FAILED` ``NAME`` (per failure),
:data:`MILESTONE_MODULES` ``(N)``, :data:`MILESTONE_NETWORK` ``ADDR`` (or
:data:`MILESTONE_NETWORK_FAILED` ``<why>``), :data:`MILESTONE_SSHD` (or
:data:`MILESTONE_SSHD_FAILED` ``<why>``), :data:`MILESTONE_SHELL`. "sshd ready" is printed only
once dropbear is listening, so a host may connect as soon as it sees it (QEMU's user networking
accepts host connections earlier than that and resets them).

SSH
---
sshd is dropbear on :data:`GUEST_SSH_PORT`: public-key logins for root only. Sessions get
``PATH=/usr/sbin:/usr/bin:/sbin:/bin`` and ``HOME=/root``. There is no sftp server: copy
files with ``cat > FILE`` over an exec channel; dropbear refuses an exec request longer than
:data:`MAX_COMMAND_BYTES`.

Guest paths
-----------
:data:`GUEST_LIB_DIR` holds everything the harness puts into the image beyond a plain system:
:data:`GUEST_BIN_DIR` the programs from ``harness/guest/files/`` (all but ``init``, without
their ``.sh`` suffix, e.g. :data:`CXL_SETUP`; ``lib`` is the shell library the others source), :data:`GUEST_TESTS_DIR` the compiled guest
programs. :data:`GUEST_RUN_DIR` is where the host writes inputs (plans) before running them.
"""

from __future__ import annotations

from collections.abc import Sequence

# --------------------------------------------------------------------------- kernel parameters

CMDLINE_MODULES = "harness.modules"
CMDLINE_SSHKEY = "harness.sshkey"
CMDLINE_IP = "harness.ip"
CMDLINE_GW = "harness.gw"
CMDLINE_HOSTNAME = "harness.hostname"
CMDLINE_INIT = "harness.init"
CMDLINE_PARAMS = (CMDLINE_MODULES, CMDLINE_SSHKEY, CMDLINE_IP, CMDLINE_GW, CMDLINE_HOSTNAME, CMDLINE_INIT)

#: ``harness.init`` values.
INIT_POWEROFF = "poweroff"
INIT_SHELL = "shell"

#: QEMU user networking's defaults, and /init's when no parameter is given.
GUEST_IP = "10.0.2.15/24"
GUEST_GW = "10.0.2.2"
DEFAULT_HOSTNAME = "numa-guest"
GUEST_SSH_PORT = 22
#: dropbear's MAX_CMD_LEN: a longer exec request is refused.
MAX_COMMAND_BYTES = 9000

# --------------------------------------------------------------------------- milestone lines

#: Start of every line the guest's /init prints on the console.
GUEST_PREFIX = "numa-harness:"
MILESTONE_INIT = f"{GUEST_PREFIX} init running"
MILESTONE_MODULES = f"{GUEST_PREFIX} modules loaded"  # followed by " (N)"
MILESTONE_MODPROBE_FAILED = f"{GUEST_PREFIX} modprobe FAILED"  # followed by " NAME"
MILESTONE_NETWORK = f"{GUEST_PREFIX} network up"  # followed by " ADDR"
MILESTONE_NETWORK_FAILED = f"{GUEST_PREFIX} network FAILED"
MILESTONE_SSHD = f"{GUEST_PREFIX} sshd ready port {GUEST_SSH_PORT}"
MILESTONE_SSHD_FAILED = f"{GUEST_PREFIX} sshd FAILED"
MILESTONE_SHELL = f"{GUEST_PREFIX} console shell"
#: The success lines, in boot order.
MILESTONES = (MILESTONE_INIT, MILESTONE_MODULES, MILESTONE_NETWORK, MILESTONE_SSHD, MILESTONE_SHELL)

# --------------------------------------------------------------------------- guest paths

GUEST_LIB_DIR = "/usr/lib/numa-harness"
GUEST_BIN_DIR = f"{GUEST_LIB_DIR}/bin"
GUEST_TESTS_DIR = f"{GUEST_LIB_DIR}/guest-tests"
GUEST_RUN_DIR = "/tmp/numa-harness"
#: The CXL set-up program (``files/cxl-setup.sh``), see :mod:`harness.guest.setup`.
CXL_SETUP = f"{GUEST_BIN_DIR}/cxl-setup"
#: The CXL poison program (``files/cxl-poison.sh``), see :mod:`harness.guest.cxl`.
CXL_POISON = f"{GUEST_BIN_DIR}/cxl-poison"
#: The CXL hot-plug program (``files/cxl-hotplug.sh``), see :mod:`harness.guest.cxl`.
CXL_HOTPLUG = f"{GUEST_BIN_DIR}/cxl-hotplug"
#: The node provisioning program (``files/provision.sh``), see :mod:`harness.guest.setup`.
PROVISION = f"{GUEST_BIN_DIR}/provision"
#: Swap, driver rebinding and offlining for the contract checks (``files/node-memory.sh``),
#: see :mod:`harness.guest.node_memory`.
NODE_MEMORY = f"{GUEST_BIN_DIR}/node-memory"
#: Memory per node sampled while a workload runs (``files/node-sampler.sh``), see
#: :mod:`harness.stats.timeline`.
NODE_SAMPLER = f"{GUEST_BIN_DIR}/node-sampler"
#: Runs a guest program in the background until it reports, and stops it (``files/hold.sh``),
#: see :mod:`harness.guest.background`.
HOLD = f"{GUEST_BIN_DIR}/hold"
#: cgroup v2 groups: make, join, reclaim, confine (``files/cgroup.sh``), see :mod:`harness.guest.cgroup`.
CGROUP = f"{GUEST_BIN_DIR}/cgroup"
#: Hugetlb, the multi-gen LRU, KSM and compaction for the contract (``files/services.sh``),
#: see :mod:`harness.guest.services`.
SERVICES = f"{GUEST_BIN_DIR}/services"
#: Writes one mark line into the guest kernel's log (``files/kmsg-mark.sh``), see :mod:`harness.guest.dmesg`.
KMSG_MARK = f"{GUEST_BIN_DIR}/kmsg-mark"
#: Environment variable the guest programs take their sysfs root from (tests point it at a fake tree).
SYSFS_ENV = "HARNESS_SYSFS"


def guest_bin_name(file_name: str) -> str:
    """The name a file of ``harness/guest/files/`` has in :data:`GUEST_BIN_DIR` (``x.sh`` -> ``x``)."""
    return file_name[:-3] if file_name.endswith(".sh") else file_name


# --------------------------------------------------------------------------- builders (pure)


def sshkey_param(public_key: str) -> str:
    """The ``harness.sshkey`` value for an OpenSSH public key line ("ssh-ed25519 AAAA... comment")."""
    parts = public_key.split()
    if len(parts) == 1:
        return parts[0]
    if len(parts) < 2:
        raise ValueError("empty public key")
    ktype, body = parts[0], parts[1]
    return body if ktype == "ssh-ed25519" else f"{ktype}:{body}"


def guest_cmdline(
    *,
    modules: Sequence[str] = (),
    sshkey: str | None = None,
    ip: str | None = None,
    gw: str | None = None,
    hostname: str | None = None,
    init: str | None = None,
) -> list[str]:
    """The ``harness.*`` kernel parameters for these settings (``sshkey``: an OpenSSH public key line)."""
    out = []
    if modules:
        out.append(f"{CMDLINE_MODULES}={','.join(modules)}")
    if sshkey:
        out.append(f"{CMDLINE_SSHKEY}={sshkey_param(sshkey)}")
    for name, value in ((CMDLINE_IP, ip), (CMDLINE_GW, gw), (CMDLINE_HOSTNAME, hostname), (CMDLINE_INIT, init)):
        if value:
            if any(c.isspace() for c in value):
                raise ValueError(f"{name} must not contain spaces: {value!r}")
            out.append(f"{name}={value}")
    return out
