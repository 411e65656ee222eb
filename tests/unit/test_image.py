"""Pure logic of harness.image: module closure, cpio writer, cache keys, the image layout."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest

from harness.guest.protocol import CXL_SETUP, GUEST_BIN_DIR
from harness.image.build import (
    Inputs,
    guest_file_paths,
    guest_files_digest,
    image_key,
    image_tree,
    read_guest_files,
    rebuild_reason,
)
from harness.image.cpio import CpioWriter, Tree
from harness.image.host import parse_ldd
from harness.image.modules import (
    GUEST_MODULES,
    close_modules,
    filter_alias,
    module_name,
    parse_builtin,
    parse_modules_dep,
    render_modules_dep,
)
from harness.kernel.model import Kernel
from harness.resources import guest_files_dir

MODULES_DEP = """\
kernel/net/core/failover.ko.xz:
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz
kernel/drivers/nvdimm/libnvdimm.ko.xz:
kernel/drivers/nvdimm/nd_btt.ko.xz: kernel/drivers/nvdimm/libnvdimm.ko.xz
kernel/drivers/nvdimm/nd_pmem.ko.xz: kernel/drivers/nvdimm/nd_btt.ko.xz kernel/drivers/nvdimm/libnvdimm.ko.xz
kernel/drivers/cxl/cxl_pmem.ko.xz: kernel/drivers/nvdimm/libnvdimm.ko.xz
kernel/drivers/char/hw_random/virtio-rng.ko.xz:
kernel/sound/core/snd.ko.xz:
"""
BUILTIN = "kernel/drivers/cxl/core/cxl_core.ko\nkernel/drivers/cxl/cxl_port.ko\n"


def test_module_name_normalizes():
    assert module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz") == "virtio_rng"
    assert module_name("kernel/fs/9p/9p.ko") == "9p"
    assert module_name("extra/foo.ko.zst") == "foo"


def test_close_modules_puts_dependencies_first_and_skips_builtin():
    deps = parse_modules_dep(MODULES_DEP)
    paths, missing = close_modules(deps, ["virtio_net", "cxl_core", "nd_pmem", "virtio-rng", "nope"],
                                   parse_builtin(BUILTIN))
    assert paths == [
        "kernel/net/core/failover.ko.xz",
        "kernel/drivers/net/net_failover.ko.xz",
        "kernel/drivers/net/virtio_net.ko.xz",
        "kernel/drivers/nvdimm/libnvdimm.ko.xz",
        "kernel/drivers/nvdimm/nd_btt.ko.xz",
        "kernel/drivers/nvdimm/nd_pmem.ko.xz",
        "kernel/drivers/char/hw_random/virtio-rng.ko.xz",
    ]
    assert missing == ["nope"]
    assert "kernel/sound/core/snd.ko.xz" not in paths


def test_render_modules_dep_uses_decompressed_names():
    deps = parse_modules_dep(MODULES_DEP)
    paths, _ = close_modules(deps, ["cxl_pmem"])
    assert render_modules_dep(deps, paths) == (
        "kernel/drivers/nvdimm/libnvdimm.ko:\n"
        "kernel/drivers/cxl/cxl_pmem.ko: kernel/drivers/nvdimm/libnvdimm.ko\n"
    )


def test_filter_alias_keeps_included_modules():
    text = "alias virtio:d00000001v* virtio_net\nalias pci:v*d*sv*sd*bc05sc02i10* cxl_pci\nalias foo snd\n"
    assert filter_alias(text, {"virtio_net", "cxl_pci"}).splitlines() == text.splitlines()[:2]


def test_guest_modules_cover_the_topologies():
    for name in ("virtio_net", "net_failover", "failover", "cxl_acpi", "cxl_pci", "cxl_mem", "cxl_pmem",
                 "dax_cxl", "device_dax", "kmem", "dax_hmem", "libnvdimm", "nd_pmem"):
        assert name in GUEST_MODULES


def test_parse_ldd():
    out = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibnuma.so.1 => /lib/x86_64-linux-gnu/libnuma.so.1 (0x00007f58)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f58)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f58)
"""
    assert parse_ldd(out) == ["/lib/x86_64-linux-gnu/libnuma.so.1", "/lib/x86_64-linux-gnu/libc.so.6",
                              "/lib64/ld-linux-x86-64.so.2"]


def _archive() -> bytes:
    t = Tree()
    t.file("/init", b"#!/bin/sh\necho hi\n", 0o755)
    t.file("/usr/lib/numa-harness/guest-tests/t1", b"x" * 5, 0o755)
    t.symlink("/bin/sh", "busybox")
    t.dir("/root/.ssh", 0o700)
    t.chardev("/dev/console", 5, 1)
    buf = io.BytesIO()
    t.write(CpioWriter(buf))
    return buf.getvalue()


@pytest.mark.skipif(shutil.which("cpio") is None, reason="host cpio not installed")
def test_cpio_round_trip_with_host_cpio():
    data = _archive()
    assert len(data) % 4 == 0
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True, timeout=30, check=True)
    lines = listing.stdout.decode().splitlines()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in lines]
    # parents come before children, implicit parents exist
    assert names.index("usr") < names.index("usr/lib") < names.index("usr/lib/numa-harness/guest-tests/t1")
    assert set(names) >= {"init", "bin/sh", "root/.ssh", "dev/console", "dev", "root"}
    by_name = dict(zip(names, lines))
    assert by_name["init"].startswith("-rwxr-xr-x") and " root " in by_name["init"]
    assert by_name["root/.ssh"].startswith("drwx------")
    assert by_name["dev/console"].startswith("crw-------")
    assert "bin/sh -> busybox" in by_name["bin/sh"]
    content = subprocess.run(["cpio", "-i", "--to-stdout", "--quiet", "init"], input=data,
                             capture_output=True, timeout=30, check=True).stdout
    assert content == b"#!/bin/sh\necho hi\n"


def test_cpio_is_deterministic_and_rejects_duplicates():
    assert _archive() == _archive()
    w = CpioWriter(io.BytesIO())
    w.file("a", b"")
    with pytest.raises(ValueError):
        w.file("a", b"")


GROUPS = {"format": "1", "kernel": "k", "modules-list": "m", "guest-files": "i", "programs": "p",
          "guest-tests": "g", "hostkey": "h"}


def test_cache_key_changes_with_any_input():
    base = image_key(GROUPS)
    assert image_key(dict(GROUPS)) == base
    for g in GROUPS:
        assert image_key({**GROUPS, g: "changed"}) != base, g


def test_rebuild_reason_names_changed_groups():
    assert rebuild_reason(None, GROUPS) == "built: no cached image"
    assert rebuild_reason(GROUPS, {**GROUPS, "guest-files": "new"}) == "rebuilt: guest files changed"
    assert rebuild_reason(GROUPS, {**GROUPS, "kernel": "x", "guest-tests": "y"}) == (
        "rebuilt: kernel modules changed, guest tests changed")


def test_guest_files_go_to_init_and_the_bin_dir():
    assert guest_file_paths(["init", "cxl-setup.sh", "tool"]) == {
        "init": "/init", "cxl-setup.sh": f"{GUEST_BIN_DIR}/cxl-setup", "tool": f"{GUEST_BIN_DIR}/tool"}
    files = read_guest_files()
    assert files["/init"] == (guest_files_dir() / "init").read_bytes()
    assert files[CXL_SETUP] == (guest_files_dir() / "cxl-setup.sh").read_bytes()


def test_any_guest_file_change_changes_the_image_key():
    files = read_guest_files()
    base = guest_files_digest(files)
    assert guest_files_digest(dict(files)) == base
    assert guest_files_digest({**files, f"{GUEST_BIN_DIR}/new-helper": b"#!/bin/sh\n"}) != base, "a file added"
    assert guest_files_digest({**files, CXL_SETUP: files[CXL_SETUP] + b"\n"}) != base, "a file edited"
    without = {g: d for g, d in files.items() if g != CXL_SETUP}
    assert guest_files_digest(without) != base, "a file removed"


def test_image_tree_packs_every_guest_file_executable(tmp_path):
    bb = tmp_path / "busybox"
    bb.write_bytes(b"\x7fELF fake")
    key = tmp_path / "hostkey"
    key.write_bytes(b"k")
    files = read_guest_files()
    kernel = Kernel(image=tmp_path / "bzImage", config=None, modules_root=None, release="6.12.0", origin="test")
    inp = Inputs(guest_files=files, busybox=bb, applets=["bin/sh", "usr/bin/awk"], programs={}, libraries={},
                 kernel=kernel, mod_deps={}, mod_paths=[], mod_missing=[], guest_tests={}, hostkey=key, groups={})
    t = image_tree(inp)
    assert len(files) >= 2
    for guest, data in files.items():
        assert t.entries[guest] == ("file", data, 0o755), guest
    assert t.entries[GUEST_BIN_DIR] == ("dir", 0o755)
    assert t.entries["/bin/sh"] == ("link", "/bin/busybox")


# --------------------------------------------------------------------------- cached image check


def test_image_fingerprint_sees_truncation_and_either_end(tmp_path):
    from harness.image.cache import FINGERPRINT_SPAN, image_fingerprint

    f = tmp_path / "img.cpio"
    data = bytearray(i % 251 for i in range(3 * FINGERPRINT_SPAN + 17))
    f.write_bytes(data)
    whole = image_fingerprint(f)
    assert whole["size"] == len(data)
    f.write_bytes(data[: len(data) // 2])
    assert image_fingerprint(f)["size"] == len(data) // 2
    for pos in (0, len(data) - 1):
        changed = bytearray(data)
        changed[pos] ^= 0xFF
        f.write_bytes(changed)
        assert image_fingerprint(f)["ends_sha256"] != whole["ends_sha256"], pos
    f.write_bytes(data)
    assert image_fingerprint(f) == whole
    small = tmp_path / "small"
    small.write_bytes(b"070701")  # shorter than a span: hashed whole (twice), still deterministic
    assert image_fingerprint(small) == image_fingerprint(small)


def test_cached_image_problem():
    from harness.image.cache import cached_image_problem

    good = {"size": 100, "ends_sha256": "ab"}
    manifest = {"key": "k", "image": good}
    assert cached_image_problem(manifest, dict(good)) is None
    assert cached_image_problem(None, None) is None  # nothing cached: a first build, not a problem
    assert cached_image_problem(manifest, None) == "the cached image file is missing"
    assert cached_image_problem(None, good) == "the cached image has no manifest"
    assert cached_image_problem({"key": "k"}, good) == \
        "the cached image has no recorded size and checksum (an older harness built it)"
    assert cached_image_problem(manifest, {"size": 40, "ends_sha256": "ab"}) == \
        "the cached image is 40 bytes, its manifest says 100 (truncated?)"
    assert cached_image_problem(manifest, {"size": 100, "ends_sha256": "cd"}) == \
        "the cached image's checksum does not match its manifest (damaged)"
