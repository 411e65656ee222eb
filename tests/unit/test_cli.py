"""The CLI's topology commands, run in-process (no guest involved)."""

import json

from harness.cli.main import format_argv, main


def test_validate_presets_exit_0(capsys):
    from harness.resources import presets_dir
    files = sorted(str(p) for p in presets_dir().glob("*.yaml"))
    assert main(["validate", *files]) == 0
    assert capsys.readouterr().out.count("ok ") == len(files)


def test_validate_bad_file_exit_2_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\nnodes:\n  - {id: 0, cpus: 0-1, memory: 1 GB}\n")
    assert main(["validate", str(bad)]) == 125
    errtext = capsys.readouterr().err.strip()
    assert errtext.count("\n") == 0
    assert "nodes[0].memory" in errtext and "Traceback" not in errtext


def test_unknown_preset_suggests(capsys):
    assert main(["validate", "cxl-singel"]) == 125
    assert "did you mean 'cxl-single'" in capsys.readouterr().err


def test_qemu_cmd_json_is_argv(capsys):
    assert main(["qemu-cmd", "numa-basic", "--json", "--no-check"]) == 0
    argv = json.loads(capsys.readouterr().out)
    assert argv[0].endswith("qemu-system-x86_64") and "-numa" in argv


def test_format_argv_one_option_per_line():
    text = format_argv(["qemu", "-m", "2G", "-numa", "node,nodeid=0,cpus=0-1", "-S"])
    assert text.splitlines() == ["qemu \\", "    -m 2G \\", "    -numa node,nodeid=0,cpus=0-1 \\", "    -S"]
