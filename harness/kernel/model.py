"""The kernel the guest boots, as the rest of the harness sees it (:class:`Kernel`).

Where kernels come from: :mod:`harness.kernel.debian` (the distribution's
packaged kernel, fetched and cached), :mod:`harness.kernel.user` (a user's
bzImage or build tree); :mod:`harness.kernel.config` checks a ``.config``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[str], None] | None
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kernel:
    """A bootable kernel and what the harness knows about it."""

    image: Path  # bzImage / vmlinuz
    config: Path | None  # the kernel .config, if known
    modules_root: Path | None  # a modules_install root: contains lib/modules/<release>/
    release: str  # `uname -r` of that kernel
    origin: str  # human-readable provenance

    @property
    def modules_dir(self) -> Path | None:
        """``<modules_root>/lib/modules/<release>``, if there are modules."""
        if self.modules_root is None:
            return None
        return self.modules_root / "lib" / "modules" / self.release


def say(progress: Progress, msg: str) -> None:
    """Tell the user (``progress``) and the log."""
    log.info("%s", msg)
    if progress is not None:
        progress(msg)
