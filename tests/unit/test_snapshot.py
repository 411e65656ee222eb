"""The pure parts of snapshots: which machines can have one, the RAM-in-files argv, the cache key.
The live pair of tests (tests/live/test_fresh_vm_live.py) shows a restored guest is clean."""

from __future__ import annotations

from pathlib import Path

from harness.boot.snapshot import snapshot_key
from harness.qemu.argv import machine_argv
from harness.topology import load
from harness.vm.snapshot import ram_files, ram_files_argv, snapshot_blocker


def argv(preset: str) -> list[str]:
    return machine_argv(load(preset).topology, accel="tcg", tcg_thread="multi", files_dir="/files")


def test_ram_backends_become_files_shared_to_take_and_private_read_only_to_restore():
    a = argv("numa-basic")
    take = ram_files_argv(a, Path("/snap/ram"), restore=False)
    back = ram_files_argv(a, Path("/snap/ram"), restore=True)
    objects = [v for o, v in zip(take, take[1:]) if o == "-object"]
    assert objects == ["memory-backend-file,id=hmem-node0,size=1G,mem-path=/snap/ram/hmem-node0.ram,share=on",
                       "memory-backend-file,id=hmem-node1,size=1G,mem-path=/snap/ram/hmem-node1.ram,share=on"]
    assert [v for o, v in zip(back, back[1:]) if o == "-object"][0] == (
        "memory-backend-file,id=hmem-node0,size=1G,mem-path=/snap/ram/hmem-node0.ram,share=off,readonly=on,rom=off")
    rest = [x for x in take if not x.startswith("memory-backend")]
    assert rest == [x for x in a if not x.startswith("memory-backend")]  # nothing else changes
    assert ram_files(a, Path("/r")) == {"hmem-node0": Path("/r/hmem-node0.ram"), "hmem-node1": Path("/r/hmem-node1.ram")}


def test_a_comma_in_the_directory_is_escaped():
    got = ram_files_argv(argv("numa-basic"), Path("/a,b"), restore=False)
    assert any("mem-path=/a,,b/hmem-node0.ram" in x for x in got)


def test_cxl_machines_cannot_be_restored_and_say_why():
    assert snapshot_blocker(argv("numa-basic")) is None
    assert snapshot_blocker(argv("memory-only")) is None
    why = snapshot_blocker(argv("cxl-single"))
    assert why is not None and "cxl-type3" in why and "save no device state" in why


def test_every_input_changes_the_key():
    base = {"format": 1, "qemu": ["/q", 1, 2, [10, 0, 2]], "machine": ["-m", "2G"], "kernel": "k", "initrd": "i",
            "append": "", "modules": [], "topology": "t", "accel": "tcg"}
    keys = {snapshot_key(base)}
    for field, other in (("qemu", ["/q", 1, 2, [10, 1, 0]]), ("machine", ["-m", "3G"]), ("kernel", "k2"),
                         ("initrd", "i2"), ("append", "x=1"), ("modules", ["cxl_acpi"]), ("topology", "t2"),
                         ("accel", "kvm")):
        keys.add(snapshot_key({**base, field: other}))
    assert len(keys) == 9
    assert snapshot_key(dict(reversed(list(base.items())))) == snapshot_key(base)
