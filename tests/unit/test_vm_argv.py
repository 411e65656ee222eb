"""Pure VM logic: QEMU argv assembly, kernel command line, state JSON, QEMU stderr parsing."""

from pathlib import Path

import pytest

from harness.errors import VMStateError
from harness.vm.machine import (
    BootSpec,
    Timeouts,
    VMState,
    WorkFiles,
    build_qemu_argv,
    check_machine_argv,
    kernel_cmdline,
    read_state,
    socket_path_problem,
)
from harness.vm.ports import hostfwd_bind_failed, pick_free_port, port_is_free

MACHINE = ["-machine", "q35", "-m", "1G", "-smp", "2", "-accel", "tcg", "-cpu", "max,-hypervisor"]


def spec(**kw):
    return BootSpec(MACHINE, Path("/k/bzImage"), Path("/i/initrd.cpio"), **kw)


def opt(argv, name):
    """Every value following option ``name``."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def test_argv_layout():
    files = WorkFiles(Path("/tmp/w"))
    argv = build_qemu_argv(spec(qemu_binary="/usr/bin/qemu-system-x86_64"), files, 40022, "CMDLINE")
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert argv[1:1 + len(MACHINE)] == MACHINE
    assert argv[-1] == "-S"  # paused until QMP `cont`
    for flag in ("-nodefaults", "-no-reboot"):
        assert flag in argv
    assert opt(argv, "-display") == ["none"]
    assert opt(argv, "-kernel") == ["/k/bzImage"]
    assert opt(argv, "-initrd") == ["/i/initrd.cpio"]
    assert opt(argv, "-append") == ["CMDLINE"]
    chardevs = opt(argv, "-chardev")
    assert ("socket,id=hcon0,path=/tmp/w/console.sock,server=on,wait=off,"
            "logfile=/tmp/w/console.log,logappend=off") in chardevs
    assert "socket,id=hqmp0,path=/tmp/w/qmp.sock,server=on,wait=off" in chardevs
    assert opt(argv, "-serial") == ["chardev:hcon0"]
    assert opt(argv, "-mon") == ["chardev=hqmp0,mode=control"]
    assert opt(argv, "-netdev") == ["user,id=hnet0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22"]
    assert "virtio-net-pci,netdev=hnet0,bus=pcie.0" in opt(argv, "-device")


def test_argv_escapes_commas_in_paths_and_sets_name():
    argv = build_qemu_argv(spec(name="a,b"), WorkFiles(Path("/tmp/x,y")), 1, "c")
    assert opt(argv, "-name") == ["a,,b"]
    assert any("path=/tmp/x,,y/qmp.sock" in c for c in opt(argv, "-chardev"))


@pytest.mark.parametrize("bad", ["-kernel", "-serial", "-netdev", "-display", "-S", "-qmp", "-nographic"])
def test_machine_argv_must_not_carry_what_the_vm_adds(bad):
    with pytest.raises(ValueError, match=bad):
        check_machine_argv(MACHINE + [bad, "x"])


def test_kernel_cmdline_order_and_contents():
    line = kernel_cmdline("  numa_balancing=enable  ", ["cxl_acpi", "kmem"], "AAAAC3Nz")
    assert line.split() == ["numa_balancing=enable", "console=ttyS0,115200", "panic=-1",
                            "harness.modules=cxl_acpi,kmem", "harness.sshkey=AAAAC3Nz",
                            "harness.ip=10.0.2.15/24", "harness.gw=10.0.2.2"]
    assert "oops=panic" not in line  # oopses are detected, not made fatal
    assert "harness.modules" not in kernel_cmdline("", [], "K")
    assert kernel_cmdline("", [], "K").startswith("console=ttyS0")


def test_timeouts_scale():
    t = Timeouts(scale=2.5)
    assert t.get("ssh_ready") == 300 and t.get("qemu_up") == 25


def test_socket_path_length_is_checked():
    assert socket_path_problem(WorkFiles(Path("/tmp/short"))) is None
    assert "longer than" in socket_path_problem(WorkFiles(Path("/tmp/" + "d" * 120)))


def test_state_round_trip(tmp_path):
    st = VMState(name="n1", pid=1234, ssh_port=40022, key="/w/id_ed25519", console_log="/w/console.log",
                 console_sock="/w/console.sock", qmp_sock="/w/qmp.sock", workdir="/w",
                 qemu_binary="qemu-system-x86_64", started_at=1700000000.5, boot_seconds=5.1)
    assert VMState.from_json(st.to_json()) == st
    (tmp_path / "vm.json").write_text(st.to_json())
    assert read_state(tmp_path) == st
    assert not st.alive  # pid 1234 is not a QEMU with that qmp socket


def test_state_errors(tmp_path):
    with pytest.raises(VMStateError, match="no VM state"):
        read_state(tmp_path)
    (tmp_path / "vm.json").write_text('{"version": 99}')
    with pytest.raises(VMStateError, match="unreadable"):
        read_state(tmp_path)


def test_hostfwd_bind_error_parsing():
    err = ("qemu-system-x86_64: -netdev user,id=hnet0,restrict=on,hostfwd=tcp:127.0.0.1:40343-:22: "
           "Could not set up host forwarding rule 'tcp:127.0.0.1:40343-:22'\n")
    assert hostfwd_bind_failed(err) == 40343
    assert hostfwd_bind_failed("qemu-system-x86_64: -device nosuch: 'nosuch' is not a valid device model name") is None


def test_free_port_helpers():
    import socket

    port = pick_free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not port_is_free(s.getsockname()[1])
