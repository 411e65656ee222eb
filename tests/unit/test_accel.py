"""Pure accelerator logic: the probe's verdict, its command line, the cache key."""

from pathlib import Path

import pytest

from harness.vm import accel
from harness.vm.accel import choose_accel, judge_probe, probe_argv

CONSOLE_OK = "[    0.0] Linux version 6.12.1\nnuma-harness: init running\n[ 1.0] reboot: Power down\n"


def test_probe_success():
    assert judge_probe(0, "", CONSOLE_OK) is None


def test_probe_kvm_internal_error():
    err = ("KVM internal error. Suberror: 1\nextra data[0]: 0x0000000000000000\n"
           "RAX=0000000000000000 RBX=0000000000000000\n")
    assert judge_probe(None, err, "") == "KVM internal error. Suberror: 1"


def test_probe_msr_abort():
    err = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x2000e0c1b\n"
    assert judge_probe(-6, err, "") == "error: failed to set MSR 0x10a to 0x2000e0c1b"


def test_probe_timeout_and_no_init():
    assert "did not power off" in judge_probe(None, "", "[ 0.0] Linux version 6.12.1\n")
    assert "without reaching its init" in judge_probe(0, "", "[ 0.0] Linux version 6.12.1\n")
    assert judge_probe(1, "qemu: something odd\n", "").startswith("QEMU exited with status 1: qemu: something odd")


def test_probe_argv():
    argv = probe_argv("qemu", Path("/k"), Path("/i"), Path("/t/c.log"))
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert "harness.init=poweroff" in argv[argv.index("-append") + 1]
    assert "panic=-1" in argv[argv.index("-append") + 1]
    assert "-no-reboot" in argv


def test_tcg_and_bad_requests():
    c = choose_accel("tcg", "qemu", Path("/k"), Path("/i"))
    assert (c.accel, c.cpu) == ("tcg", "max,-hypervisor")
    with pytest.raises(ValueError):
        choose_accel("hvf", "qemu", Path("/k"), Path("/i"))


def test_kvm_device_problem_missing(tmp_path):
    assert "does not exist" in accel.kvm_device_problem(str(tmp_path / "kvm"))


def test_cache_key_includes_boot():
    assert accel.cache_key("q", "6.12", "b1") != accel.cache_key("q", "6.12", "b2")


def test_auto_verdict_is_cached_per_qemu_kernel_and_boot(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMA_HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "kvm_device_problem", lambda dev="/dev/kvm": None)
    calls = []

    def fake_probe(qemu, kernel, initrd, timeout=accel.PROBE_TIMEOUT):
        calls.append(qemu)
        return "KVM internal error. Suberror: 1"

    monkeypatch.setattr(accel, "probe_kvm", fake_probe)
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"not a bzImage")
    first = choose_accel("auto", "qemu-system-x86_64", kernel, tmp_path / "initrd")
    assert (first.accel, first.cpu) == ("tcg", "max,-hypervisor")
    assert first.reason == "KVM probe failed: KVM internal error. Suberror: 1; using TCG"
    again = choose_accel("auto", "qemu-system-x86_64", kernel, tmp_path / "initrd")
    assert again.accel == "tcg" and again.reason.endswith("(cached)")
    assert len(calls) == 1
    monkeypatch.setattr(accel, "boot_id", lambda: "another-boot")
    choose_accel("auto", "qemu-system-x86_64", kernel, tmp_path / "initrd")
    assert len(calls) == 2


def test_auto_without_usable_device_does_not_probe(monkeypatch):
    monkeypatch.setattr(accel, "kvm_device_problem", lambda dev="/dev/kvm": "/dev/kvm does not exist")
    monkeypatch.setattr(accel, "probe_kvm", lambda *a, **k: pytest.fail("probed"))
    c = choose_accel("auto", "q", Path("/k"), Path("/i"))
    assert c.accel == "tcg" and c.reason == "/dev/kvm does not exist; using TCG"


def test_a_topology_that_says_tcg_is_not_overridden_by_auto():
    from harness.boot.prepare import requested_accel

    assert requested_accel(None, "tcg") == "tcg" and requested_accel("auto", "tcg") == "tcg"
    assert requested_accel("auto", "auto") == "auto" and requested_accel(None, "auto") == "auto"
    assert requested_accel("kvm", "tcg") == "kvm"  # an explicit --accel kvm is the user's word
    assert requested_accel("tcg", "auto") == "tcg"


def test_cxl_presets_that_use_cxl_memory_run_under_tcg():
    from harness.topology import load, preset_names

    for name in preset_names():
        t = load(name).topology
        if t.guest.regions:
            assert t.machine.accel == "tcg", f"{name} uses CXL memory as RAM but does not ask for TCG"
