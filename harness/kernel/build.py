"""Build a kernel from a source tree with the harness's config fragments.

``harness kernel build --src KSRC --fragment numa --fragment cxl`` does, in an
out-of-tree build directory ``cache_dir()/builds/<key>`` (``O=``)::

    make O=BUILD defconfig
    KSRC/scripts/kconfig/merge_config.sh -m -O BUILD BUILD/.config FRAGMENT...
    make O=BUILD olddefconfig
    (report every requested option that did not survive, and why)
    make O=BUILD -j N bzImage modules

and then installs the modules into the cache the way ``--kernel-tree BUILD``
does (:func:`harness.kernel.user.kernel_from_tree`), so the result boots
with ``harness boot TOPO --kernel-tree BUILD`` and ``pytest --kernel-tree BUILD``.

The planning half is pure (argv lists, fragment resolution, the key of a build
directory, the diff of requested and final options, the Kconfig reasons) and is
unit-tested; :func:`run_logged` and :func:`build` do the I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import KernelError
from harness.hints import KERNEL_BUILD_PACKAGES, install
from harness.kernel.config import _satisfies, parse_config
from harness.kernel.kconfig import explain, read_kconfig_tree
from harness.kernel.series import PatchResult, SeriesResult, apply_series
from harness.paths import cache_dir
from harness.resources import kernel_configs_dir

#: Always merged first: what the harness's own guest needs (console, virtio-net, initramfs).
BASE_FRAGMENT = "base"
BUILD_INFO = "numa-harness-build.json"
LOG_NAME = "numa-harness-build.log"
#: A full build on 2 busy cores took over an hour; allow plenty, but never wait forever.
DEFAULT_TIMEOUT = 6 * 3600
#: Host programs a kernel build runs, and the Debian package that has each.
BUILD_TOOLS = {"make": "make", "gcc": "gcc", "flex": "flex", "bison": "bison", "bc": "bc", "perl": "perl"}
BUILD_HEADERS = {"/usr/include/gelf.h": "libelf-dev", "/usr/include/openssl/ssl.h": "libssl-dev"}


# --------------------------------------------------------------------------- fragments


def available_fragments() -> list[str]:
    """Names of the fragments shipped with the harness (``numa``, ``cxl``, ...)."""
    return sorted(p.stem for p in kernel_configs_dir().glob("*.config"))


def resolve_fragments(names: Sequence[str], configs_dir: Path | None = None,
                      with_base: bool = True) -> list[Path]:
    """Fragment files for ``names``: a shipped fragment's name, or a path to a user's own file.

    ``base`` comes first (unless ``with_base`` is false); duplicates are dropped, order kept
    (a later fragment overrides an earlier one, as in merge_config.sh).
    """
    configs_dir = configs_dir or kernel_configs_dir()
    wanted = ([BASE_FRAGMENT] if with_base else []) + list(names)
    out: list[Path] = []
    for name in wanted:
        shipped = configs_dir / f"{name.removesuffix('.config')}.config"
        if "/" not in name and shipped.is_file():
            path = shipped
        elif Path(name).expanduser().is_file():
            path = Path(name).expanduser().resolve()
        else:
            known = ", ".join(sorted(p.stem for p in configs_dir.glob("*.config")))
            raise KernelError(f"unknown kernel-config fragment {name!r}",
                              hint=f"use one of: {known}; or a path to your own fragment file")
        if path not in out:
            out.append(path)
    return out


def parse_fragment(text: str) -> dict[str, str]:
    """A fragment's requests: ``CONFIG_X=v`` lines, and ``# CONFIG_X is not set`` as ``"n"``."""
    out = parse_config(text)
    for m in re.finditer(r"^#\s*(CONFIG_[A-Za-z0-9_]+) is not set\s*$", text, re.M):
        out[m.group(1)] = "n"
    return out


def requested_options(fragment_texts: Iterable[str]) -> dict[str, str]:
    """All fragments' requests merged in order; the last fragment to name an option wins."""
    out: dict[str, str] = {}
    for text in fragment_texts:
        out.update(parse_fragment(text))
    return out


# --------------------------------------------------------------------------- plan


def build_key(src: Path, fragments: Sequence[Path], series: str = "") -> str:
    """Identity of a build directory: the source tree's path, the fragments' names, in order, and
    the content hash of a series applied with ``--apply`` (:func:`harness.kernel.series.series_hash`).

    Fragment contents are not part of it: editing a fragment rebuilds in the same directory,
    which make keeps incremental. A different series (or none) builds in a directory of its own.
    """
    text = "\n".join([str(Path(src).resolve()), *(str(f) for f in fragments)] + ([f"series {series}"] if series else []))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_build_dir(src: Path, fragments: Sequence[Path], series: str = "") -> Path:
    return cache_dir() / "builds" / build_key(src, fragments, series)


def series_copy_dir(src: Path) -> Path:
    """Where ``--apply`` copies a source tree that is not a git tree (keyed by its path)."""
    return cache_dir() / "trees" / hashlib.sha256(str(Path(src).resolve()).encode()).hexdigest()[:16]


def make_argv(src: Path, out: Path, *targets: str, jobs: int | None = None, extra: Sequence[str] = ()) -> list[str]:
    argv = ["make", "-C", str(src), f"O={out}"]
    if jobs:
        argv.append(f"-j{jobs}")
    return [*argv, *extra, *targets]


def merge_argv(src: Path, out: Path, fragments: Sequence[Path]) -> list[str]:
    """The kernel's own merge: ``-m`` merges only (no make), ``-O`` writes into the build dir."""
    return [str(src / "scripts" / "kconfig" / "merge_config.sh"), "-m", "-O", str(out), str(out / ".config"),
            *map(str, fragments)]


@dataclass(frozen=True)
class Step:
    title: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: A long step (the compile): shown with the current make line, output in the log.
    long: bool = False


def plan_build(src: Path, out: Path, fragments: Sequence[Path], jobs: int) -> list[Step]:
    """The commands of one build, in order."""
    return [
        Step("make defconfig", make_argv(src, out, "defconfig")),
        # -m: merge only (olddefconfig follows); KCONFIG_CONFIG pinned so a user's env cannot redirect it.
        Step("merge fragments (merge_config.sh)", merge_argv(src, out, fragments),
             env={"KCONFIG_CONFIG": str(out / ".config")}),
        Step("make olddefconfig", make_argv(src, out, "olddefconfig")),
        Step(f"make -j{jobs} bzImage modules", make_argv(src, out, "bzImage", "modules", jobs=jobs), long=True),
    ]


# --------------------------------------------------------------------------- what did not survive


@dataclass(frozen=True)
class LostOption:
    option: str          # CONFIG_X
    requested: str       # y / m / n / a value
    actual: str | None   # None: not set
    why: str = ""        # Kconfig reason, if known

    def line(self) -> str:
        have = "not set" if self.actual is None else self.actual
        text = f"{self.option}: requested {self.requested}, got {have}"
        return f"{text} ({self.why})" if self.why else text


def did_not_survive(requested: Mapping[str, str], final: Mapping[str, str]) -> list[LostOption]:
    """Requested options the final ``.config`` does not honour.

    ``m`` is honoured by ``y`` (a dependency may force it built-in); ``n`` by an unset option.
    """
    lost = []
    for opt, want in requested.items():
        have = final.get(opt)
        if want == "n":
            ok = have in (None, "n")
        else:
            ok = _satisfies(have, want)
        if not ok:
            lost.append(LostOption(opt, want, have))
    return lost


def lost_options(src: Path, fragments: Sequence[Path], config: Path) -> list[LostOption]:
    """The did-not-survive report for a merged build directory, with Kconfig reasons."""
    requested = requested_options(f.read_text() for f in fragments)
    final = parse_config(config.read_text(errors="replace"))
    lost = did_not_survive(requested, final)
    if not lost:
        return []
    entries = read_kconfig_tree(src)
    return [LostOption(x.option, x.requested, x.actual, explain(x.option, entries, final, x.requested)) for x in lost]


# --------------------------------------------------------------------------- I/O


def check_build_host(src: Path) -> None:
    """KernelError naming what the host or the tree lacks for a build."""
    if not (src / "Makefile").is_file() or not (src / "scripts" / "kconfig" / "merge_config.sh").is_file():
        raise KernelError(f"{src} is not a kernel source tree (no Makefile or scripts/kconfig/merge_config.sh)",
                          hint="pass --src the top of an unpacked kernel source, e.g. /usr/src/linux-source-6.12")
    if (src / ".config").exists() or (src / "include" / "config").is_dir():
        raise KernelError(f"{src} has been configured in place, so an out-of-tree (O=) build refuses it",
                          hint=f"run `make -C {src} mrproper` first")
    missing = [pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None]
    missing += [pkg for header, pkg in BUILD_HEADERS.items() if not Path(header).is_file()]
    if missing:
        raise KernelError(f"a kernel build needs host packages that are missing: {' '.join(sorted(set(missing)))}",
                          hint=install(*KERNEL_BUILD_PACKAGES))


#: Lines of make output worth showing as "what it is doing now" (CC, LD, AR, ... lines).
MAKE_ACTION = re.compile(r"^\s{2}([A-Z][A-Z0-9_\[\] ]{1,10})\s+(\S.*)$")


def make_action(line: str) -> str | None:
    """``"  CC [M]  fs/xfs/xfs_buf.o"`` -> ``"CC [M] fs/xfs/xfs_buf.o"``; None for other lines."""
    m = MAKE_ACTION.match(line.rstrip("\n"))
    if not m:
        return None
    return f"{' '.join(m.group(1).split())} {m.group(2).strip()}"


def run_logged(argv: Sequence[str], log: Path, *, timeout: float, what: str,
               on_line: Callable[[str], None] | None = None, env: Mapping[str, str] | None = None,
               cwd: Path | None = None) -> None:
    """Run ``argv``, appending its output to ``log``; each line goes to ``on_line``.

    A failure or timeout raises KernelError with the log's last error lines.
    """
    full_env = {**os.environ, **(env or {})}
    with log.open("a", buffering=1) as fh:  # line-buffered: `tail -f` the log during a build
        fh.write(f"\n$ {' '.join(argv)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", env=full_env, cwd=cwd, start_new_session=True)
        except FileNotFoundError as e:
            raise KernelError(f"{what}: {argv[0]} not found", hint=install(*KERNEL_BUILD_PACKAGES)) from e
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                if on_line is not None:
                    on_line(line)
            proc.wait(timeout=60)
        except BaseException:
            kill()
            proc.wait(timeout=60)
            raise
        finally:
            timer.cancel()
    if timed_out.is_set():
        raise KernelError(f"{what} did not finish in {timeout:.0f} s", hint=f"see {log}; raise --timeout")
    if proc.returncode != 0:
        raise KernelError(f"{what} failed with exit code {proc.returncode}", hint=f"full output in {log}",
                          detail=error_excerpt(log.read_text(errors="replace")))


def error_excerpt(log_text: str, limit: int = 25) -> str:
    """The lines of a build log that say what went wrong (errors first, else its tail)."""
    lines = log_text.splitlines()
    hits = [ln for ln in lines if re.search(r"\berror\b|\*\*\*|Error \d+|undefined reference", ln, re.I)]
    return "\n".join((hits or lines)[-limit:])


@dataclass
class BuildResult:
    build_dir: Path
    fragments: list[str]
    lost: list[LostOption]
    seconds: dict[str, float]
    release: str = ""
    series: SeriesResult | None = None


def build(src: Path, fragment_names: Sequence[str], *, jobs: int | None = None, out: Path | None = None,
          timeout: float = DEFAULT_TIMEOUT, on_step: Callable[[str], None] | None = None,
          on_line: Callable[[str], None] | None = None,
          on_lost: Callable[[list[LostOption]], None] | None = None,
          config_only: bool = False, apply: Sequence[Path] = (),
          on_patch: Callable[[PatchResult], None] | None = None,
          on_series: Callable[[SeriesResult], None] | None = None) -> BuildResult:
    """Configure and build ``src`` in an O= directory; returns where, and what did not survive.

    ``apply``: patch series applied first (:func:`harness.kernel.series.apply_series`: a new
    branch of ``src``, or of a git copy of it); the build then runs on that branch, in a build
    directory keyed by the series too. ``config_only`` stops after olddefconfig and the report
    (no compile)."""
    src = Path(src).expanduser().resolve()
    fragments = resolve_fragments(fragment_names)
    applied: SeriesResult | None = None
    check_build_host(src)
    if apply:
        if on_step:
            on_step(f"git am -3 {' '.join(str(p) for p in apply)}")
        applied = apply_series(src, apply, copy_to=series_copy_dir(src), on_patch=on_patch)
        if on_series:
            on_series(applied)
        src = applied.tree
    check_build_host(src)
    out = Path(out).expanduser().resolve() if out else default_build_dir(src, fragments,
                                                                        applied.hash if applied else "")
    out.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    log = out / LOG_NAME
    log.write_text(f"# harness kernel build of {src} with {' '.join(f.name for f in fragments)}\n")
    seconds: dict[str, float] = {}
    lost: list[LostOption] = []
    deadline = time.monotonic() + timeout
    for step in plan_build(src, out, fragments, jobs):
        if config_only and step.long:
            break
        if on_step:
            on_step(step.title)
        t0 = time.monotonic()
        run_logged(step.argv, log, timeout=max(1.0, deadline - time.monotonic()), what=step.title,
                   on_line=on_line if step.long else None, env=step.env, cwd=out)
        seconds[step.title] = round(time.monotonic() - t0, 1)
        if step.title == "make olddefconfig":
            if on_step:
                on_step("comparing the requested options with .config (Kconfig dependencies)")
            lost = lost_options(src, fragments, out / ".config")
            if on_lost:
                on_lost(lost)
    rel = out / "include" / "config" / "kernel.release"
    result = BuildResult(out, [f.stem for f in fragments], lost, seconds,
                         rel.read_text().strip() if rel.is_file() else "", applied)
    info = {"src": str(src), "fragments": [str(f) for f in fragments], "jobs": jobs,
            "series": ({"hash": applied.hash, "branch": applied.branch, "base": applied.base,
                        "patches": [p.line().strip() for p in applied.patches]} if applied else None),
            "seconds": seconds, "release": result.release, "lost": [asdict(x) for x in lost],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n")
    return result


# --------------------------------------------------------------------------- the series kernel

#: A build directory of a kernel carrying the private-node series (what its live tests boot).
SERIES_KERNEL_ENV = "NUMA_HARNESS_SERIES_KERNEL"
#: The series' one Kconfig symbol (RFC v4 23/27): a build with it set carries the series.
SERIES_OPTION = "CONFIG_CRAM"
SERIES_BUILD_HINT = ("build one with `harness kernel build --src LINUX_7.2_TREE --apply SERIES.mbox --fragment numa "
                     f"--fragment cxl --fragment private-nodes`, or set {SERIES_KERNEL_ENV} to its build directory")


def is_series_build(tree: Path) -> bool:
    """A built kernel tree (bzImage and modules) whose .config has the series' option set."""
    cfg = tree / ".config"
    return ((tree / "arch" / "x86" / "boot" / "bzImage").is_file() and (tree / "Module.symvers").is_file()
            and cfg.is_file() and parse_config(cfg.read_text(errors="replace")).get(SERIES_OPTION) == "y")


def find_series_kernel() -> Path | None:
    """``$NUMA_HARNESS_SERIES_KERNEL`` if set (it must be a series build), else the newest series
    build in the harness cache (``harness kernel build --apply``), else None."""
    env = os.environ.get(SERIES_KERNEL_ENV)
    if env:
        tree = Path(env).expanduser().resolve()
        if not is_series_build(tree):
            raise KernelError(f"{SERIES_KERNEL_ENV}={env} is not a built kernel with {SERIES_OPTION}=y",
                              hint=SERIES_BUILD_HINT)
        return tree
    builds = cache_dir() / "builds"
    found = [d for d in builds.iterdir() if d.is_dir() and is_series_build(d)] if builds.is_dir() else []
    return max(found, key=lambda d: (d / "arch" / "x86" / "boot" / "bzImage").stat().st_mtime, default=None)
