"""What a failed test left behind, read once from its machine: the console tail, the guest's dmesg
(all of it, and since the test began), the statistics before and after, the guest programs' output.

The terminal report, the JUnit failure text, the failure bundle and the HTML report all show this
one :class:`Failure`; nothing is read from the guest twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.guest.dmesg import cut_after_mark

if TYPE_CHECKING:  # annotations only: the plugin imports this module at every pytest start
    from harness.boot import Machine
    from harness.stats import Snapshot

CONSOLE_TAIL_LINES = 40

CONSOLE = "numa-harness: console tail"
DMESG = "numa-harness: guest dmesg since the test began"
DELTA = "numa-harness: statistics delta since the test began"


@dataclass
class Failure:
    """A failed test's diagnostics (strings are empty when there was nothing to read)."""

    console_tail: str = ""
    dmesg: str | None = None                  # the whole kernel log; None: the guest was gone
    dmesg_since: str | None = None            # after the test's mark
    dmesg_error: str = ""
    before: Snapshot | None = None
    after: Snapshot | None = None
    delta: str | None = None                  # the statistics delta, as the report prints it
    delta_error: str = ""
    workloads: list[dict[str, Any]] = field(default_factory=list)

    def sections(self, console_log: str) -> list[tuple[str, str]]:
        """The report's sections, in order: console tail (naming ``console_log``), dmesg, delta."""
        out = []
        if self.console_tail:
            out.append((CONSOLE, f"{self.console_tail}\n(console log: {console_log})"))
        if self.dmesg_since is not None:
            out.append((DMESG, self.dmesg_since or "(nothing)"))
        elif self.dmesg_error:
            out.append((DMESG, f"(could not read dmesg: {self.dmesg_error})"))
        if self.delta is not None:
            out.append((DELTA, self.delta))
        elif self.delta_error:
            out.append(("numa-harness: statistics delta", f"(could not take a snapshot: {self.delta_error})"))
        return out


def collect(m: Machine, mark: str | None, probe: Any | None, workloads: list[dict[str, Any]] | None) -> Failure:
    """Read a failed test's diagnostics from its machine ``m`` (``probe``: its ``stats`` fixture)."""
    f = Failure(console_tail=m.console_tail(CONSOLE_TAIL_LINES), workloads=list(workloads or []))
    if m.running:
        try:
            f.dmesg = m.dmesg(timeout=20)
            if mark:
                f.dmesg_since = cut_after_mark(f.dmesg, mark)
        except HarnessError as e:
            f.dmesg_error = str(e)
    if probe is not None:
        f.before = probe.before
        if m.running:
            try:
                f.delta = probe.describe_delta()
                f.after = probe.last
            except HarnessError as e:
                f.delta_error = str(e)
    return f
