"""Fixtures of the fault matrix (helpers in faultlib.py)."""

from faultlib import default_kernel_files, h, tmpfs  # noqa: F401  (fixtures)
