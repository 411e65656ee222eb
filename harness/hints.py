"""The fixes error hints name: commands a person who installed the wheel has.

Never a repository script: the wheel ships none. ``harness doctor`` lists what is missing
with these same lines.
"""

#: Debian/Ubuntu packages of the guest tools copied into the initramfs and of the guest
#: programs' build (static C); what ``harness doctor`` checks one by one.
GUEST_PACKAGES = ("busybox-static", "dropbear-bin", "numactl", "ndctl", "daxctl", "kmod", "cpio", "xz-utils", "zstd",
                  "openssh-client", "openssh-sftp-server", "gcc", "make", "libc6-dev", "bash-static")
#: What ``harness kernel build`` needs on top.
KERNEL_BUILD_PACKAGES = ("flex", "bison", "bc", "libelf-dev", "libssl-dev")

#: QEMU >= 8 (volatile CXL memory); Debian 12's own is 7.2, its backports carry 10.
APT_QEMU = ("apt-get install qemu-system-x86 qemu-utils (on Debian 12 add bookworm-backports and "
            "use apt-get -t bookworm-backports install; QEMU 8 or newer is needed)")
DOCTOR = "harness doctor lists what is missing"


def apt_install(*packages: str) -> str:
    """``apt-get install P...``: the line to run (as root) for these packages."""
    return "apt-get install " + " ".join(packages)


def install(*packages: str) -> str:
    """A hint: the apt line for ``packages``, and where to see the rest."""
    return f"{apt_install(*packages)}; {DOCTOR}"
