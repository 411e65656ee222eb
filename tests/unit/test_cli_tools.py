"""The composable commands: JSON output, doctor, ssh-config, qmp arguments, schema, start-up cost.
No guest: the live half is tests/live/test_cli_tools_live.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import harness
from harness.cli.main import main
from harness.errors import UsageError

HEAVY = ("paramiko", "cryptography", "qemu", "rich", "yaml", "harness.topology", "harness.boot", "harness.vm.attached")


def _imported_by(code: str) -> set[str]:
    probe = code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_version_imports_nothing_heavy():
    """harness --version (the same main() the console script calls) loads none of the heavy libraries."""
    mods = _imported_by("import sys; sys.argv = ['harness', '--version']\nfrom harness.cli.main import main; main()")
    assert not [m for m in mods if m.split(".")[0] in HEAVY or m.startswith(HEAVY)], sorted(mods)


def test_ssh_command_line_is_parsed_without_the_boot_machinery():
    mods = _imported_by("from harness.cli.main import build_parser\n"
                        "build_parser('ssh').parse_args(['ssh', 'x'])")
    assert not [m for m in mods if m.startswith(("rich", "harness.boot", "harness.topology", "qemu"))], sorted(mods)


def test_help_still_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in ("list", "validate", "schema", "qemu-cmd", "boot", "up", "ssh-config", "qmp", "doctor", "selftest"):
        assert cmd in text


def test_list_json_keys(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    first = data["presets"][0]
    assert set(first) == {"name", "path", "nodes", "cxl_devices", "description"}
    assert any(p["name"] == "cxl-single" and p["cxl_devices"] == 1 for p in data["presets"])


def test_status_json_keys(tmp_path, monkeypatch, capsys):
    from harness.vm.state import VMState

    monkeypatch.setenv("NUMA_HARNESS_STATE", str(tmp_path))
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"vms": []}
    d = tmp_path / "gone"
    d.mkdir()
    st = VMState(name="gone", pid=2 ** 22 + 7, ssh_port=2222, key=str(d / "id_ed25519"), console_log=str(d / "console.log"),
                 console_sock=str(d / "c.sock"), qmp_sock=str(d / "qmp.sock"), workdir=str(d), qemu_binary="qemu",
                 started_at=time.time())
    (d / "vm.json").write_text(st.to_json())
    (d / "meta.json").write_text(json.dumps({"topology": "cxl-single", "kernel": "k", "accel": "tcg"}))
    assert main(["status", "--json"]) == 0
    (vm,) = json.loads(capsys.readouterr().out)["vms"]
    assert set(vm) == {"name", "topology", "kernel", "accel", "state", "pid", "ssh_port", "up_seconds", "console_log",
                       "qmp_socket", "ssh_key", "workdir"}
    assert vm["state"] == "dead" and vm["up_seconds"] is None and vm["topology"] == "cxl-single"


def test_kernel_check_json(tmp_path, capsys):
    cfg = tmp_path / ".config"
    cfg.write_text("CONFIG_NUMA=y\nCONFIG_ACPI_HMAT=y\n")
    status = main(["kernel", "check", "--kernel-config", str(cfg), "cxl-single", "numa-basic", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"kernel", "ok", "checks"} and data["ok"] is False and status == 1
    by = {c["name"]: c for c in data["checks"]}
    assert set(by["cxl-single"]) == {"kind", "name", "missing", "recommended"}
    assert any("CXL" in m for m in by["cxl-single"]["missing"])


def test_selftest_json_shape():
    from harness.cli.selftest import outcome_json
    from harness.selftest.ktap import parse_ktap
    from harness.selftest.run import Outcome

    o = Outcome(suite="mm", test="t.sh", exit_status=0, timed_out=False, seconds=1.23, output="TAP version 13\n1..1\nok 1 a\n",
                report=parse_ktap("TAP version 13\n1..1\nok 1 a\n"))
    j = outcome_json(o)
    assert set(j) == {"suite", "test", "status", "seconds", "reason", "cases", "output"}
    assert j["status"] == "pass" and j["cases"] == [{"case": "a", "status": "pass", "reason": None, "diagnostics": []}]


def test_doctor_json_names_the_fix_and_fails_without_qemu(capsys):
    assert main(["doctor", "--json", "--qemu", "/nonexistent/qemu", "--no-kvm-probe"]) == 125
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    qemu = next(f for f in data["findings"] if f["check"] == "qemu")
    assert set(qemu) == {"check", "ok", "required", "detail", "fix", "data"}
    assert qemu["ok"] is False and qemu["required"] and "apt-get install qemu-system-x86" in qemu["fix"]
    checks = {f["check"] for f in data["findings"]}
    assert {"guest-tools", "cache", "default-kernel", "kvm", "pytest-plugin"} <= checks


def test_no_hint_names_a_repository_script():
    """A wheel user has no scripts/ directory: hints name harness commands or apt lines."""
    root = Path(harness.__file__).parent
    ours = sorted(p.name for p in (root.parent / "scripts").iterdir())  # the repository's scripts (not a kernel tree's)
    assert "install-host-deps" in ours
    pattern = re.compile(r"scripts/(" + "|".join(map(re.escape, ours)) + r")\b")
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_ssh_config_stanza():
    from harness.cli.vms import ssh_config
    from harness.vm.state import VMState

    st = VMState(name="x", pid=1, ssh_port=40022, key="/s/my vms/x/id_ed25519", console_log="", console_sock="",
                 qmp_sock="", workdir="", qemu_binary="", started_at=0.0)
    text = ssh_config("x", st, Path("/s/x/known_hosts"))
    lines = [ln.strip() for ln in text.splitlines()]
    assert lines[0] == "Host x" and "HostName 127.0.0.1" in lines and "Port 40022" in lines and "User root" in lines
    assert 'IdentityFile "/s/my vms/x/id_ed25519"' in lines
    assert "StrictHostKeyChecking yes" in lines and "UserKnownHostsFile /s/x/known_hosts" in lines
    assert "HostKeyAlias numa-harness-x" in lines
    loose = ssh_config("x", st, None)
    assert "StrictHostKeyChecking no" in loose and "UserKnownHostsFile /dev/null" in loose


def test_qmp_arguments():
    from harness.cli.vms import qmp_arguments

    assert qmp_arguments(None) is None
    assert qmp_arguments('{"id": "m0"}') == {"id": "m0"}
    with pytest.raises(UsageError, match="not JSON"):
        qmp_arguments("{id: m0}")
    with pytest.raises(UsageError, match="JSON object, not list"):
        qmp_arguments("[1]")


def test_qmp_and_ssh_config_on_no_vm_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NUMA_HARNESS_STATE", str(tmp_path))
    for argv in (["qmp", "nope", "query-status"], ["ssh-config", "nope"]):
        assert main(argv) == 125
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "no VM named 'nope'" in err


def test_schema_accepts_every_shipped_topology_and_refuses_typos(capsys):
    import jsonschema

    from harness.resources import presets_dir

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    root = Path(harness.__file__).parent.parent
    files = list(presets_dir().glob("*.yaml")) + list((root / "guest-tests" / "topologies").glob("*.yaml"))
    assert len(files) > 15
    for f in files:
        assert list(v.iter_errors(yaml.safe_load(f.read_text()))) == [], f
    bad = yaml.safe_load((presets_dir() / "cxl-single.yaml").read_text())
    bad["nodes"][0]["memroy"] = "1G"
    assert any("memroy" in e.message for e in v.iter_errors(bad))
    # the descriptions are the reference table's: one source
    from harness.topology.model import Topology
    from harness.topology.schema import reference_rows

    key, _tp, _default, doc = reference_rows(Topology)[0]
    assert schema["properties"][key]["description"] == doc


def test_qemu_cmd_passes_extra_arguments(capsys):
    assert main(["qemu-cmd", "numa-basic", "--json", "--no-check", "--qemu-arg=-s", "--qemu-arg=-trace",
                 "--qemu-arg=cxl_*"]) == 0
    argv = json.loads(capsys.readouterr().out)
    assert argv[-3:] == ["-s", "-trace", "cxl_*"]
    assert main(["qemu-cmd", "numa-basic", "--json", "--no-check", "--qemu-arg", "-s", "--qemu-arg", "-trace",
                 "--qemu-arg", "cxl_*"]) == 0  # the way people type it: QEMU's '-' options after a space
    assert json.loads(capsys.readouterr().out)[-3:] == ["-s", "-trace", "cxl_*"]


def test_harness_refuses_a_second_pause(capsys):
    from harness.boot.prepare import check_qemu_args

    check_qemu_args(["-s", "-trace", "x"])
    with pytest.raises(UsageError, match="starts QEMU paused itself"):
        check_qemu_args(["-s", "-S"])


def test_vm_argv_carries_extra_arguments_and_can_run_unpaused():
    from harness.qemu.bootargs import vm_argv

    kw = dict(kernel=Path("/k"), initrd=Path("/i"), append="", console_sock=Path("/c"), console_log=Path("/l"),
              qmp_sock=Path("/q"), ssh_port=2222)
    argv = vm_argv("qemu", ["-machine", "q35"], extra=["-s"], **kw)
    assert argv[-2:] == ["-s", "-S"]
    assert vm_argv("qemu", ["-machine", "q35"], paused=False, **kw)[-1] != "-S"
