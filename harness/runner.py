"""The one guest-command contract every consumer of a booted guest relies on.

:class:`GuestRunner` is anything with ``run(command, *, timeout=..., check=...)`` returning a
:class:`CommandOutput`: a booted :class:`harness.boot.Machine`, a :class:`harness.vm.machine.VM`,
or a test double of either. The statistics, the guest programs, the selftests and the contract
take a ``GuestRunner``, so they never name the VM or the plugin.

The contract of ``run``: ``check`` defaults to True everywhere (a non-zero exit raises
:class:`harness.errors.CommandFailed`, a signal :class:`harness.errors.CommandKilled`); a caller
that reads the exit status itself passes ``check=False``.

Must not know: how the guest is reached (SSH, QEMU), pytest, the command line.
"""

from __future__ import annotations

from typing import Protocol


class CommandOutput(Protocol):
    """What a guest command left: its exit status and output (see :class:`harness.vm.ssh.CommandResult`)."""

    @property
    def exit_status(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


class GuestRunner(Protocol):
    """Runs a shell command line in the guest as root."""

    def run(self, command: str, *, timeout: float = ..., check: bool = ...) -> CommandOutput: ...
