"""The guest's page-moving knobs, set to a known state before a test.

A stock guest moves pages behind a test's back: automatic NUMA balancing
(``kernel.numa_balancing=1``) migrates pages back towards the CPU that
touches them within seconds, and transparent huge pages (``enabled=always``)
make counters count allocations instead of 4 KiB pages and make
``move_pages`` report ``-EBUSY`` per huge page although it moved. A test of
placement or migration needs both off; a test of promotion needs balancing
in mode 2; a test of THP needs it on. :class:`GuestState` says which;
:data:`BASELINE` is what the pytest plugin applies before every test unless
the test asks otherwise (``@pytest.mark.guest_state(...)``).

The guest side is the shell program ``files/guest-state`` (in the image);
this module only plans its arguments (:func:`state_args`) and parses what it
printed (:func:`parse_state_output`). Both are pure.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, fields, replace

from harness.errors import GuestCommandError
from harness.guest.protocol import GUEST_BIN_DIR
from harness.topology.model import Topology

#: Where the guest-state program is in the image.
GUEST_STATE_PROGRAM = f"{GUEST_BIN_DIR}/guest-state"

#: Keep the kernel's current value.
KEEP = "keep"

_CHOICES: dict[str, tuple[str, ...]] = {
    "numa_balancing": ("0", "1", "2", KEEP),
    "thp": ("always", "madvise", "never", KEEP),
    "thp_defrag": ("always", "defer", "defer+madvise", "madvise", "never", KEEP),
    "demotion": ("true", "false", KEEP),
}


@dataclass(frozen=True)
class GuestState:
    """Values for the guest's knobs; ``keep`` leaves one as the kernel has it.

    ``numa_balancing``: 0 off, 1 NUMA balancing, 2 memory-tiering promotion.
    ``thp``: transparent huge pages ``enabled``. ``demotion``:
    ``/sys/kernel/mm/numa/demotion_enabled``.
    """

    numa_balancing: str = "0"
    thp: str = "never"
    thp_defrag: str = KEEP
    demotion: str = KEEP

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in _CHOICES[f.name]:
                raise ValueError(f"guest state {f.name}={value!r}: choose one of {', '.join(_CHOICES[f.name])}")

    @classmethod
    def of(cls, base: GuestState | None = None, **values: object) -> GuestState:
        """``base`` (default :data:`BASELINE`) with ``values`` changed; accepts ints and bools.

        ``GuestState.of(numa_balancing=2, thp="always")``; ``demotion=True``.
        """
        norm: dict[str, str] = {}
        known = {f.name for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown guest state {key!r}: known are {', '.join(sorted(known))}")
            if isinstance(value, bool):
                norm[key] = "true" if value else "false"
            else:
                norm[key] = str(value)
        return replace(base or BASELINE, **norm)


#: Before every test: no NUMA balancing, no THP (exact 4 KiB page counts); demotion as the topology set it.
BASELINE = GuestState()


def baseline_for(t: Topology) -> GuestState:
    """The state a booted machine of ``t`` is put in (and every test starts from): :data:`BASELINE`
    with demotion as the topology's ``guest.demotion`` says, else off."""
    return GuestState.of(demotion=bool(t.guest.demotion))


def state_args(state: GuestState, *, mark: str | None = None, kill_programs: bool = True) -> list[str]:
    """The ``guest-state`` program's arguments for ``state`` (pure)."""
    args = ["--numa-balancing", state.numa_balancing, "--thp", state.thp,
            "--thp-defrag", state.thp_defrag, "--demotion", state.demotion]
    if kill_programs:
        args.append("--kill-programs")
    if mark:
        args += ["--mark", mark]
    return args


def state_command(program: str, state: GuestState, *, mark: str | None = None, kill_programs: bool = True) -> str:
    """A shell command line running ``program`` (the in-image path) for ``state``."""
    return shlex.join([program, *state_args(state, mark=mark, kill_programs=kill_programs)])


class GuestStateError(GuestCommandError):
    """The guest refused a knob's value (e.g. a kernel without demotion)."""


def parse_state_output(text: str) -> dict[str, str]:
    """``name=value`` lines up to ``ok`` -> {name: value} as the kernel reads them back (pure).

    Raises GuestStateError for an ``error ...`` line or output without ``ok``.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("error "):
            raise GuestStateError(f"the guest refused a setting: {line[len('error '):]}")
        if line == "ok":
            return values
        name, sep, value = line.partition("=")
        if sep and name and " " not in name:
            values[name] = value
    raise GuestStateError("guest-state printed no 'ok' line", detail=text[-2000:])


def mismatches(wanted: GuestState, got: dict[str, str]) -> list[str]:
    """Knobs the kernel did not take (absent ones are skipped: a kernel may lack THP or tiering)."""
    out = []
    for f in fields(wanted):
        want = getattr(wanted, f.name)
        have = got.get(f.name)
        if want == KEEP or have in (None, "absent"):
            continue
        if have != want:
            out.append(f"{f.name}: wanted {want}, the guest reads {have}")
    return out
