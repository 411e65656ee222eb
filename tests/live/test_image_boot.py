"""Live: the default kernel boots the harness initramfs; /init reports its milestones and
dropbear accepts the ephemeral key passed on the kernel command line.

Uses a hand-written minimal QEMU argv on purpose: this proves the image, not harness.vm.
"""

from __future__ import annotations

import io
import shutil
import socket
import time

import pexpect
import pytest

from harness.guest.protocol import (
    CXL_SETUP,
    MILESTONE_INIT,
    MILESTONE_MODULES,
    MILESTONE_NETWORK,
    MILESTONE_SSHD,
    guest_cmdline,
)
from harness.image.build import build_initramfs
from harness.kernel.debian import default_kernel

pytestmark = pytest.mark.live

BOOT_TIMEOUT = 120  # TCG on a busy 2-core host
SSH_TIMEOUT = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_key():
    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    priv = Ed25519PrivateKey.generate()
    pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()
    pub = priv.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), pub


def test_image_boots_to_ssh():
    import paramiko

    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 not installed (scripts/install-host-deps)")
    kernel = default_kernel(print)
    image = build_initramfs(kernel, print)
    key, pub = _ephemeral_key()
    port = _free_port()
    modules = ["cxl_acpi", "cxl_pci", "cxl_mem", "dax_cxl", "device_dax", "kmem"]
    append = " ".join(["console=ttyS0", "panic=-1", *guest_cmdline(modules=modules, sshkey=pub)])
    argv = ["-accel", "tcg", "-cpu", "max,-hypervisor", "-M", "q35", "-m", "1G", "-smp", "2", "-nodefaults",
            "-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel.image),
            "-initrd", str(image.path), "-append", append,
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0"]
    t0 = time.monotonic()
    child = pexpect.spawn(qemu, argv, encoding="utf-8", codec_errors="replace", timeout=BOOT_TIMEOUT)
    seen: dict[str, float] = {}
    try:
        for milestone in (MILESTONE_INIT, MILESTONE_MODULES, MILESTONE_NETWORK, MILESTONE_SSHD):
            i = child.expect([milestone, "Kernel panic", "FAILED[^\r\n]*", pexpect.EOF, pexpect.TIMEOUT])
            assert i == 0, f"waiting for {milestone!r}: got {child.after!r}; console tail:\n{child.before[-3000:]}"
            seen[milestone] = time.monotonic() - t0
            if milestone == MILESTONE_MODULES:
                child.expect(r"\((\d+)\)", timeout=5)
                assert int(child.match.group(1)) == len(modules)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect("127.0.0.1", port, username="root", pkey=key, timeout=SSH_TIMEOUT,
                       banner_timeout=SSH_TIMEOUT, auth_timeout=SSH_TIMEOUT, allow_agent=False, look_for_keys=False)
        try:
            _, out, _ = client.exec_command(f"cat /proc/meminfo; echo PATH=$PATH HOME=$HOME; lsmod; "
                                         f"[ -x {CXL_SETUP} ] && echo has-cxl-setup", timeout=SSH_TIMEOUT)
            text = out.read().decode()
            assert out.channel.recv_exit_status() == 0
        finally:
            client.close()
        seen["ssh command done"] = time.monotonic() - t0
        print("\n".join(f"{v:6.2f} s  {k}" for k, v in seen.items()))
        assert "MemTotal:" in text
        assert "/usr/sbin" in text and "HOME=/root" in text
        assert "cxl_mem" in text and "virtio_net" in text
        assert "has-cxl-setup" in text, "the guest files are packed as executables"
    finally:
        child.terminate(force=True)
        child.close(force=True)
