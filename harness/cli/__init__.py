"""The ``harness`` command: argument parsing, progress display, one-line errors.

Calls the library and shows results; holds no logic a test or the pytest plugin would need.
Must not know: the pytest plugin (:mod:`harness.plugin`); both sit on the library.
"""

from harness.cli.main import main

__all__ = ["main"]
