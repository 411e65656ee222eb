"""A booted guest of one topology, as a test sees it: run commands and programs, set state, read logs.

:class:`Machine` wraps a started :class:`harness.vm.machine.VM` with what the
plugin learned while booting it (the topology, the guest set-up's regions)
and the few operations every test needs. It holds no pytest logic; the
plugin's fixtures hand it to tests as ``vm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.boot import Prepared
from harness.errors import GuestCommandError
from harness.guest.dmesg import cut_after_mark
from harness.guest.protocol import GUEST_BIN_DIR
from harness.guest.setup import SetupResult
from harness.guest.state import GuestState, mismatches, parse_state_output, state_command
from harness.topology.model import Topology
from harness.vm.machine import VM, CommandResult
from harness.vm.problems import Problem

#: Where the guest-state program is in the image.
GUEST_STATE_PROGRAM = f"{GUEST_BIN_DIR}/guest-state"


@dataclass
class Machine:
    """One booted VM shared by the tests of its topology."""

    name: str                       # the topology's name (preset name or file stem)
    prepared: Prepared
    vm: VM
    setup: SetupResult
    state: dict[str, str] = field(default_factory=dict)  # knobs as last read back from the guest
    failed_tests: list[str] = field(default_factory=list)

    @property
    def topology(self) -> Topology:
        """The validated topology this VM was booted from."""
        return self.prepared.loaded.topology

    @property
    def console_log(self) -> Path:
        """QEMU's log of the guest's serial console."""
        return self.vm.console_log

    @property
    def running(self) -> bool:
        """Whether QEMU still runs."""
        return self.vm.running

    # -- commands --------------------------------------------------------------

    def run(self, command: str, *, timeout: float = 120, check: bool = True) -> CommandResult:
        """Run a shell command line in the guest as root; ``check`` raises on a non-zero exit."""
        return self.vm.run(command, timeout=timeout, check=check)

    # -- state -----------------------------------------------------------------

    def apply_state(self, state: GuestState, *, mark: str | None = None) -> dict[str, str]:
        """Set the guest's page-moving knobs; ends guest programs left running; marks dmesg.

        Raises GuestCommandError if the guest refuses a value or reads back another.
        """
        r = self.vm.run(state_command(GUEST_STATE_PROGRAM, state, mark=mark), timeout=60)
        got = parse_state_output(r.stdout)
        wrong = mismatches(state, got)
        if wrong:
            raise GuestCommandError(f"the guest did not take the requested state: {'; '.join(wrong)}")
        self.state = got
        return got

    # -- logs ------------------------------------------------------------------

    def dmesg_since(self, mark: str, *, timeout: float = 30) -> str:
        """The guest kernel log after the line carrying ``mark`` (all of it if the mark is gone)."""
        r = self.vm.run("dmesg", timeout=timeout, check=False)
        return cut_after_mark(r.stdout, mark)

    def console_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the serial console log."""
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.replace("\r", "").splitlines()[-lines:])

    def problems(self) -> list[Problem]:
        """Kernel problems seen on the console since boot."""
        return self.vm.problems()
