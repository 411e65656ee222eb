"""Error types. Every error the user can act on is a HarnessError.

``str(err)`` is one line a user can act on; the CLI prints it once, without a
traceback, and exits with ``err.exit_code``: 125 for the harness's own
failures (as ``env``/``timeout`` do), so a script can tell them from a guest
command's own status, which ``harness run``/``ssh`` pass through (137 for a
command killed by SIGKILL, e.g. by the guest's OOM killer). A kernel under
test that is itself bad (it panicked, oopsed, hit a BUG, or started and never
ran init) exits :data:`BAD_KERNEL` instead, so ``git bisect run`` marks it bad
where 125 would skip it.

Errors about the guest a test can assert on:

* :class:`KernelProblem`: the guest kernel reported an oops, BUG, WARN, stall
  or call trace; ``problems`` holds the parsed reports
  (:class:`harness.vm.problems.Problem`). :class:`GuestPanic` is its fatal
  subtype (the guest is gone).
* An OOM kill is *not* a kernel problem: a command it killed ends with
  :class:`CommandKilled` (``oom_kills`` holds the parsed
  :class:`harness.vm.problems.OomKill` records), or, with ``check=False``, a
  :class:`~harness.vm.ssh.CommandResult` whose ``signal`` is ``KILL``.
* :class:`CommandFailed`: a guest command ran and failed; ``result`` is its
  :class:`~harness.vm.ssh.CommandResult` (exit status, signal, output).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # only for annotations: errors must import nothing of the harness
    from harness.vm.problems import OomKill, Problem

#: Exit status of the ``harness`` command when the harness itself failed.
HARNESS_FAILURE = 125
#: Exit status for a guest command killed by SIGKILL (128 + 9), as a shell reports it.
KILLED = 137
#: Exit status of the ``harness`` command when the guest kernel under test is bad: a panic,
#: an oops or BUG, or a boot that never reached init. Any status in 1..127 but 125 is "bad" to
#: ``git bisect run``; this one is distinct from 125 ("could not test": skip).
BAD_KERNEL = 123
#: Problem kinds that say the kernel itself is broken (see :mod:`harness.vm.problems`). A stall
#: is not among them: under TCG a starved vCPU thread stalls a good kernel too.
BAD_KERNEL_KINDS = frozenset({"panic", "oops", "bug"})


class HarnessError(Exception):
    """Base of every error the CLI shows to the user without a traceback."""

    exit_code = HARNESS_FAILURE

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


class UsageError(HarnessError):
    """A command-line argument or library parameter is not acceptable."""


class TopologyIssue(NamedTuple):
    """One mistake in a topology file: where (1-based line and column, when known) and what."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    hint: str | None = None

    def quickfix(self) -> str:
        """``FILE:LINE:COL: error: PATH: MESSAGE (HINT)``, the form editors' quickfix lists read."""
        where = f"{self.file}:{self.line}:{self.column}" if self.line is not None else self.file
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: error: {what}" + (f" ({self.hint})" if self.hint else "")


class TopologyError(HarnessError):
    """A topology file is wrong. Names the file, the YAML path and the fix.

    ``issues`` holds every mistake found in the file (the first is the one this error
    describes), each with its line and column when known.
    """

    def __init__(self, file: str, path: str, message: str, *, hint: str | None = None,
                 line: int | None = None, column: int | None = None):
        self.file = file
        self.path = path
        loc = f"{file}: {path}" if path else file
        super().__init__(f"{loc}: {message}", hint=hint)
        self.issues = [TopologyIssue(file, line, column, path if not path.startswith("line ") else "", message, hint)]

    @classmethod
    def of(cls, issues: list[TopologyIssue]) -> TopologyError:
        """The error for a file with ``issues`` (at least one): ``FILE:LINE:COL: PATH: MESSAGE``,
        saying how many more there are."""
        first = issues[0]
        e = cls(first.file, first.path, first.message, hint=first.hint, line=first.line, column=first.column)
        where = f"{first.file}:{first.line}:{first.column}" if first.line is not None else first.file
        e.message = f"{where}: {first.path}: {first.message}" if first.path else f"{where}: {first.message}"
        if len(issues) > 1:
            more = f"{len(issues) - 1} more error{'s' if len(issues) > 2 else ''}: harness validate {first.file} lists them all"
            e.hint = f"{first.hint}; {more}" if first.hint else more
        e.args = (e.message,)
        e.issues = list(issues)
        return e


class PmemLabelError(HarnessError):
    """The label areas of a persistent CXL region's backing files describe a namespace the kernel
    would not find again with this topology. Raised before QEMU starts; the files are left as they are."""


class QMPCommandError(HarnessError):
    """A QMP command sent to a running QEMU failed (QEMU's own error text) or timed out."""


class QemuError(HarnessError):
    """The QEMU binary is missing, too old, or lacks a feature the topology needs."""


class KernelError(HarnessError):
    """The kernel is missing, cannot be fetched, or lacks a config option the topology needs."""


class ImageError(HarnessError):
    """The guest initramfs cannot be built (a missing host tool, library or module)."""


class CacheError(HarnessError):
    """The cache directory cannot be written (read-only, full) or holds a damaged artefact."""


class BootError(HarnessError):
    """The VM did not reach a boot milestone in time, or QEMU exited early."""


class KernelNeverRanInit(BootError):
    """The guest kernel started but never ran init (it hung, or QEMU ended) and printed no report
    the harness recognises: the kernel under test is bad (:data:`BAD_KERNEL`)."""

    exit_code = BAD_KERNEL


class KernelProblem(HarnessError):
    """The guest kernel reported a problem (oops, BUG, WARN, stall, call trace).

    ``problems`` are the parsed reports, most telling first in the message;
    ``detail`` holds their console excerpt.
    """

    def __init__(self, message: str, *, problems: list[Problem] | None = None, hint: str | None = None,
                 detail: str | None = None):
        super().__init__(message, hint=hint, detail=detail)
        self.problems: list[Problem] = list(problems or [])

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        """:data:`BAD_KERNEL` if a report says the kernel is broken (panic, oops, BUG), else 125."""
        return BAD_KERNEL if any(p.kind in BAD_KERNEL_KINDS for p in self.problems) else HARNESS_FAILURE


class GuestPanic(KernelProblem, BootError):
    """The guest kernel panicked (fatal: QEMU is gone), or a problem ended a boot."""


class GuestCommandError(HarnessError):
    """A command could not be run in the guest (SSH failure, timeout, frozen guest)."""


class GuestFrozen(GuestCommandError):
    """The guest stopped making progress (paused, or no answer on SSH) while a command ran."""


class CommandFailed(GuestCommandError):
    """A guest command ran and failed (``check=True``); ``result`` is its CommandResult.

    The CLI exits with the command's own status.
    """

    def __init__(self, message: str, result: Any, *, hint: str | None = None, detail: str | None = None):
        super().__init__(message, hint=hint, detail=detail)
        self.result = result

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        status = getattr(self.result, "exit_status", -1)
        return status if isinstance(status, int) and 0 <= status <= 255 else HARNESS_FAILURE


class CommandKilled(CommandFailed):
    """A guest command was killed by a signal; ``oom_kills`` says if the OOM killer did it."""

    def __init__(self, message: str, result: Any, *, oom_kills: list[OomKill] | None = None,
                 hint: str | None = None, detail: str | None = None):
        super().__init__(message, result, hint=hint, detail=detail)
        self.oom_kills: list[OomKill] = list(oom_kills or [])

    @property
    def by_oom_killer(self) -> bool:
        """Whether the guest's OOM killer killed it."""
        return bool(self.oom_kills)


class VMStateError(HarnessError):
    """A background VM (``harness up``) is unknown, already exists, or is gone."""
