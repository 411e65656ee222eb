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


def test_square_brackets_in_user_text_print_literally(tmp_path, capsys):
    """Values like [rp0] or [/x] are data, not console markup: printed as written, no traceback."""
    for port in ("[rp0]", "[/x]", "[red]"):
        bad = tmp_path / "b.yaml"
        bad.write_text("description: x\nnodes:\n  - {id: 0, cpus: 0-1, memory: 1G}\ncxl:\n"
                       "  host_bridges: [{id: hb0, bus_nr: 12, root_ports: [{id: rp0}]}]\n"
                       f"  devices: [{{id: m0, port: '{port}', volatile: 256M}}]\n")
        assert main(["validate", str(bad)]) == 125
        errtext = capsys.readouterr().err
        assert f"port '{port}' does not exist" in errtext, errtext
        assert "Traceback" not in errtext


def test_directory_and_non_utf8_are_one_line(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 125
    assert "is a directory" in capsys.readouterr().err
    f = tmp_path / "l.yaml"
    f.write_bytes(b"description: caf\xe9\n")
    assert main(["validate", str(f)]) == 125
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not UTF-8: byte 0xe9 at offset 16" in err


def test_boot_summary_states_tcg_threading():
    from types import SimpleNamespace

    from harness.cli.boot import boot_summary
    from harness.qemu.limits import choose_tcg_thread

    p = SimpleNamespace(kernel=SimpleNamespace(origin="k [x]"), image=SimpleNamespace(reason="cached"),
                        accel=SimpleNamespace(accel="tcg", reason="TCG requested"), tcg_thread=choose_tcg_thread(4, 2))
    assert boot_summary(p).endswith("; TCG threads: single (4 vCPUs > 2 host cores: one thread per vCPU would starve them)")
