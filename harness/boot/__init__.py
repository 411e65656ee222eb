"""Booting a machine: from a topology and a kernel to a booted, set-up guest.

Owns: the checks and builds before anything boots (:mod:`.prepare`: topology, QEMU, kernel and
its ``.config``, image, accelerator, argv -> a :class:`~harness.vm.spec.BootSpec`), and the one
path that boots and sets up a guest (:mod:`.machine`: :func:`boot` -> :class:`Machine`), which
the CLI, the pytest plugin, the scripts and the live tests all use; a machine's snapshot after
set-up and fresh machines restored from it (:mod:`.snapshot`).

Must not know: pytest, the terminal (progress is reported through callbacks), what a test or a
contract check does with the machine.
"""

from harness.boot.machine import Machine, boot
from harness.boot.prepare import KernelSpec, Prepared, prepare

__all__ = ["KernelSpec", "Machine", "Prepared", "boot", "prepare"]
