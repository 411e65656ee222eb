"""Pure logic of harness.kernel (config, user, debian): .config parsing and checks, bzImage headers, apt output."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from harness.errors import KernelError
from harness.kernel.config import check_config, describe_missing, missing_options, parse_config
from harness.kernel.debian import parse_apt_depends, pick_kernel_package
from harness.kernel.model import Kernel
from harness.kernel.user import parse_bzimage_release, read_bzimage_release, user_kernel

CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"
CONFIG_CXL_BUS=y
CONFIG_CXL_PCI=m
# CONFIG_CXL_REGION_INVALIDATION_TEST is not set
CONFIG_NR_CPUS=64
CONFIG_LOCALVERSION=""
"""


def fake_bzimage(version: str | None = "6.12.117+deb12-amd64 (debian-kernel@lists.debian.org) #1 SMP",
                 magic: bytes = b"HdrS") -> bytes:
    """A minimal buffer with an x86 boot header and a kernel_version string."""
    data = bytearray(0x4000)
    data[0x202:0x206] = magic
    if version is not None:
        at = 0x3000
        struct.pack_into("<H", data, 0x20E, at - 0x200)
        raw = version.encode() + b"\0"
        data[at:at + len(raw)] = raw
    return bytes(data)


def test_parse_config_values_and_unset():
    cfg = parse_config(CONFIG)
    assert cfg["CONFIG_CXL_BUS"] == "y"
    assert cfg["CONFIG_CXL_PCI"] == "m"
    assert cfg["CONFIG_NR_CPUS"] == "64"
    assert cfg["CONFIG_CC_VERSION_TEXT"] == "gcc (Debian 12.2.0-14) 12.2.0"
    assert cfg["CONFIG_LOCALVERSION"] == ""
    assert "CONFIG_CXL_REGION_INVALIDATION_TEST" not in cfg


def test_missing_options_m_accepts_y_but_y_needs_y():
    cfg = parse_config(CONFIG)
    req = {"CXL_BUS": "m", "CONFIG_CXL_PCI": "y", "CONFIG_CXL_REGION_INVALIDATION_TEST": "y", "NR_CPUS": "64"}
    missing = missing_options(cfg, req)
    assert missing == [("CONFIG_CXL_PCI", "y", "m"), ("CONFIG_CXL_REGION_INVALIDATION_TEST", "y", None)]


def test_describe_missing_names_value_and_reason():
    lines = describe_missing([("CONFIG_CXL_MEM", "m", None), ("CONFIG_CXL_PCI", "y", "m")],
                             {"CXL_MEM": "topology needs it for CXL type-3 devices"})
    assert lines[0] == "CONFIG_CXL_MEM is not set (need y or m): topology needs it for CXL type-3 devices"
    assert lines[1] == "CONFIG_CXL_PCI is m (need y)"


def _kernel(tmp_path: Path, config_text: str | None) -> Kernel:
    cfg = None
    if config_text is not None:
        cfg = tmp_path / "config"
        cfg.write_text(config_text)
    return Kernel(image=tmp_path / "bzImage", config=cfg, modules_root=None, release="6.12.0", origin="user: test")


def test_check_config_raises_naming_every_missing_option(tmp_path):
    k = _kernel(tmp_path, CONFIG)
    with pytest.raises(KernelError) as ei:
        check_config(k, {"CONFIG_CXL_MEM": "m", "CONFIG_CXL_BUS": "y", "CONFIG_DEV_DAX_KMEM": "m"},
                     {"CONFIG_CXL_MEM": "topology needs it for CXL type-3 devices"})
    msg = str(ei.value)
    assert "CONFIG_CXL_MEM is not set (need y or m): topology needs it for CXL type-3 devices" in msg
    assert "CONFIG_DEV_DAX_KMEM is not set" in msg
    assert "CONFIG_CXL_BUS" not in msg
    assert ei.value.detail.count("\n") == 1


def test_check_config_passes_and_skips_unknown_config(tmp_path):
    check_config(_kernel(tmp_path, CONFIG), {"CXL_BUS": "y", "CXL_PCI": "m"})
    check_config(_kernel(tmp_path, None), {"CXL_MEM": "m"})  # unknown config: not checked


def test_bzimage_release_from_header():
    assert parse_bzimage_release(fake_bzimage()) == "6.12.117+deb12-amd64"


@pytest.mark.parametrize("data", [fake_bzimage(magic=b"XXXX"), fake_bzimage(version=None), b"short"])
def test_bzimage_release_rejects_non_bzimage(data):
    with pytest.raises(ValueError):
        parse_bzimage_release(data)


def test_user_kernel_errors_are_actionable(tmp_path):
    with pytest.raises(KernelError, match="does not exist"):
        user_kernel(tmp_path / "nope")
    bad = tmp_path / "vmlinux"
    bad.write_bytes(b"\x7fELF" + bytes(0x3000))
    with pytest.raises(KernelError, match="not a usable kernel image"):
        read_bzimage_release(bad)


def test_user_kernel_finds_release_modules_and_config(tmp_path):
    img = tmp_path / "bzImage"
    img.write_bytes(fake_bzimage("6.13.0-rc1-private+ #5 SMP"))
    mdir = tmp_path / "mods" / "lib" / "modules" / "6.13.0-rc1-private+"
    mdir.mkdir(parents=True)
    (mdir / "modules.dep").write_text("")
    (tmp_path / "config-6.13.0-rc1-private+").write_text(CONFIG)
    k = user_kernel(img, modules=tmp_path / "mods")
    assert k.release == "6.13.0-rc1-private+"
    assert k.modules_root == (tmp_path / "mods").resolve()
    assert k.modules_dir == mdir.resolve()
    assert k.config is not None and k.config.name == "config-6.13.0-rc1-private+"
    # lib/modules/<release> itself is accepted too
    assert user_kernel(img, modules=mdir).modules_root == (tmp_path / "mods").resolve()


def test_user_kernel_rejects_modules_of_another_release(tmp_path):
    img = tmp_path / "bzImage"
    img.write_bytes(fake_bzimage("6.13.0 #1"))
    (tmp_path / "m" / "lib" / "modules" / "6.12.0").mkdir(parents=True)
    with pytest.raises(KernelError, match="no modules for kernel 6.13.0"):
        user_kernel(img, modules=tmp_path / "m")


def test_apt_depends_resolution():
    out = """linux-image-6.12-amd64
  Depends: linux-image-6.12.117+deb12-amd64
"""
    assert pick_kernel_package(parse_apt_depends(out)) == "linux-image-6.12.117+deb12-amd64"
    assert pick_kernel_package(["linux-image-6.12.117+deb12-rt-amd64", "linux-image-6.12.117+deb12-cloud-amd64"]) is None
    assert pick_kernel_package(parse_apt_depends("  Depends: <linux-image-6.12.1-amd64>\n")) is None


def test_kernel_from_tree_needs_a_built_bzimage(tmp_path):
    from harness.kernel.user import kernel_from_tree

    with pytest.raises(KernelError) as ei:
        kernel_from_tree(tmp_path)
    assert "bzImage" in str(ei.value) and "make" in (ei.value.hint or "")


def test_kernel_from_tree_without_modules_needs_no_make(tmp_path):
    from harness.kernel.user import kernel_from_tree

    boot = tmp_path / "arch" / "x86" / "boot"
    boot.mkdir(parents=True)
    (boot / "bzImage").write_bytes(fake_bzimage("6.14.0-test #1"))
    (tmp_path / ".config").write_text("# CONFIG_MODULES is not set\nCONFIG_CXL_BUS=y\n")
    k = kernel_from_tree(tmp_path)
    assert k.release == "6.14.0-test" and k.modules_root is None and k.config == tmp_path / ".config"
