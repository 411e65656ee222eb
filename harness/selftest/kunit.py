"""KUnit in the guest: read the suites' KTAP results over SSH and turn them into outcomes.

A kernel built with ``CONFIG_KUNIT=y`` runs its built-in (``=y``) suites at boot,
before the guest's init, and with ``CONFIG_KUNIT_DEBUGFS=y`` keeps each suite's
KTAP in ``/sys/kernel/debug/kunit/<suite>/results`` (the guest init mounts
debugfs). A suite built as a module (``=m``) runs while its module loads, and
its results stay in debugfs until the module is unloaded.

Boot parameters (``lib/kunit/executor.c``): ``kunit.enable=0`` turns KUnit off
(its default is ``CONFIG_KUNIT_DEFAULT_ENABLED``); ``kunit.filter_glob=SUITE[.CASE]``
and ``kunit.filter=`` restrict which suites run at boot and on a module's load;
``kunit.action=list`` lists instead of running. The harness sets none of them:
every built-in suite runs at boot (debugfs then lists exactly the suites that
ran), and suite globs select among the results on the host.

The run (:func:`run_kunit`): the guest script ``files/kunit.sh`` and the
requested test modules (with their dependencies, from the kernel's
``modules.dep``, decompressed) go into the guest as one gzip'd tar, as the
selftest directories do; the script ``insmod``s each module not yet loaded and
prints every suite's results between marker lines, which :func:`parse_output`
reads back. No KUnit is a :class:`~harness.errors.KernelError` naming the option,
from the kernel's ``.config`` before booting when it is known
(:func:`config_problem`), else from the guest (no ``/sys/kernel/debug/kunit``).
"""

from __future__ import annotations

import fnmatch
import io
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import GuestCommandError, HarnessError, KernelError
from harness.guest.upload import upload
from harness.image.cpio import read_source
from harness.image.modules import close_modules, module_name, parse_builtin, parse_modules_dep
from harness.kernel.model import Kernel
from harness.resources import selftest_files_dir
from harness.runner import GuestRunner
from harness.selftest.ktap import KtapReport, KtapResult, parse_ktap
from harness.selftest.run import DEFAULT_TIMEOUT, Outcome, verdict

GUEST_DIR = "/tmp/nh-kunit"
MARK = "numa-harness-kunit: "
DEBUGFS = "/sys/kernel/debug/kunit"
#: Section names only a module with KUnit suites has (include/linux/module.h, kernel/module/main.c).
KUNIT_SECTIONS = (b"\0.kunit_test_suites\0", b"\0.kunit_init_test_suites\0")
#: The name results are grouped under (the "suite" column of a selftest outcome).
GROUP = "kunit"
NO_KUNIT_HINT = "build one with `harness kernel build --src KSRC --fragment kunit`: CONFIG_KUNIT=y, CONFIG_KUNIT_DEBUGFS=y"


# --------------------------------------------------------------------------- pure logic


def config_problem(config: Mapping[str, str] | None) -> str | None:
    """Why a kernel with this ``.config`` cannot report KUnit results, or None (also when unknown)."""
    if config is None:
        return None
    if config.get("CONFIG_KUNIT") not in ("y", "m"):
        return "the kernel has no KUnit (CONFIG_KUNIT is not set)"
    if config.get("CONFIG_DEBUG_FS") != "y":
        return "the kernel keeps no KUnit results (CONFIG_DEBUG_FS is not set)"
    if config.get("CONFIG_KUNIT_DEBUGFS") != "y":
        return "the kernel keeps no KUnit results (CONFIG_KUNIT_DEBUGFS is not set)"
    return None


def has_kunit_suites(module: bytes) -> bool:
    """True if a (decompressed) ``.ko`` has a KUnit suite section."""
    return any(s in module for s in KUNIT_SECTIONS)


def plan_modules(modules_dep: str, builtin: str, wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """(module paths to load, dependencies first; wanted names the kernel has neither as a module
    nor built in). A built-in name needs no loading: its suites ran at boot."""
    return close_modules(parse_modules_dep(modules_dep), wanted, parse_builtin(builtin))


@dataclass
class KunitOutput:
    """What ``kunit.sh`` printed, split up."""

    suites: dict[str, str] = field(default_factory=dict)        # name -> its results (KTAP), in order
    loaded: dict[str, float] = field(default_factory=dict)      # module -> seconds its insmod took
    insmod_failed: dict[str, str] = field(default_factory=dict)  # module -> "status=N" and insmod's output
    disabled: bool = False
    no_debugfs: bool = False
    complete: bool = False                                       # the end marker came


_LINE = re.compile(r"^numa-harness-kunit: (suite|loaded|insmod-failed|disabled|no-debugfs|end)\b\s*(.*)$")


def parse_output(text: str) -> KunitOutput:
    """``kunit.sh``'s output -> suites' results and what happened to each module."""
    o = KunitOutput()
    suites: dict[str, list[str]] = {}
    failed: dict[str, list[str]] = {}
    into: list[str] | None = None   # where lines that are not markers go
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            if into is not None:
                into.append(line)
            continue
        into = None
        kind, rest = m.groups()
        if kind == "suite":
            into = suites.setdefault(rest.strip(), [])
        elif kind == "loaded":
            name, _, secs = rest.partition(" seconds=")
            o.loaded[name.strip()] = float(secs or 0)
        elif kind == "insmod-failed":
            name, _, status = rest.partition(" ")
            into = failed.setdefault(name, [status])
        elif kind == "disabled":
            o.disabled = True
        elif kind == "no-debugfs":
            o.no_debugfs = True
        else:
            o.complete = True
    o.suites = {k: "\n".join(v) + "\n" for k, v in suites.items()}
    o.insmod_failed = {k: "\n".join(v).strip() for k, v in failed.items()}
    return o


def select_suites(names: Iterable[str], globs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(suites matching any glob, in the guest's order; globs that matched none).

    Globs are shell patterns on suite names, as the suite half of ``kunit.filter_glob``;
    none selects every suite."""
    names = list(names)
    if not globs:
        return names, []
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    unmatched = [g for g in globs if not any(fnmatch.fnmatchcase(n, g) for n in names)]
    return chosen, unmatched


@dataclass
class KunitOutcome(Outcome):
    """One KUnit suite: ``report`` holds its cases (the suite's subtests), ``suite_line`` the
    suite's own ``ok``/``not ok`` line of its results file (None if it never came)."""

    suite_line: KtapResult | None = None

    @property
    def status(self) -> str:
        return kunit_verdict(self)[0]

    @property
    def reason(self) -> str:
        return kunit_verdict(self)[1]


def suite_outcome(name: str, results: str, seconds: float = 0.0) -> KunitOutcome:
    """The outcome of one suite from its debugfs ``results`` text."""
    doc = parse_ktap(results)
    line = doc.results[0] if doc.results else None
    cases = line.subtests if line is not None and line.subtests is not None else KtapReport()
    return KunitOutcome(GROUP, name, 0, False, seconds, results, cases, suite_line=line)


def kunit_verdict(o: KunitOutcome) -> tuple[str, str]:
    """(pass|fail|skip, reason) for a suite: a suite skipped as a whole (every case skipped, or
    its init skipped it) is a skip with KUnit's reason; a suite that says ``not ok`` without a
    failed case (its init failed) is a failure; otherwise its cases decide, as a selftest's KTAP."""
    if o.error:
        return "fail", o.error
    top = o.suite_line
    if top is None:
        return "fail", "no result line for the suite in its results (did it run to the end?)"
    if top.status == "skip":
        return "skip", top.reason or "SKIP"
    status, why = verdict(o)
    if status == "pass" and top.status == "fail":
        diag = [d for d in top.diagnostics if not d.startswith("Subtest:")]
        return "fail", "the suite reports not ok" + (f": {diag[-1]}" if diag else "")
    return status, why


def outcomes(out: KunitOutput, globs: Sequence[str] = (), *, seconds: float = 0.0,
             modules: Sequence[str] = ()) -> list[KunitOutcome]:
    """One outcome per selected suite, plus failures for modules that did not load and
    globs that matched no suite (naming the suites there are)."""
    res: list[KunitOutcome] = []
    for name, why in out.insmod_failed.items():
        res.append(KunitOutcome(GROUP, f"insmod {name}", None, False, 0.0, why,
                                error=f"insmod {name} failed ({why.splitlines()[0] if why else 'no output'})"))
    chosen, unmatched = select_suites(out.suites, globs)
    for name in chosen:
        res.append(suite_outcome(name, out.suites[name], seconds))
    have = ", ".join(out.suites) or "none"
    for g in unmatched:
        hint = "" if modules else "; a suite built as a module runs only when loaded: --kunit-module NAME"
        res.append(KunitOutcome(GROUP, g, None, False, 0.0, "",
                                error=f"no KUnit suite matches {g!r} (suites: {have}{hint})"))
    if not globs and not out.suites:
        why = "KUnit is disabled (kunit.enable=0)" if out.disabled else "no KUnit suite ran in this kernel"
        res.append(KunitOutcome(GROUP, "(no suites)", None, False, 0.0, "", error=why))
    if not out.complete and not out.no_debugfs:
        res.append(KunitOutcome(GROUP, "(results)", None, False, 0.0, "",
                                error="the guest's KUnit listing was cut off before its end"))
    return res


def bundle(files: Mapping[str, bytes]) -> bytes:
    """A gzip'd tar of ``kunit.sh`` and ``files`` (name -> content) for the guest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        items = {"kunit.sh": (selftest_files_dir() / "kunit.sh").read_bytes(), **files}
        for name, data in items.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------------- I/O


def check_kernel(kernel: Kernel, config: Mapping[str, str] | None) -> None:
    """KernelError before booting if the kernel's ``.config`` says it cannot run KUnit."""
    why = config_problem(config)
    if why:
        raise KernelError(f"{kernel.origin}: {why}", hint=NO_KUNIT_HINT)


def split_modules(names: Sequence[str]) -> tuple[list[str], list[Path]]:
    """(names of the kernel's modules, paths of ``.ko`` files of the user's own)."""
    mods: list[str] = []
    files: list[Path] = []
    for n in names:
        if n.endswith(".ko") or "/" in n:
            files.append(Path(n).expanduser())
        else:
            mods.append(n)
    return mods, files


def module_files(kernel: Kernel, names: Sequence[str]) -> dict[str, bytes]:
    """``{name}.ko`` -> decompressed content, in load order: the kernel's modules named in
    ``names`` with their dependencies (from its ``modules.dep``), then ``.ko`` files given by path
    (a test module built out of tree, ``make -C BUILD M=DIR``)."""
    mods, paths = split_modules(names)
    out: dict[str, bytes] = {}
    if mods:
        out.update(_tree_modules(kernel, mods))
    for p in paths:
        if not p.is_file():
            raise KernelError(f"no module file {p}", hint="name one of the kernel's modules, or a built .ko file")
        out[f"{module_name(p.name)}.ko"] = read_source(p)
    return out


def _tree_modules(kernel: Kernel, names: Sequence[str]) -> dict[str, bytes]:
    mdir = kernel.modules_dir
    if mdir is None:
        raise KernelError(f"{kernel.origin} has no modules, so it cannot load {', '.join(names)}",
                          hint="pass --modules (a modules_install root) or --kernel-tree")
    try:
        dep = (mdir / "modules.dep").read_text()
    except OSError as e:
        raise KernelError(f"cannot read {mdir / 'modules.dep'}: {e.strerror}") from e
    builtin = (mdir / "modules.builtin").read_text() if (mdir / "modules.builtin").is_file() else ""
    paths, missing = plan_modules(dep, builtin, names)
    if missing:
        raise KernelError(f"{kernel.origin} has no module {', '.join(missing)}",
                          hint=f"KUnit modules it has: {', '.join(kunit_modules(kernel)) or 'none'}")
    return {f"{module_name(p)}.ko": read_source(mdir / p) for p in paths}


def kunit_modules(kernel: Kernel) -> list[str]:
    """Names of the kernel's modules that carry KUnit suites (reads every module: seconds)."""
    mdir = kernel.modules_dir
    if mdir is None or not (mdir / "modules.dep").is_file():
        return []
    out = []
    for p in parse_modules_dep((mdir / "modules.dep").read_text()):
        try:
            if has_kunit_suites(read_source(mdir / p)):
                out.append(module_name(p))
        except (OSError, ValueError):
            continue
    return sorted(out)


def read_results(guest: GuestRunner, kernel: Kernel, modules: Sequence[str] = (), *, timeout: float = DEFAULT_TIMEOUT,
                 say: Callable[[str], None] | None = None) -> KunitOutput:
    """Load ``modules`` in the guest (their suites run) and read every suite's results.

    ``timeout`` bounds each module's load (its suites run inside insmod) and the reading.
    Raises KernelError if the guest has no KUnit results directory, another HarnessError
    if the guest cannot be reached."""
    files = module_files(kernel, modules)
    data = bundle(files)
    if say:
        say(f"copying kunit.sh{' and ' + str(len(files)) + ' module(s)' if files else ''} into the guest")
    def step(cmd: str) -> None:
        r = guest.run(cmd, timeout=60, check=False)
        if r.exit_status != 0:
            raise GuestCommandError(f"copying KUnit files into the guest failed: {r.stderr.strip()}")

    step(f"rm -rf {GUEST_DIR} && mkdir -p {GUEST_DIR}")
    upload(guest, data, f"{GUEST_DIR}.tar.gz", "KUnit files")
    step(f"tar -xzf {GUEST_DIR}.tar.gz -C {GUEST_DIR} && rm -f {GUEST_DIR}.tar.gz")
    order = [n.removesuffix(".ko") for n in files]
    if say:
        say("loading " + ", ".join(order) if order else f"reading {DEBUGFS}")
    r = guest.run(f"sh {GUEST_DIR}/kunit.sh {GUEST_DIR} {' '.join(order)} 2>&1", timeout=timeout * (1 + len(order)),
                  check=False)
    out = parse_output(r.stdout)
    if out.no_debugfs:
        raise KernelError(f"{kernel.origin}: the guest has no {DEBUGFS} (no KUnit, or CONFIG_KUNIT_DEBUGFS is not set)",
                          hint=NO_KUNIT_HINT)
    return out


def run_kunit(guest: GuestRunner, kernel: Kernel, globs: Sequence[str] = (), modules: Sequence[str] = (), *,
              timeout: float = DEFAULT_TIMEOUT, say: Callable[[str], None] | None = None) -> list[KunitOutcome]:
    """:func:`read_results`, then one outcome per suite matching ``globs`` (every suite if none).

    A guest lost during the run is one failed outcome carrying why; no KUnit is a KernelError."""
    t0 = time.monotonic()
    try:
        out = read_results(guest, kernel, modules, timeout=timeout, say=say)
    except KernelError:
        raise
    except HarnessError as e:
        first = str(e).splitlines()[0]
        return [KunitOutcome(GROUP, "(run)", None, False, time.monotonic() - t0, "", error=f"KUnit run: {first}")]
    return outcomes(out, globs, modules=modules)
