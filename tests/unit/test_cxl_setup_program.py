"""The guest's CXL set-up program (``harness/guest/files/cxl-setup.sh``) run on the host.

The program takes its sysfs root from ``HARNESS_SYSFS``, so here it runs under the guest's
shell (busybox sh) and dash against a fake tree laid out like the guest's
``/sys/bus/cxl``, ``/sys/bus/dax`` and ``/sys/devices/system/memory`` (paths and values as a
cxl-single / cxl-switch guest shows them). The fake is static: files the kernel would create
in answer to a write (the region, its dax device, the memory blocks) exist from the start,
and a write just leaves its value in the file. So these tests check what the program reads,
which files it writes with which values, how it matches memdevs, and its error lines; the
order of the writes and the kernel's answers are what the live tests check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness.guest.protocol import SYSFS_ENV
from harness.guest.setup import parse_error, parse_setup_output, setup_plan
from harness.resources import guest_files_dir
from harness.topology import load, preset_names

PROGRAM = guest_files_dir() / "cxl-setup.sh"
SHELLS = [s for s in (["busybox", "sh"], ["dash"]) if shutil.which(s[0])]
pytestmark = pytest.mark.skipif(not SHELLS, reason="neither busybox nor dash on the host")

# Memdev device paths seen in guests (cxl-single's device; a cxl-switch device; a second bridge).
SINGLE = "pci0000:0c/0000:0c:00.0/0000:0d:00.0"
SWITCHED = "pci0000:0c/0000:0c:00.0/0000:0d:00.0/0000:0e:01.0/0000:10:00.0"
OTHER_BRIDGE = "pci0000:de/0000:de:00.0/0000:df:00.0"


def _w(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(target, path.parent))


def fake_sysfs(root: Path, memdevs: dict[str, tuple[str, str]]) -> Path:
    """A fake /sys: memdevs ``memN -> (PCI device path, serial)``, each with an endpoint port.

    Memdev i gets endpoint ``endpoint{i+2}`` with decoders .0 and .1 taken (mode ram) and .2,
    .10 free, so a lexical sort would pick .10 where the kernel's numeric order gives .2.
    Root decoder 0.0 hands out ``region0``, whose dax device ``dax0.0`` (kmem) covers memory
    blocks 82 and 83 (128 MiB blocks) on node 1.
    """
    sys = root / "sys"
    cxl = sys / "bus/cxl/devices"
    for i, (name, (pci, serial)) in enumerate(sorted(memdevs.items())):
        dev = sys / "devices" / pci / name
        _w(dev / "serial", serial)
        _link(cxl / name, dev)
        ep = cxl / f"endpoint{i + 2}"
        _link(ep / "uport", dev)
        for d, mode, size in ((0, "ram", "0x10000000"), (1, "ram", "0x10000000"), (2, "none", "0"), (10, "none", "0")):
            _w(cxl / f"decoder{i + 2}.{d}/mode", mode)
            _w(cxl / f"decoder{i + 2}.{d}/dpa_size", size)
    _w(cxl / "decoder0.0/create_ram_region", "region0")
    region = cxl / "region0"
    for f, v in (("interleave_granularity", "256"), ("interleave_ways", "0"), ("size", "0x0"), ("commit", "0"),
                 ("target0", ""), ("target1", "")):
        _w(region / f, v)
    (region / "dax_region0/dax0.0").mkdir(parents=True)
    _w(sys / "bus/cxl/drivers/cxl_region/bind", "")
    dax = sys / "bus/dax"
    (dax / "drivers/kmem").mkdir(parents=True)
    (dax / "drivers/device_dax").mkdir(parents=True)
    _w(dax / "drivers/kmem/new_id", "")
    _w(dax / "devices/dax0.0/resource", "0x290000000")
    _w(dax / "devices/dax0.0/size", str(256 << 20))
    _w(dax / "devices/dax0.0/target_node", "1")
    _link(dax / "devices/dax0.0/driver", dax / "drivers/kmem")
    mem = sys / "devices/system/memory"
    _w(mem / "block_size_bytes", "8000000")
    _w(mem / "auto_online_blocks", "offline")
    for b in (81, 82, 83, 84):
        _w(mem / f"memory{b}/state", "offline")
        (mem / f"memory{b}/node{1 if b in (82, 83) else 0}").mkdir()
    _w(sys / "kernel/mm/numa/demotion_enabled", "false")
    return sys.resolve()


def run(sh: list[str], sysfs: Path, plan: str, tmp: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """The program on ``plan``; every write it makes is traced to ``tmp/trace``."""
    plan_file = tmp / "plan"
    plan_file.write_text(plan)
    env = {**os.environ, SYSFS_ENV: str(sysfs), "HARNESS_DEV": str(tmp / "dev"), "TMPDIR": str(tmp),
           "HARNESS_TRACE": str(tmp / "trace")}
    return subprocess.run([*sh, str(PROGRAM), str(plan_file)], capture_output=True, text=True, timeout=timeout,
                          env=env)


def read(path: Path) -> str:
    return path.read_text().strip()


SINGLE_PLAN = """# cxl-single, movable, demotion
memdevs 1 5
memdev cxl-vmem0 0c/00.0/00.0 -
region 0 ram 1 256 268435456 268435456 system-ram-movable cxl-vmem0
demotion true
"""


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_region_writes_and_result_lines(sh, tmp_path):
    sysfs = fake_sysfs(tmp_path, {"mem0": (SINGLE, "0x0")})
    r = run(sh, sysfs, SINGLE_PLAN, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    cxl = sysfs / "bus/cxl/devices"
    # The region's name written back, its geometry, the numerically first free decoder.
    assert read(cxl / "decoder0.0/create_ram_region") == "region0"
    assert read(cxl / "region0/interleave_ways") == "1"
    assert read(cxl / "region0/interleave_granularity") == "256"
    assert (read(cxl / "decoder2.2/mode"), read(cxl / "decoder2.2/dpa_size")) == ("ram", "268435456")
    assert (read(cxl / "decoder2.10/mode"), read(cxl / "decoder2.10/dpa_size")) == ("none", "0")
    assert read(cxl / "region0/size") == "268435456"
    assert read(cxl / "region0/target0") == "decoder2.2"
    assert read(cxl / "region0/commit") == "1"
    assert read(sysfs / "bus/cxl/drivers/cxl_region/bind") == "region0"
    # The dax range's blocks (and only those) onlined movable; auto_online_blocks restored.
    mem = sysfs / "devices/system/memory"
    assert [read(mem / f"memory{b}/state") for b in (81, 82, 83, 84)] == [
        "offline", "online_movable", "online_movable", "offline"]
    assert read(mem / "auto_online_blocks") == "offline"
    assert read(sysfs / "kernel/mm/numa/demotion_enabled") == "true"
    assert r.stdout.splitlines() == [
        "memdev cxl-vmem0 mem0 pci=0c/00.0/00.0 serial=0x0",
        "region region0 committed size=268435456 node=1 mode=ram online=system-ram-movable dax=dax0.0 "
        "memdevs=mem0 decoders=decoder2.2",
        "demotion enabled=true",
        "done regions=1",
    ]
    res = parse_setup_output(r.stdout)
    assert res.memdevs == {"cxl-vmem0": "mem0"} and res.demotion is True
    assert [(g.name, g.size, g.node, g.dax, g.decoders) for g in res.regions] == [
        ("region0", 256 << 20, 1, "dax0.0", ("decoder2.2",))]
    assert not list(tmp_path.glob("cxl-setup.*")), "the temporary error file is removed"


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_writes_in_the_kernels_order(sh, tmp_path):
    """The order cxl create-region uses: geometry before DPA, targets after size, commit
    after every target, the driver bind after commit, blocks onlined last."""
    sysfs = fake_sysfs(tmp_path, {"mem0": (SINGLE, "0x0")})
    assert run(sh, sysfs, SINGLE_PLAN, tmp_path).returncode == 0
    writes = [line.split(" ", 1) for line in (tmp_path / "trace").read_text().splitlines()]
    assert [(os.path.relpath(f, sysfs), v) for f, v in writes] == [
        ("bus/cxl/devices/decoder0.0/create_ram_region", "region0"),
        ("bus/cxl/devices/region0/interleave_granularity", "256"),
        ("bus/cxl/devices/region0/interleave_ways", "1"),
        ("bus/cxl/devices/decoder2.2/mode", "ram"),
        ("bus/cxl/devices/decoder2.2/dpa_size", "268435456"),
        ("bus/cxl/devices/region0/size", "268435456"),
        ("bus/cxl/devices/region0/target0", "decoder2.2"),
        ("bus/cxl/devices/region0/commit", "1"),
        ("devices/system/memory/auto_online_blocks", "online_movable"),
        ("bus/cxl/drivers/cxl_region/bind", "region0"),
        ("devices/system/memory/memory82/state", "online_movable"),
        ("devices/system/memory/memory83/state", "online_movable"),
        ("kernel/mm/numa/demotion_enabled", "true"),
    ]


# Seen in guests: memdev device paths and the key the topology gives each device.
GUEST_PATHS = {
    "pci0000:0c/0000:0c:00.0/0000:0d:00.0/0000:0e:00.0/0000:0f:00.0": "0c/00.0/00.0/00.0/00.0",
    SWITCHED: "0c/00.0/00.0/01.0/00.0",
    OTHER_BRIDGE: "de/00.0/00.0",
    SINGLE: "0c/00.0/00.0",
}


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
@pytest.mark.parametrize("path,key", sorted(GUEST_PATHS.items()))
def test_pci_key_of_guest_paths(sh, path, key, tmp_path):
    sysfs = fake_sysfs(tmp_path, {"mem3": (path, "0x0")})
    r = run(sh, sysfs, f"memdev d {key} -\n", tmp_path)
    assert r.returncode == 0 and parse_setup_output(r.stdout).memdevs == {"d": "mem3"}, r.stdout


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_memdevs_matched_by_pci_path_not_probe_order(sh, tmp_path):
    # Probe order puts the switch device first as mem0; the topology lists the other one first.
    sysfs = fake_sysfs(tmp_path, {"mem0": (SWITCHED, "0x9"), "mem1": (OTHER_BRIDGE, "0x0")})
    plan = "memdevs 2 5\nmemdev a de/00.0/00.0 -\nmemdev b 0c/00.0/00.0/01.0/00.0 9\n"
    r = run(sh, sysfs, plan, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert parse_setup_output(r.stdout).memdevs == {"a": "mem1", "b": "mem0"}
    assert "memdev b mem0 pci=0c/00.0/00.0/01.0/00.0 serial=0x9" in r.stdout.splitlines()


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_unknown_pci_path_lists_the_keys_found(sh, tmp_path):
    sysfs = fake_sysfs(tmp_path, {"mem0": (SWITCHED, "0x0"), "mem12": (OTHER_BRIDGE, "0x0")})
    r = run(sh, sysfs, "memdev a 0c/00.0/00.0 -\n", tmp_path)
    assert r.returncode == 1
    step, file, msg = parse_error(r.stdout)
    assert (step, file) == ("find memdev a", str(sysfs / "bus/cxl/devices"))
    assert msg == "no memdev at PCI path 0c/00.0/00.0; found: mem0=0c/00.0/00.0/01.0/00.0 mem12=de/00.0/00.0"


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_serial_mismatch_is_an_error(sh, tmp_path):
    sysfs = fake_sysfs(tmp_path, {"mem0": (SINGLE, "0x8")})
    r = run(sh, sysfs, "memdev a 0c/00.0/00.0 7\n", tmp_path)
    assert r.returncode == 1
    assert parse_error(r.stdout) == ("find memdev a", str(sysfs / "bus/cxl/devices/mem0/serial"),
                                     "serial 0x8, the topology says 7")


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_failed_write_names_step_file_and_errno(sh, tmp_path):
    sysfs = fake_sysfs(tmp_path, {"mem0": (SINGLE, "0x0")})
    commit = sysfs / "bus/cxl/devices/region0/commit"
    commit.unlink()
    commit.mkdir()  # writing to it fails like a refused sysfs write
    r = run(sh, sysfs, SINGLE_PLAN, tmp_path)
    assert r.returncode == 1, r.stdout
    step, file, msg = parse_error(r.stdout)
    assert (step, file) == ("commit", str(commit))
    assert msg == f"writing '1': cannot create {commit}: Is a directory" or \
        msg == f"writing '1': can't create {commit}: Is a directory", msg
    assert not any(line.startswith(("region ", "done")) for line in r.stdout.splitlines())
    assert read(sysfs / "devices/system/memory/auto_online_blocks") == "offline"
    assert read(sysfs / "kernel/mm/numa/demotion_enabled") == "false", "later steps did not run"


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_wait_times_out_with_its_error_line(sh, tmp_path):
    sysfs = fake_sysfs(tmp_path, {"mem0": (SINGLE, "0x0")})
    t0 = time.monotonic()
    r = run(sh, sysfs, "memdevs 2 1\n", tmp_path)
    elapsed = time.monotonic() - t0
    assert r.returncode == 1
    assert parse_error(r.stdout) == ("find memdevs", str(sysfs / "bus/cxl/devices"),
                                     "1 CXL memdevs after 1 s, the topology has 2 (cxl_pci/cxl_mem loaded?)")
    assert 1.0 <= elapsed < 5, f"waited {elapsed:.1f} s for a 1 s timeout"


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
@pytest.mark.parametrize("plan,line,msg", [
    ("demotion true\nfrobnicate 1\n", 2, "unknown step 'frobnicate'"),
    ("demotion true\nmemdevs two 5\n", 2, "COUNT 'two' is not a number"),
    ("memdev a 0c/00.0/00.0 -\nregion 0 ram 1 256 1 1 system-ram b\n", 2,
     "device 'b' has no memdev line before this region"),
    ("demotion true\nregion 0 ram 1 256 1 1 online a\n", 2,
     "ONLINE 'online' is not system-ram, system-ram-movable or devdax"),
    ("# c\n\ndemotion maybe\n", 3, "demotion 'maybe' is not true or false"),
    ("memdev a/b 0c/00.0 -\n", 1, "bad device id 'a/b'"),
])
def test_bad_plan_is_refused_before_any_write(sh, plan, line, msg, tmp_path):
    sysfs = fake_sysfs(tmp_path, {"mem0": (SINGLE, "0x0")})
    r = run(sh, sysfs, plan, tmp_path)
    assert r.returncode == 2
    assert parse_error(r.stdout) == ("plan", str(tmp_path / "plan"), f"line {line}: {msg}")
    assert read(sysfs / "kernel/mm/numa/demotion_enabled") == "false"


@pytest.mark.parametrize("preset", [p for p in preset_names() if load(p).topology.guest.regions
                                    or load(p).topology.guest.demotion is not None])
def test_every_preset_plan_passes_the_programs_check(preset, tmp_path):
    """The Python planner and the shell's plan reader agree: the check phase accepts every
    preset's plan, so the program gets as far as its first wait (short-cut to 0 s here)."""
    plan = setup_plan(load(preset).topology).replace(" 30\n", " 0\n")
    empty = tmp_path / "sys"
    empty.mkdir()
    r = run(SHELLS[0], empty, plan, tmp_path)
    err = parse_error(r.stdout)
    assert err is not None and err[0] != "plan", r.stdout


# ---------------------------------------------------------------- pmem regions and their labels

PMEM_PLAN = """# cxl-pmem-file
memdevs 1 5
memdev pmem0 0c/00.0/00.0 7
region 0 pmem 1 256 268435456 268435456 devdax pmem0
"""


def fake_pmem(root: Path, *, free: int, namespace_mode: str = "dax", dax: bool = True) -> Path:
    """fake_sysfs plus what a pmem region adds (as a cxl-pmem-file guest shows it): the
    region's uuid and resource, the nvdimm region cxl_pmem makes at that resource (probed:
    dax_seed set), its ``available_size`` (``free`` of 256 MiB; less when the label area
    describes a namespace), namespace0.0 in ``namespace_mode``, and, with ``dax``, the
    nd_dax device dax0.0 holding it with its dax-bus device bound to device_dax."""
    sys = fake_sysfs(root, {"mem0": (SINGLE, "0x7")})
    cxl = sys / "bus/cxl/devices"
    _w(cxl / "decoder0.0/create_pmem_region", "region0")
    _w(cxl / "region0/uuid", "")
    _w(cxl / "region0/resource", "0x110000000")
    nd = sys / "bus/nd/devices/region0"
    _w(nd / "resource", "0x110000000")
    _w(nd / "size", str(256 << 20))
    _w(nd / "available_size", str(free))
    _w(nd / "dax_seed", "dax0.1")
    _w(nd / "namespace0.0/size", str(256 << 20 if free == 0 else 0))
    _w(nd / "namespace0.0/mode", namespace_mode)
    (sys / "bus/nd/drivers/dax_pmem").mkdir(parents=True)
    daxbus = sys / "bus/dax"
    if dax:
        _w(nd / "dax0.0/namespace", "namespace0.0")
        (nd / "dax0.0/dax0.0").mkdir()
        (daxbus / "devices/dax0.0/driver").unlink()
        _link(daxbus / "devices/dax0.0/driver", daxbus / "drivers/device_dax")
    else:
        shutil.rmtree(daxbus / "devices/dax0.0")
    return sys


def fake_ndctl(tmp: Path, *, fails: str | None = None) -> Path:
    """The guest's ndctl as far as the program uses it: records its arguments; with
    ``fails``, prints that (ndctl's last line) and exits 1."""
    nd = tmp / "ndctl"
    body = f'echo "{fails}" >&2; exit 1' if fails else "exit 0"
    nd.write_text(f'#!/bin/sh\necho "$*" >> "{tmp}/ndctl.calls"\n{body}\n')
    nd.chmod(0o755)
    (tmp / "dev").mkdir(exist_ok=True)
    (tmp / "dev/dax0.0").write_text("")
    return nd


def run_pmem(sh: list[str], sysfs: Path, tmp: Path, ndctl: Path) -> subprocess.CompletedProcess:
    plan_file = tmp / "plan"
    plan_file.write_text(PMEM_PLAN)
    env = {**os.environ, SYSFS_ENV: str(sysfs), "HARNESS_DEV": str(tmp / "dev"), "TMPDIR": str(tmp),
           "HARNESS_TRACE": str(tmp / "trace"), "HARNESS_NDCTL": str(ndctl)}
    return subprocess.run([*sh, str(PROGRAM), str(plan_file)], capture_output=True, text=True, timeout=60, env=env)


def ndctl_calls(tmp: Path) -> list[str]:
    f = tmp / "ndctl.calls"
    return f.read_text().splitlines() if f.exists() else []


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_pmem_region_on_empty_labels_creates_a_devdax_namespace(sh, tmp_path):
    sysfs = fake_pmem(tmp_path, free=256 << 20)
    r = run_pmem(sh, sysfs, tmp_path, fake_ndctl(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert ndctl_calls(tmp_path) == ["create-namespace -m devdax -r region0"]
    assert len(read(sysfs / "bus/cxl/devices/region0/uuid")) == 36, "a pmem region gets a uuid"
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("region ")]
    assert line == ["region region0 committed size=268435456 node=1 mode=pmem online=devdax dax=dax0.0 "
                    "memdevs=mem0 decoders=decoder2.2 namespace=namespace0.0 labels=created"]
    g = parse_setup_output(r.stdout).regions[0]
    assert (g.dax, g.namespace, g.labels) == ("dax0.0", "namespace0.0", "created")


@pytest.mark.parametrize("sh", SHELLS, ids=lambda s: s[0])
def test_pmem_region_whose_labels_hold_a_namespace_reuses_it(sh, tmp_path):
    """A second boot of file-backed pmem: the nvdimm region has no free capacity because the
    label area describes the first boot's namespace; ndctl create-namespace (which would fail
    with 'No space left on device') is not run and that namespace's dax device is used."""
    sysfs = fake_pmem(tmp_path, free=0)
    r = run_pmem(sh, sysfs, tmp_path, fake_ndctl(tmp_path, fails="failed to create namespace: No space left on device"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert ndctl_calls(tmp_path) == []
    g = parse_setup_output(r.stdout).regions[0]
    assert (g.dax, g.namespace, g.labels, g.online) == ("dax0.0", "namespace0.0", "reused", "devdax")


def test_pmem_labels_for_a_namespace_that_is_not_devdax_fail_without_reformatting(tmp_path):
    """Labels describe an fsdax namespace (no dax device comes up): the program names it and
    the two ways out, and runs no ndctl (reformatting would destroy the data)."""
    sysfs = fake_pmem(tmp_path, free=0, namespace_mode="memory", dax=False)
    t0 = time.monotonic()
    r = run_pmem(SHELLS[0], sysfs, tmp_path, fake_ndctl(tmp_path))
    assert r.returncode == 1, r.stdout
    assert ndctl_calls(tmp_path) == []
    step, file, msg = parse_error(r.stdout)
    assert (step, file) == ("reuse namespace", str(sysfs / "bus/nd/devices/region0"))
    assert msg.startswith("the label area holds namespace0.0 (fsdax) from an earlier boot and no devdax device "
                          "came up within 10 s;"), msg
    assert "ndctl create-namespace -f -e NAMESPACE -m devdax" in msg and "backing files" in msg
    assert 10 <= time.monotonic() - t0 < 20


def test_pmem_create_failure_quotes_ndctl(tmp_path):
    sysfs = fake_pmem(tmp_path, free=256 << 20)
    r = run_pmem(SHELLS[0], sysfs, tmp_path, fake_ndctl(tmp_path, fails="failed to create namespace: Invalid argument"))
    assert r.returncode == 1
    assert parse_error(r.stdout) == ("create namespace", str(sysfs / "bus/nd/devices/region0"),
                                     "ndctl create-namespace -m devdax -r region0: "
                                     "failed to create namespace: Invalid argument")
