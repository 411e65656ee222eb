"""Run kernel selftests in a booted guest and turn their output into results.

A *selftest directory* is either a directory of KTAP scripts (the
private-node series' ``tools/testing/selftests/dax`` style: every executable
file is a test, the rest are helpers they source) or a kselftest target built
on the host (``make -C tools/testing/selftests/mm OUTPUT=DIR``: its executables
are the tests; an installed kselftest tree's ``kselftest-list.txt`` names them).

The directory goes into the guest as a gzip'd tar sent in base64 chunks over
SSH (the VM's ``run`` has no stdin), checked by md5sum, unpacked by busybox
tar. Each test then runs through ``files/run-one.sh`` (its own session, a
time limit, TERM then KILL of the whole group), and its output comes back over
SSH, never the console. Exit status 4 is a skip (kselftest's KSFT_SKIP); a
test that times out or dies on a signal is a failure carrying its output.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import stat
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import GuestCommandError, HarnessError
from harness.guest.upload import upload
from harness.resources import selftest_files_dir
from harness.runner import GuestRunner
from harness.selftest.ktap import KtapReport, KtapResult, parse_ktap

#: kselftest's default per-test limit (tools/testing/selftests/kselftest/runner.sh).
DEFAULT_TIMEOUT = 300
KSFT_SKIP = 4
GUEST_ROOT = "/tmp/nh-selftests"
TRAILER = re.compile(r"^numa-harness-selftest: exit=(\d+) seconds=(\d+) timed_out=([01])\s*$")
#: Files an installed kselftest tree has that are not tests.
NOT_TESTS = {"run_kselftest.sh", "kselftest-list.txt", "settings", "config", "Makefile"}


@dataclass(frozen=True)
class Suite:
    """One directory sent to the guest and the tests in it (paths relative to it)."""

    root: Path
    tests: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.root.name


@dataclass
class Outcome:
    """What one test did: its exit, its KTAP, and the verdict."""

    suite: str
    test: str
    exit_status: int | None
    timed_out: bool
    seconds: float
    output: str
    report: KtapReport = field(default_factory=KtapReport)
    error: str = ""   # the harness could not run it (SSH lost, guest panicked)

    @property
    def status(self) -> str:
        """pass, fail or skip, for the whole test."""
        return verdict(self)[0]

    @property
    def reason(self) -> str:
        return verdict(self)[1]


# --------------------------------------------------------------------------- pure logic


def select_tests(entries: Iterable[tuple[str, bool]], listing: str | None = None) -> list[str]:
    """Tests among a directory's top-level files: ``(name, executable)`` pairs.

    With an installed kselftest tree's ``kselftest-list.txt`` (``collection:test`` lines)
    that list is the truth; otherwise every executable file but the runner's own.
    """
    if listing is not None:
        out = []
        for line in listing.splitlines():
            if ":" in line:
                coll, test = line.strip().split(":", 1)
                out.append(f"{coll}/{test}")
        return out
    return sorted(n for n, executable in entries
                  if executable and n not in NOT_TESTS and not n.startswith("."))


def parse_run_output(text: str) -> tuple[str, int | None, float, bool]:
    """run-one.sh's output -> (test output, exit status, seconds, timed out).

    No trailer means the wrapper itself was cut off: exit status None.
    """
    lines = text.rstrip("\n").split("\n")
    if lines and (m := TRAILER.match(lines[-1])):
        body = "\n".join(lines[:-1])
        return (body + "\n" if body else ""), int(m.group(1)), float(m.group(2)), m.group(3) == "1"
    return text, None, 0.0, False


def verdict(o: Outcome) -> tuple[str, str]:
    """(pass|fail|skip, reason) for a test, from its exit status and its KTAP."""
    rep = o.report
    if o.error:
        return "fail", o.error
    if o.timed_out:
        return "fail", f"timed out after {o.seconds:.0f} s"
    if o.exit_status is None:
        return "fail", "no exit status (the run was cut off)"
    if o.exit_status == KSFT_SKIP:
        return "skip", rep.skip_all or _last_diagnostic(rep) or "exit 4 (skip)"
    if o.exit_status > 128:
        return "fail", f"killed by signal {o.exit_status - 128}"
    if rep.bail_out is not None:
        return "fail", f"Bail out! {rep.bail_out}"
    failed = [r for _, r in rep.walk() if r.status in ("fail", "xpass", "error")]
    if failed:
        return "fail", f"{len(failed)} failed: " + ", ".join(r.name or f"#{r.number}" for r in failed[:3])
    if rep.missing:
        return "fail", f"{rep.missing} of {rep.plan} planned tests never reported"
    if o.exit_status != 0:
        return "fail", f"exit status {o.exit_status}"
    if rep.plan == 0 and rep.skip_all is not None:
        return "skip", rep.skip_all or "1..0 # SKIP"
    return "pass", ""


def _last_diagnostic(rep: KtapReport) -> str:
    lines = [ln for r in rep.results for ln in r.diagnostics] + [
        ln.lstrip("#").strip() for ln in rep.log if ln.startswith("#")]
    lines = [ln for ln in lines if not ln.startswith("Totals:")]
    return lines[-1] if lines else ""


def case_results(o: Outcome) -> list[tuple[str, KtapResult]]:
    """Every KTAP result of a test, as ``(path "a/b", result)``, depth first."""
    return [("/".join(p), r) for p, r in o.report.walk()]


def bundle(suite: Suite) -> bytes:
    """A gzip'd tar of the suite's directory (symlinks kept) plus the runner, for the guest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        tar.add(str(suite.root), arcname=suite.name, recursive=True,
                filter=lambda ti: None if ti.name.endswith(("/.git", "/__pycache__")) else ti)
        tar.add(str(selftest_files_dir() / "run-one.sh"), arcname="run-one.sh")
    return buf.getvalue()




# --------------------------------------------------------------------------- I/O


def discover(path: Path) -> Suite:
    """The suite for a directory, or for one test file (its directory, only that test)."""
    path = Path(path).expanduser().resolve()
    if path.is_file():
        return Suite(path.parent, (path.name,))
    if not path.is_dir():
        raise HarnessError(f"{path} is neither a test file nor a directory of tests")
    listing = path / "kselftest-list.txt"
    entries = [(p.name, p.is_file() and bool(p.stat().st_mode & stat.S_IXUSR)) for p in path.iterdir()]
    tests = select_tests(entries, listing.read_text() if listing.is_file() else None)
    if not tests:
        raise HarnessError(f"{path} holds no executable tests",
                           hint="tests are the executable files of the directory (chmod +x them)")
    return Suite(path, tuple(tests))


def _run(guest: GuestRunner, command: str, timeout: float) -> tuple[int, str, str]:
    r = guest.run(command, timeout=timeout, check=False)
    return r.exit_status, r.stdout, r.stderr


def send(guest: GuestRunner, suite: Suite, say: Callable[[str], None] | None = None) -> str:
    """Copy the suite into the guest; returns its directory there."""
    data = bundle(suite)
    dest = f"{GUEST_ROOT}/{suite.name}.tar.gz"
    _run(guest, f"mkdir -p {GUEST_ROOT}", 30)
    upload(guest, data, dest, suite.name, say=(lambda i, n: say(
        f"copying {suite.name} into the guest ({len(data) // 1024} KiB, {i}/{n} chunks)")) if say else None)
    status, out, err = _run(guest, f"cd {GUEST_ROOT} && tar -xzf {dest} && rm -f {dest}", 120)
    if status != 0:
        raise GuestCommandError(f"unpacking {suite.name} in the guest failed: {err.strip() or out.strip()}")
    return f"{GUEST_ROOT}/{suite.name}"


def run_one(guest: GuestRunner, suite: Suite, where: str, test: str, timeout: float) -> Outcome:
    """Run one test of a sent suite; never raises for the test's own failure."""
    sub, _, name = test.rpartition("/")
    cmd = (f"sh {GUEST_ROOT}/run-one.sh {int(timeout)} {shlex.quote(where + ('/' + sub if sub else ''))} "
           f"{shlex.quote(name)} 2>&1")
    t0 = time.monotonic()
    try:
        _, out, _ = _run(guest, cmd, timeout + 60)
    except HarnessError as e:
        return Outcome(suite.name, test, None, False, time.monotonic() - t0, "", error=str(e).splitlines()[0])
    body, status, seconds, timed_out = parse_run_output(out)
    return Outcome(suite.name, test, status, timed_out, seconds, body, parse_ktap(body))


def run_suites(guest: GuestRunner, paths: Sequence[Path], *, timeout: float = DEFAULT_TIMEOUT,
               say: Callable[[str], None] | None = None,
               on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Send each directory, run its tests in order, return every outcome.

    If the guest dies (panic, lost SSH), the remaining tests fail with that reason.
    """
    outcomes: list[Outcome] = []
    dead = ""
    for path in paths:
        suite = discover(path)
        if not dead:
            try:
                where = send(guest, suite, say)
            except HarnessError as e:
                dead = f"could not send {suite.name}: {str(e).splitlines()[0]}"
        for test in suite.tests:
            if dead:
                o = Outcome(suite.name, test, None, False, 0.0, "", error=f"not run: {dead}")
            else:
                if say:
                    say(f"{suite.name}/{test}")
                o = run_one(guest, suite, where, test, timeout)
                if o.error:
                    dead = o.error
            outcomes.append(o)
            if on_outcome:
                on_outcome(o)
    return outcomes


def path_env_timeout() -> float:
    """$NUMA_HARNESS_SELFTEST_TIMEOUT, else kselftest's 300 s."""
    try:
        return float(os.environ.get("NUMA_HARNESS_SELFTEST_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return float(DEFAULT_TIMEOUT)
