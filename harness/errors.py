"""Error types. Every error the user can act on is a HarnessError.

``str(err)`` is one line a user can act on; the CLI prints it once, without a
traceback, and exits with ``err.exit_code``.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the CLI shows to the user without a traceback."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Multi-line context (a console tail, a QEMU stderr) shown under the message.
        self.detail = detail

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class TopologyError(HarnessError):
    """A topology file is wrong. Names the file, the YAML path and the fix."""

    def __init__(self, file: str, path: str, message: str, *, hint: str | None = None):
        self.file = file
        self.path = path
        loc = f"{file}: {path}" if path else file
        super().__init__(f"{loc}: {message}", hint=hint)


class QemuError(HarnessError):
    """The QEMU binary is missing, too old, or lacks a feature the topology needs."""


class KernelError(HarnessError):
    """The kernel is missing, cannot be fetched, or lacks a config option the topology needs."""


class ImageError(HarnessError):
    """The guest initramfs cannot be built (a missing host tool, library or module)."""


class BootError(HarnessError):
    """The VM did not reach a boot milestone in time, or QEMU exited early."""


class GuestPanic(BootError):
    """The guest kernel panicked, oopsed, hit a BUG or a WARN. ``detail`` holds the excerpt."""


class GuestCommandError(HarnessError):
    """A command could not be run in the guest (SSH failure, timeout)."""


class VMStateError(HarnessError):
    """A background VM (``harness up``) is unknown, already exists, or is gone."""
