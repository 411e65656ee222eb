"""The ``harness`` command: argument parsing, progress display, one-line errors.

Calls the library and shows results; holds no logic a test or the pytest plugin would need.
"""

from harness.cli.main import main

__all__ = ["main"]
