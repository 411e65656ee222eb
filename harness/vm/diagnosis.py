"""Why a boot failed, as a pure function of what was seen (unit-tested on recorded logs).

:func:`diagnose` takes the console text, QEMU's stderr and QEMU's exit status
(None while it runs) and returns the error to raise, with a cause a user can
act on: a kernel problem (with the parsed reports), KVM refusing the guest, a
kernel image QEMU could not boot, a guest without its network driver (no
``--modules``), a guest service that failed, or a plain timeout.
"""

from __future__ import annotations

from harness.errors import BootError, GuestPanic, HarnessError, KernelNeverRanInit, KernelProblem
from harness.vm.console import (
    INIT_RUNNING,
    KERNEL_STARTED,
    clean_line,
    guest_lines,
    guest_message,
    is_guest_failure,
    milestones_in,
)
from harness.vm.problems import STALL, Problem, describe_problems, find_kernel_problems

CONSOLE_TAIL = 30
MODULES_HINT = ("pass --modules DIR, the INSTALL_MOD_PATH of this kernel's `make modules_install` "
                "(virtio_net must load for SSH)")


def qemu_error_lines(text: str) -> str:
    """QEMU's stderr, trimmed to what a user needs to read (pure)."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-20:])


def console_tail(console: str, n: int = CONSOLE_TAIL) -> str:
    """``last console lines:`` and the last ``n`` lines, or ``(no console output)``."""
    lines = [clean_line(ln) for ln in console.splitlines()][-n:]
    return "last console lines:\n" + "\n".join(lines) if any(ln.strip() for ln in lines) else "(no console output)"


def kvm_error(qemu_stderr: str) -> str | None:
    """QEMU's ``KVM internal error`` line, if any."""
    for line in qemu_stderr.splitlines():
        if "KVM internal error" in line:
            return line.strip()
    return None


def guest_failures(console: str) -> list[str]:
    """The messages of ``numa-harness: ... FAILED`` lines, in order."""
    return [guest_message(ln) or "" for ln in guest_lines(console) if is_guest_failure(ln)]


def fatal_guest_failure(console: str) -> str | None:
    """A ``network FAILED``/``sshd FAILED`` message: SSH will never come."""
    for msg in guest_failures(console):
        if msg.lower().startswith(("network", "sshd")):
            return msg
    return None


def problem_error(problems: list[Problem], *, log_hint: str = "", context: str | None = None,
                  fatal: bool | None = None) -> KernelProblem:
    """The error for kernel ``problems``: GuestPanic if one is fatal (or ``fatal``), else KernelProblem."""
    msg, detail = describe_problems(problems)
    if context:
        msg = f"{msg} ({context})"
    is_fatal = any(p.fatal for p in problems) if fatal is None else fatal
    cls = GuestPanic if is_fatal else KernelProblem
    return cls(msg, problems=problems, detail=detail + log_hint)


def tcg_starved_hint(accel: str | None) -> str:
    """What to try after a stall, given the ``-accel`` option the guest ran with (pure)."""
    if accel is not None and accel.split(",")[0] == "tcg" and "thread=single" not in accel.split(","):
        return ("under TCG with more busy vCPUs than free host cores the vCPU threads starve: "
                "boot with --tcg-thread single (machine.tcg_thread: single) or fewer vCPUs")
    return "the guest stalled before it was up; see the console log"


def boot_stall_error(problems: list[Problem], *, accel: str | None = None,
                     console_log: str | None = None) -> KernelProblem | None:
    """The error that ends a boot wait at once when a stall (RCU stall, soft or hard lockup, hung
    task) is among ``problems``, or None. A guest that stalls while booting rarely answers SSH
    before the deadline, so waiting for it only hides the cause (pure)."""
    stalls = [p for p in problems if p.kind == STALL]
    if not stalls:
        return None
    msg, detail = describe_problems(stalls)
    log_hint = f"\n(console log: {console_log})" if console_log else ""
    return GuestPanic(f"{msg} (while booting)", problems=problems, hint=tcg_starved_hint(accel),
                      detail=detail + log_hint)


def diagnose(console: str, qemu_stderr: str, exit_status: int | None, *, console_log: str | None = None,
             timed_out: str | None = None, timeout_hint: str | None = None) -> HarnessError | None:
    """The error a boot ends with, or None if nothing is wrong yet (QEMU runs, no timeout).

    ``exit_status`` is QEMU's (None: still running); ``timed_out`` is the
    message for a milestone that did not come in time.
    """
    log_hint = f"\n(console log: {console_log})" if console_log else ""
    where = f"console log: {console_log}" if console_log else None
    problems = find_kernel_problems(console)
    if problems and (exit_status is not None or timed_out or any(p.fatal for p in problems)):
        return problem_error(problems, log_hint=log_hint, context=timed_out, fatal=True)
    kvm = kvm_error(qemu_stderr)
    if kvm:
        return BootError(f"KVM could not run the guest: {kvm}", hint="use --accel tcg", detail=console_tail(console))
    failure = fatal_guest_failure(console)
    if failure:
        hint = MODULES_HINT if _network_driver_missing(console) else where or "see the console log"
        return BootError(f"the guest reported: {failure}", hint=hint, detail=console_tail(console))
    seen = set(milestones_in(console))  # garbled lines and implied milestones included
    started = KERNEL_STARTED in seen
    never_init = started and INIT_RUNNING not in seen  # the kernel ran, then stopped short of /init
    if exit_status is not None:
        stderr = qemu_error_lines(qemu_stderr)
        detail = (f"QEMU said:\n{stderr}\n" if stderr else "") + console_tail(console)
        if not started and not console.strip():
            return BootError(f"QEMU exited (status {exit_status}) before the kernel printed anything",
                             hint="the kernel image is probably truncated or not a bootable x86_64 bzImage; "
                                  "check the file given with --kernel", detail=detail)
        if never_init and exit_status >= 0:  # QEMU ended by itself (a reset with -no-reboot), not killed
            return KernelNeverRanInit(f"the kernel started but never ran init; QEMU exited (status {exit_status})",
                                      hint=where, detail=detail)
        return BootError(f"QEMU exited unexpectedly (status {exit_status})", hint=where, detail=detail)
    if timed_out:
        if never_init:
            return KernelNeverRanInit(f"{timed_out}: the kernel started but never ran init",
                                      hint=timeout_hint or where, detail=console_tail(console))
        if not started and not console.strip():
            timeout_hint = ("the kernel printed nothing: is the image a bootable x86_64 bzImage? "
                            + (timeout_hint or ""))
        return BootError(timed_out, hint=timeout_hint or where, detail=console_tail(console))
    return None


def _network_driver_missing(console: str) -> bool:
    """The guest found no network interface and its driver did not load (no --modules)."""
    msgs = [m.lower() for m in guest_failures(console)]
    return (any(m.startswith("network") and "no ethernet" in m for m in msgs)
            and any(m.startswith("modprobe") and "virtio_net" in m for m in msgs))
