"""The wheel carries everything the harness reads at run time.

Builds the wheel from this checkout (no build isolation: the test
environment already has setuptools) and checks its file list against the
package data the code asks for through :mod:`harness.resources`, and its
metadata: an SPDX license with the license text, the version from
``harness.__version__``, pytest as a dependency, ``py.typed``, and a build
that warns of nothing deprecated.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import harness
from harness.resources import (
    guest_files_dir,
    guest_programs_dir,
    kernel_configs_dir,
    presets_dir,
    selftest_files_dir,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[zipfile.ZipFile, str]:
    """The wheel, and everything the build printed."""
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = out.glob("numa_harness-*.whl")
    return zipfile.ZipFile(whl), r.stdout + r.stderr


@pytest.fixture(scope="module")
def wheel(built) -> zipfile.ZipFile:
    return built[0]


def _metadata(w: zipfile.ZipFile) -> list[str]:
    (meta,) = [n for n in w.namelist() if n.endswith(".dist-info/METADATA")]
    return w.read(meta).decode().split("\n\n", 1)[0].splitlines()  # the headers, not the README


def test_the_build_warns_of_nothing_deprecated(built):
    _, output = built
    assert "deprecat" not in output.lower(), [ln for ln in output.splitlines() if "deprecat" in ln.lower()]


def test_the_wheel_carries_its_license_and_type_information(wheel):
    names = _names(wheel)
    assert "harness/py.typed" in names
    (lic,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    text = wheel.read(lic).decode()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text
    headers = _metadata(wheel)
    assert "License-Expression: GPL-2.0-only" in headers
    assert not [h for h in headers if h.startswith("License: ")]  # the deprecated free-text field


def test_the_metadata_has_one_version_pytest_and_the_classifiers(wheel):
    headers = _metadata(wheel)
    assert f"Version: {harness.__version__}" in headers
    runtime = [h.split(":", 1)[1].strip() for h in headers if h.startswith("Requires-Dist:") and "extra ==" not in h]
    assert "pytest>=8" in runtime, runtime
    assert "Classifier: Framework :: Pytest" in headers
    # the repository's own tools are a dependency group, not something users install
    extras = [h for h in headers if h.startswith("Requires-Dist:") and "extra ==" in h]
    assert not [h for h in extras if any(t in h for t in ("ruff", "mypy", "types-", "build", "setuptools"))], extras


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
