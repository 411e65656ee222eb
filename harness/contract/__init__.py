"""The private/managed memory node contract: every promise the series makes, checked on a guest.

Owns: which nodes a check runs against (:mod:`.targets`: private/managed nodes the guest's node
masks show, and the negative controls: ordinary memory-only and provisioned nodes), the pure
verdicts that turn guest output into pass / fail / skip / expected failure (:mod:`.verdicts`),
running each check in a guest (:mod:`.run`), the isolation comparison (:mod:`.isolation`) and
the reviewer's report (:mod:`.report`).

Must not know: pytest, the command line, QEMU. It talks to a guest only through an object with
``run(command, timeout=..., check=...)`` (a :class:`harness.runner.GuestRunner`: a booted
:class:`harness.boot.Machine` or a VM) and
reads node classes through :mod:`harness.stats`, never a mask name of its own: the series renames
them, ``harness/stats/node_masks.yaml`` follows.
"""

from __future__ import annotations

from .targets import Target, no_private_reason, targets
from .verdicts import PROMISES, Outcome, Verdict

__all__ = ["PROMISES", "Outcome", "Target", "Verdict", "no_private_reason", "targets"]
