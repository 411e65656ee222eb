"""Faults of the guest-image cache (issue cases 6 and 7): a truncated cached image is noticed
before it boots and rebuilt, saying why; an image cache that cannot be written is one line.

Each test has its own cache directory (the default kernel's files come from the shared
cache, passed with --kernel/--modules/--kernel-config), so nothing here touches the images
other runs use.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faultlib import Harness, assert_one_line_error, text

pytestmark = pytest.mark.live  # needs the default kernel's files (fetched once)


def kernel_args(k) -> list[str]:
    return ["--kernel", str(k.image), "--modules", str(k.modules_root), "--kernel-config", str(k.config)]


def test_6_truncated_cached_image_is_rebuilt_and_says_why(h: Harness, tmp_path: Path, default_kernel_files):
    env = {"NUMA_HARNESS_CACHE": str(tmp_path / "cache")}
    args = ["run", "numa-basic", *kernel_args(default_kernel_files), "--accel", "tcg", "--", "true"]
    first = h.run(*args, env=env)
    assert first.returncode == 0, text(first)
    images = [p for p in (tmp_path / "cache/images").glob("*.cpio") if not p.name.startswith("bare-")]
    assert len(images) == 1, images
    image = images[0]
    manifest = json.loads(image.with_suffix(".json").read_text())
    size = image.stat().st_size
    assert manifest["image"]["size"] == size
    with open(image, "r+b") as f:  # what a full disk or a killed copy leaves: the front half
        f.truncate(size // 2)

    second = h.run(*args, env=env)
    err = text(second)
    assert second.returncode == 0, err
    assert "Traceback" not in err
    assert f"rebuilt: the cached image is {size // 2} bytes, its manifest says {size} (truncated?)" in err, err
    assert image.stat().st_size == size, "the image was rebuilt whole"
    assert h.qemus() == []


@pytest.mark.parametrize("opts,cause", [("ro,size=1m", "read-only file system"),
                                        ("size=1m", "no space left on")])
def test_7_image_cache_read_only_or_full_is_one_line(h: Harness, tmpfs, tmp_path: Path, default_kernel_files,
                                                      opts, cause):
    """The rest of the cache is writable (the host key and guest programs get built); only the
    images folder is a read-only or 1 MiB tmpfs, so the image write itself is what fails."""
    cache = tmp_path / "cache"
    tmpfs(opts, at=cache / "images")
    r = h.run("run", "numa-basic", *kernel_args(default_kernel_files), "--accel", "tcg", "--", "true",
              env={"NUMA_HARNESS_CACHE": str(cache)})
    line = assert_one_line_error(r, 125, "cannot write the cache while")
    assert cause in line.lower(), line
    assert str(cache / "images") in line, line
    assert h.qemus() == []
    assert not [p for p in (cache / "images").iterdir() if p.name.startswith(".tmp-")], "no temporary file left"
