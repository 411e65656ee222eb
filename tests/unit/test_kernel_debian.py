"""Pure logic of harness.kernel.debian on recorded data: which packages make Debian's kernel of a
series (the package names of Debian unstable's index, recorded 2026-12-02), where an unpacked
kernel keeps its files (``dpkg-deb -c`` of the real packages, directories and most modules left
out), the Debian mirror in a system's apt sources, and the ``debian:X.Y`` kernel names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import KernelError
from harness.kernel.debian import (
    apt_index_options,
    debian_mirror,
    find_layout,
    newer_suite_sources,
    parse_debian_name,
    pick_series_packages,
    series_in_index,
)

DATA = Path(__file__).parent / "data" / "debian"


def contents(*packages: str) -> list[str]:
    return [ln for p in packages for ln in (DATA / f"{p}.contents").read_text().split()]


def test_the_newest_split_kernel_of_the_series_and_its_companion_packages():
    names = (DATA / "sid-pkgnames-linux.txt").read_text().split()
    pick = pick_series_packages(names, "7.2")
    assert pick is not None
    assert pick.release == "7.2.13+deb14-amd64"
    assert pick.packages == ("linux-binary-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64",
                             "linux-base-7.2.13+deb14-amd64")
    assert pick_series_packages(names, "7.1") is None and pick_series_packages(names, "6.12") is None
    assert series_in_index(names) == ["7.2"]
    assert series_in_index(["linux-image-6.12.117+deb12-amd64", "linux-binary-7.3-rc7-amd64",
                            "linux-binary-7.2.13+deb14-rt-amd64", "linux-image-6.12-amd64"]) == ["6.12", "7.3"]


def test_a_newer_release_wins_by_number_and_flavours_are_never_picked():
    names = ["linux-binary-7.2.9+deb14-amd64", "linux-binary-7.2.13+deb14-amd64",
             "linux-binary-7.2.14+deb14-rt-amd64", "linux-binary-7.2.14+deb14-cloud-amd64",
             "linux-image-7.2.14+deb14-amd64-dbg", "linux-modules-7.2.13+deb14-amd64",
             "linux-binary-7.20.1+deb14-amd64"]
    pick = pick_series_packages(names, "7.2")
    assert pick is not None and pick.packages == ("linux-binary-7.2.13+deb14-amd64",
                                                  "linux-modules-7.2.13+deb14-amd64")


def test_an_old_style_single_image_package_is_taken_as_it_is():
    pick = pick_series_packages(["linux-image-6.12.117+deb12-amd64", "linux-image-6.12-amd64",
                                 "linux-headers-6.12.117+deb12-amd64"], "6.12")
    assert pick is not None and pick.packages == ("linux-image-6.12.117+deb12-amd64",)
    assert pick.release == "6.12.117+deb12-amd64"


def test_layout_of_the_split_7_2_packages():
    lay = find_layout(contents("linux-binary-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64",
                               "linux-base-7.2.13+deb14-amd64"))
    d = "usr/lib/modules/7.2.13+deb14-amd64"
    assert (lay.release, lay.image, lay.config, lay.modules, lay.system_map) == (
        "7.2.13+deb14-amd64", f"{d}/vmlinuz", f"{d}/config", d, f"{d}/System.map")


def test_layout_of_the_binary_package_alone_has_no_config_and_no_modules():
    lay = find_layout(contents("linux-binary-7.2.13+deb14-amd64"))
    assert lay.image.endswith("/vmlinuz") and lay.config is None and lay.modules is None


def test_layout_of_debian_12s_single_image_package():
    lay = find_layout(contents("linux-image-6.12.117+deb12-amd64"))
    assert (lay.release, lay.image, lay.config, lay.modules) == (
        "6.12.117+deb12-amd64", "boot/vmlinuz-6.12.117+deb12-amd64", "boot/config-6.12.117+deb12-amd64",
        "lib/modules/6.12.117+deb12-amd64")


def test_a_package_without_a_kernel_image_is_an_error():
    with pytest.raises(KernelError, match="no boot/vmlinuz"):
        find_layout(contents("linux-base-7.2.13+deb14-amd64"))


DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_mirror_is_the_entry_of_the_systems_own_release():
    sources = {"debian.sources": DEB822,
               "nodesource.sources": "Types: deb\nURIs: https://other.example/node\nSuites: nodistro\n"}
    assert debian_mirror(sources, "bookworm") == "http://mirror.example/debian"
    one_line = {"sources.list": "# comment\ndeb-src http://src.example/debian bookworm main\n"
                                "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n"}
    assert debian_mirror(one_line, "bookworm") == "http://one.example/debian"
    assert debian_mirror(sources, "trixie") is None
    disabled = {"a.sources": DEB822.replace("Types: deb\n#", "Enabled: no\nTypes: deb\n#", 1)}
    assert debian_mirror(disabled, "bookworm") is None


def test_the_private_index_names_the_newer_suite_and_never_the_systems_files(tmp_path):
    text = newer_suite_sources("http://mirror.example/debian", Path("/k.gpg"))
    assert "Suites: sid\n" in text and "URIs: http://mirror.example/debian\n" in text and "Signed-By: /k.gpg" in text
    opts = apt_index_options(tmp_path)
    assert f"Dir::Etc::SourceList={tmp_path}/sources.sources" in opts
    assert "Dir::Etc::SourceParts=/dev/null" in opts and f"Dir::State::Lists={tmp_path}/lists" in opts
    assert f"Dir::Cache={tmp_path}/cache" in opts


def test_kernel_names():
    assert parse_debian_name("debian:7.2") == "7.2"
    assert parse_debian_name("debian:6.12") == "6.12"
    for not_a_name in ("debian", "debian:7", "debian:7.2.13", "/boot/vmlinuz", "./debian:7.2"):
        assert parse_debian_name(not_a_name) is None


def test_a_debian_kernel_name_takes_no_modules_or_config():
    from harness.boot.prepare import KernelSpec, resolve_kernel

    spec = KernelSpec.from_env("debian:7.2", modules="/tmp/mods")
    assert spec.image == Path("debian:7.2") and spec.tree is None
    with pytest.raises(KernelError, match="go with a kernel you built, not debian:7.2"):
        resolve_kernel(spec)


def test_a_hand_unpacked_split_package_finds_its_config_and_names_depmod(tmp_path):
    """``--kernel .../usr/lib/modules/R/vmlinuz --modules .../usr``: the config beside the image is
    found; without modules.dep the error names the ``depmod -b`` command to run."""
    from test_kernel import fake_bzimage

    from harness.kernel.user import user_kernel

    rel = "7.2.13+deb14-amd64"
    mdir = tmp_path / "usr" / "lib" / "modules" / rel
    mdir.mkdir(parents=True)
    (mdir / "vmlinuz").write_bytes(fake_bzimage(f"{rel} (debian-kernel@lists.debian.org) #1 SMP"))
    (mdir / "config").write_text("CONFIG_NUMA=y\n")
    (mdir / "modules.order").write_text("")
    assert user_kernel(mdir / "vmlinuz").config == mdir / "config"
    with pytest.raises(KernelError) as e:
        user_kernel(mdir / "vmlinuz", modules=tmp_path / "usr")
    assert e.value.hint == f"run `depmod -b {tmp_path / 'usr'} {rel}`"
