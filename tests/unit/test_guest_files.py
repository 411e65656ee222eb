"""The files that run in the guest (``harness/guest/files/``): shellcheck-clean POSIX sh that
busybox and dash parse, and in agreement with the host side of the protocol."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from harness.guest import protocol
from harness.guest.dmesg import cut_after_mark, mark_command, mark_line
from harness.guest.protocol import guest_cmdline, sshkey_param
from harness.resources import guest_files_dir
from harness.vm import console as con

FILES = sorted(p for p in guest_files_dir().iterdir() if p.is_file() and not p.name.startswith("."))
INIT = guest_files_dir() / "init"


def test_guest_files_are_the_expected_ones():
    assert {"init", "cxl-setup.sh"} <= {p.name for p in FILES}


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (scripts/install-host-deps)")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_shellcheck_clean(path):
    r = subprocess.run(["shellcheck", "-x", "-s", "sh", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("sh", [["busybox", "sh"], ["dash"]], ids=["busybox", "dash"])
def test_shell_parses_it(path, sh):
    if shutil.which(sh[0]) is None:
        pytest.skip(f"{sh[0]} not installed")
    r = subprocess.run([*sh, "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_every_guest_file_is_a_posix_sh_script():
    for path in FILES:
        assert path.read_text().startswith("#!/bin/sh\n"), path.name


def test_init_reads_every_kernel_parameter_and_prints_every_milestone():
    text = INIT.read_text()
    for param in protocol.CMDLINE_PARAMS:
        assert f"{param}=*)" in text, param
    for line in (*protocol.MILESTONES, protocol.MILESTONE_MODPROBE_FAILED, protocol.MILESTONE_NETWORK_FAILED,
                 protocol.MILESTONE_SSHD_FAILED):
        assert f'echo "{line}' in text, line
    assert f"h_ip={protocol.GUEST_IP}" in text and f"h_gw={protocol.GUEST_GW}" in text
    assert f"h_host={protocol.DEFAULT_HOSTNAME}" in text
    assert f'"$h_init" = {protocol.INIT_POWEROFF}' in text and f'"$h_init" != {protocol.INIT_SHELL}' in text
    assert f"-p {protocol.GUEST_SSH_PORT} " in text


def test_console_recognises_the_protocols_milestone_lines():
    assert con.parse_milestone(protocol.MILESTONE_INIT) == con.INIT_RUNNING
    assert con.parse_milestone(f"{protocol.MILESTONE_MODULES} (7)") == con.MODULES_LOADED
    assert con.parse_milestone(f"{protocol.MILESTONE_NETWORK} 10.0.2.15") == con.NETWORK_UP
    assert con.parse_milestone(protocol.MILESTONE_SSHD) == con.SSHD_READY
    assert con.parse_milestone(protocol.MILESTONE_SHELL) is None
    for failed in (protocol.MILESTONE_MODPROBE_FAILED, protocol.MILESTONE_NETWORK_FAILED,
                   protocol.MILESTONE_SSHD_FAILED):
        assert con.is_guest_failure(f"{failed} why") and con.parse_milestone(f"{failed} why") is None


def test_guest_paths_live_under_one_dir():
    assert protocol.GUEST_BIN_DIR.startswith(protocol.GUEST_LIB_DIR + "/")
    assert protocol.GUEST_TESTS_DIR.startswith(protocol.GUEST_LIB_DIR + "/")
    assert protocol.CXL_SETUP == f"{protocol.GUEST_BIN_DIR}/{protocol.guest_bin_name('cxl-setup.sh')}"


def test_sshkey_param_and_guest_cmdline():
    ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDYC user@host"
    assert sshkey_param(ed) == "AAAAC3NzaC1lZDI1NTE5AAAAIDYC"
    assert sshkey_param("ecdsa-sha2-nistp256 AAAAE2 c") == "ecdsa-sha2-nistp256:AAAAE2"
    assert guest_cmdline(modules=["cxl_acpi", "cxl_pci"], sshkey=ed, ip="10.0.2.15/24") == [
        "harness.modules=cxl_acpi,cxl_pci", "harness.sshkey=AAAAC3NzaC1lZDI1NTE5AAAAIDYC",
        "harness.ip=10.0.2.15/24"]
    assert guest_cmdline(init=protocol.INIT_POWEROFF) == ["harness.init=poweroff"]
    with pytest.raises(ValueError):
        guest_cmdline(hostname="a b")


@pytest.mark.parametrize("sh", [["busybox", "sh"], ["dash"]], ids=["busybox", "dash"])
def test_kmsg_mark_writes_the_line_the_host_cuts_after(sh, tmp_path):
    if shutil.which(sh[0]) is None:
        pytest.skip(f"{sh[0]} not installed")
    kmsg = tmp_path / "kmsg"
    text = "contract offline node 2 7"
    r = subprocess.run([*sh, str(guest_files_dir() / "kmsg-mark.sh"), text], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "HARNESS_KMSG": str(kmsg)})
    assert r.returncode == 0, r.stderr
    assert kmsg.read_text() == mark_line(text) + "\n"
    log = f"[ 1.0] a\n[ 2.0] {kmsg.read_text()}[ 3.0] b\n[ 4.0] c"
    assert cut_after_mark(log, text) == "[ 3.0] b\n[ 4.0] c"
    assert mark_command(text) == f"{protocol.KMSG_MARK} '{text}'"
    with pytest.raises(ValueError):
        mark_command("two\nlines")


def test_every_guest_program_the_host_names_is_a_file_that_sources_the_one_library():
    names = {p.name for p in FILES}
    programs = (protocol.CXL_SETUP, protocol.PROVISION, protocol.NODE_MEMORY, protocol.HOLD, protocol.CGROUP,
                protocol.SERVICES, protocol.KMSG_MARK)
    for program in programs:
        assert program.startswith(protocol.GUEST_BIN_DIR + "/")
        (source,) = [n for n in names if protocol.guest_bin_name(n) == program.rsplit("/", 1)[1]]
        text = (guest_files_dir() / source).read_text()
        assert '. "$LIB"' in text and "source=lib.sh" in text, source
    # lib.sh's helpers are defined there only: no guest file writes its own
    for path in FILES:
        if path.name != "lib.sh":
            for helper in ("fail", "wr", "rd", "wait_until", "blocks_in", "node_bytes", "kmsg_mark"):
                assert f"\n{helper}() {{" not in path.read_text(), f"{path.name} defines its own {helper}"
