"""The wheel carries everything the harness reads at run time.

Builds the wheel from this checkout (no build isolation: the test
environment already has setuptools) and checks its file list against the
package data the code asks for through :mod:`harness.resources`.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.resources import (
    guest_files_dir,
    guest_programs_dir,
    kernel_configs_dir,
    presets_dir,
    selftest_files_dir,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = out.glob("numa_harness-*.whl")
    return zipfile.ZipFile(whl)


def _names(w: zipfile.ZipFile) -> set[str]:
    return set(w.namelist())


def test_every_preset_and_data_file_is_in_the_wheel(wheel):
    names = _names(wheel)
    for folder, pkg in ((presets_dir(), "harness/topology/presets"), (kernel_configs_dir(), "harness/kernel/configs"),
                        (guest_files_dir(), "harness/guest/files"), (guest_programs_dir(), "harness/guest/programs"),
                        (selftest_files_dir(), "harness/selftest/files")):
        for f in folder.iterdir():
            if f.is_file() and not f.name.startswith("."):
                assert f"{pkg}/{f.name}" in names, f"{pkg}/{f.name} is not in the wheel"
    assert "harness/qemu/features.yaml" in names
    assert "harness/ci/matrix.yaml" in names  # harness matrix reads it from the installed package


def test_entry_points_name_the_cli_and_the_pytest_plugin(wheel):
    (ep,) = [n for n in _names(wheel) if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(ep).decode()
    assert "harness = harness.cli.main:main" in text
    assert "[pytest11]" in text and "numa_harness = harness.plugin" in text


def test_no_source_tree_only_files_or_tests_in_the_wheel(wheel):
    names = _names(wheel)
    assert not [n for n in names if n.startswith(("tests/", "topologies/", "scripts/", "guest-tests/"))]
