"""Files the harness reads at run time, found inside the installed package.

Everything here ships in the wheel (``[tool.setuptools.package-data]``) and is
read through :mod:`importlib.resources`, so a ``pip install`` in someone
else's test repository boots exactly what a checkout boots. No module reads
the source tree: the top-level ``topologies/``, ``kernel-configs/``,
``qemu/features.yaml`` and ``guest-tests/src`` of a checkout are symlinks
into the package, for people browsing the repository.

The harness installs as ordinary files (setuptools never zips it), so each
accessor returns a real :class:`~pathlib.Path`; a zipped install is refused
with a clear message rather than half-working.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _dir(package: str, *parts: str) -> Path:
    root = resources.files(package)
    for part in parts:
        root = root / part
    path = Path(str(root))
    if not path.exists():
        raise FileNotFoundError(f"numa-harness package data {package}/{'/'.join(parts)} is missing "
                                "(a broken or zipped install: reinstall numa-harness)")
    return path


def presets_dir() -> Path:
    """The stock topology presets (``*.yaml``)."""
    return _dir("harness.topology", "presets")


def qemu_features_file() -> Path:
    """The table of QEMU features and the version each needs."""
    return _dir("harness.qemu", "features.yaml")


def ci_matrix_file() -> Path:
    """The nightly CI matrix: topologies x kernels, each cell's accelerator."""
    return _dir("harness.ci", "matrix.yaml")


def kernel_configs_dir() -> Path:
    """Kernel-config fragments (``*.config``) to merge into a user's kernel."""
    return _dir("harness.kernel", "configs")


def private_module_source_dir() -> Path:
    """Source of the private-node provisioning kernel module (C and a Kbuild file), built out of tree."""
    return _dir("harness.kernel", "modsrc")


def guest_files_dir() -> Path:
    """Files copied into the guest image as they are (``init``, shell helpers)."""
    return _dir("harness.guest", "files")


def guest_programs_dir() -> Path:
    """Sources of the guest workload programs (C and a Makefile), built on the host."""
    return _dir("harness.guest", "programs")


def node_masks_file() -> Path:
    """The table of node masks (``has_*``) and ``mem_features`` bits and the classes they give."""
    return _dir("harness.stats", "node_masks.yaml")
def selftest_files_dir() -> Path:
    """Shell files the selftest runner copies into the guest (``run-one.sh``)."""
    return _dir("harness.selftest", "files")
