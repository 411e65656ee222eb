"""``harness kernel build | check | fetch | fragments``: build a kernel for the harness, check one's
config, fetch a Debian kernel into the cache.

``build`` configures a source tree out of tree with the harness's fragments
(:mod:`harness.kernel.build`), reports every requested option that did not
survive ``olddefconfig`` and why, compiles with a spinner showing the current
make line, and installs the modules so ``--kernel-tree BUILD`` boots it.
``check`` lists what a kernel's ``.config`` lacks for topologies and for the
``requires_kconfig`` markers of a test directory. ``fetch debian:X.Y`` downloads
Debian's newest X.Y kernel into the cache (:mod:`harness.kernel.debian`), to boot
with ``--kernel debian:X.Y``.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.errors import KernelError
from harness.kernel import build as kbuild
from harness.kernel.config import describe_missing, missing_options, parse_config, read_config
from harness.kernel.markers import scan_requires_kconfig
from harness.kernel.model import Kernel
from harness.kernel.needs import guest_needs
from harness.kernel.series import PatchResult, SeriesError, SeriesResult

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{seconds:.1f} s"


@dataclass
class _StepState:
    step: str = ""
    t0: float = field(default_factory=time.monotonic)
    lines: int = 0


def cmd_build(args: argparse.Namespace) -> int:
    from harness.kernel.user import kernel_from_tree

    t_start = time.monotonic()
    status = err.status("starting")
    status.start()
    state = _StepState()

    def on_step(title: str) -> None:
        if state.step:
            err.print(f"[green]✓[/green] {state.step} [dim]({_fmt(time.monotonic() - state.t0)})[/dim]")
        state.step, state.t0, state.lines = title, time.monotonic(), 0
        status.update(title)

    def on_line(line: str) -> None:
        state.lines += 1
        action = kbuild.make_action(line)
        if action:
            status.update(f"{state.step} [dim]({_fmt(time.monotonic() - state.t0)}, "
                          f"{state.lines} lines)[/dim]: {action[:90]}")

    def on_lost(lost: list[kbuild.LostOption]) -> None:
        if not lost:
            err.print("[green]✓[/green] every requested option survived olddefconfig")
            return
        table = Table(title=f"{len(lost)} requested option(s) did not survive olddefconfig", title_justify="left")
        table.add_column("option", style="bold")
        table.add_column("requested")
        table.add_column("got")
        table.add_column("why (Kconfig)")
        for x in lost:
            table.add_row(x.option, x.requested, x.actual or "not set", x.why)
        status.stop()
        err.print(table)
        status.start()

    def on_patch(p: PatchResult) -> None:
        colour = {"applied": "green", "3-way": "yellow", "failed": "red"}.get(p.status, "dim")
        err.print(f"[{colour}]{p.line()}[/{colour}]")

    def on_series(s: SeriesResult) -> None:
        if s.copied_from:
            err.print(f"[dim]{s.copied_from} is not a git tree: applied to a git copy of it, {s.tree}[/dim]")
        if s.reused:
            err.print(f"[green]✓[/green] branch {s.branch} already holds this series ({len(s.patches)} patches): "
                      "not re-applied")
        err.print(f"[bold]{s.tree} is now on branch {s.branch}[/bold] (made from {s.base[:12]}; "
                  f"it was on {s.previous}: `git -C {s.tree} checkout {s.previous}` goes back)")

    try:
        try:
            result = kbuild.build(Path(args.src), args.fragment or [], jobs=args.jobs,
                                  out=Path(args.out) if args.out else None, timeout=args.timeout,
                                  on_step=on_step, on_line=on_line, on_lost=on_lost, config_only=args.config_only,
                                  apply=[Path(p) for p in args.apply or []], on_patch=on_patch, on_series=on_series)
        except SeriesError as e:
            for p in e.result.patches[e.failed.number:]:
                on_patch(p)
            raise
        if not args.config_only:
            on_step("make modules_install (into the harness cache)")
            kernel_from_tree(result.build_dir, progress=lambda m: status.update(m))
        on_step("")
    finally:
        status.stop()
    total = time.monotonic() - t_start
    if args.config_only:
        err.print(f"configured in {_fmt(total)}: {result.build_dir / '.config'}")
        print(result.build_dir)
        return 1 if (args.strict and result.lost) else 0
    err.print(f"[bold green]built[/bold green] {result.release or 'kernel'} in {_fmt(total)}: {result.build_dir}")
    err.print(f"[dim]log: {result.build_dir / kbuild.LOG_NAME}; boot it with: "
              f"harness boot TOPOLOGY --kernel-tree {result.build_dir}[/dim]")
    print(result.build_dir)
    return 1 if (args.strict and result.lost) else 0


def _kernel_config(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """(origin, parsed .config) of the kernel named by the options; a tree is not installed."""
    if args.kernel_config:
        p = Path(args.kernel_config).expanduser()
        if not p.is_file():
            raise KernelError(f"kernel config {p} does not exist")
        return str(p), parse_config(p.read_text(errors="replace"))
    tree = args.kernel_tree or (args.kernel if args.kernel and Path(args.kernel).is_dir() else None)
    if tree:
        cfg = Path(tree).expanduser() / ".config"
        if not cfg.is_file():
            raise KernelError(f"{tree} has no .config", hint="pass the kernel's source or O= build directory")
        return f"tree: {tree}", parse_config(cfg.read_text(errors="replace"))
    from harness.boot.prepare import KernelSpec, resolve_kernel

    k: Kernel = resolve_kernel(KernelSpec(image=Path(args.kernel) if args.kernel else None))
    return k.origin, read_config(k)


def recommended_missing(topology: object, cfg: dict[str, str]) -> str:
    """Options a topology works without, but better with (the harness works around their absence)."""
    from harness.topology.model import Topology

    assert isinstance(topology, Topology)
    if topology.guest.regions and cfg.get("CONFIG_CXL_REGION_INVALIDATION_TEST") != "y":
        return ("CONFIG_CXL_REGION_INVALIDATION_TEST=y (else a region commits only because the harness "
                "hides the CPU's hypervisor bit)")
    return ""


def cmd_check(args: argparse.Namespace) -> int:
    from harness.topology import load, preset_names

    origin, cfg = _kernel_config(args)
    topologies = args.topologies or ([] if args.tests else preset_names())
    rows: list[dict] = []  # the --json "checks", one per topology and per marker
    for ref in topologies:
        t = load(ref).topology
        needs = guest_needs(t)
        miss = describe_missing(missing_options(cfg, needs.config), needs.why)
        rows.append({"kind": "topology", "name": ref, "missing": miss, "recommended": recommended_missing(t, cfg) or None})
    notes = []
    for tests in args.tests or []:
        reqs = scan_requires_kconfig(Path(tests))
        if not reqs:
            notes.append(f"no requires_kconfig(...) markers under {tests}")
        for req in reqs:
            miss = describe_missing(missing_options(cfg, {o: "m" for o in req.options}))
            rows.append({"kind": "marker", "name": f"{req.where} ({req.test})", "missing": miss, "recommended": None})
    lacking = sum(bool(r["missing"]) for r in rows)
    if args.json:
        from harness.cli.main import print_json

        print_json({"kernel": origin, "ok": not lacking, "checks": rows})
        return 1 if lacking else 0
    out.print(f"kernel config of {origin}", soft_wrap=True)
    for note in notes:
        out.print(f"[dim]{note}[/dim]")
    table = Table()
    table.add_column("for", style="bold cyan")
    table.add_column("missing")
    for r in rows:
        table.add_row(r["name"], "\n".join(r["missing"]) if r["missing"] else "[green]nothing[/green]")
        if r["recommended"]:
            table.add_row("", f"[yellow]recommended:[/yellow] {r['recommended']}")
    out.print(table)
    return 1 if lacking else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from harness.kernel.debian import debian_kernel, default_kernel, parse_debian_name

    if args.name == "default":
        k = default_kernel(progress=lambda m: err.print(f"[dim]{m}[/dim]"))
    else:
        series = parse_debian_name(args.name)
        if series is None:
            raise KernelError(f"{args.name!r} is not a kernel name harness can fetch",
                              hint="name Debian's kernel of a series, e.g. debian:7.2, or `default`")
        k = debian_kernel(series, progress=lambda m: err.print(f"[dim]{m}[/dim]"), refresh=True)
    err.print(f"[bold green]cached[/bold green] {k.release} ({k.origin})")
    err.print(f"[dim]image {k.image}; config {k.config or '(none)'}; modules {k.modules_dir or '(none)'}[/dim]")
    if args.name != "default":
        err.print(f"[dim]boot it with: harness boot TOPOLOGY --kernel {args.name}   "
                  f"(pytest --kernel {args.name}, NUMA_HARNESS_KERNEL={args.name}, make test KERNEL={args.name})[/dim]")
    print(k.image.parent.parent)
    return 0


def fragment_summary(text: str) -> str:
    """The first sentence of a fragment's leading comment, without its ``numa-harness fragment "x":``."""
    head = []
    for ln in text.splitlines():
        if not ln.startswith("#"):
            break
        head.append(ln.lstrip("#").strip())
    joined = " ".join(head)
    joined = re.sub(r'^numa-harness(?: fragment "[^"]*")?:\s*', "", joined)
    return joined.split(". ")[0].rstrip(".")


def cmd_fragments(args: argparse.Namespace) -> int:
    from harness.resources import kernel_configs_dir

    table = Table(title=f"kernel-config fragments ({kernel_configs_dir()})", title_justify="left")
    table.add_column("name", style="bold cyan")
    table.add_column("options", justify="right")
    table.add_column("about")
    for name in kbuild.available_fragments():
        text = (kernel_configs_dir() / f"{name}.config").read_text()
        about = fragment_summary(text)
        table.add_row(name, str(len(kbuild.parse_fragment(text))), about)
    out.print(table)
    return 0


def cmd_kernel(args: argparse.Namespace) -> int:
    return {"build": cmd_build, "check": cmd_check, "fetch": cmd_fetch,
            "fragments": cmd_fragments}[args.kernel_command](args)


def register(sub: argparse._SubParsersAction, command: Callable) -> None:
    command("kernel")(cmd_kernel)
    k = sub.add_parser("kernel", help="build a kernel with the harness's config fragments, or check a kernel's config")
    ks = k.add_subparsers(dest="kernel_command", metavar="SUBCOMMAND", required=True)

    b = ks.add_parser("build", help="configure (defconfig + fragments) and build a kernel source tree out of tree")
    b.add_argument("--src", required=True, help="the kernel source tree (e.g. /usr/src/linux-source-6.12)")
    b.add_argument("--fragment", action="append", metavar="NAME",
                   help="a fragment to merge (repeatable): a shipped name (`harness kernel fragments`) or a file; "
                        "base is always merged first")
    b.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="make jobs (default: CPU count)")
    b.add_argument("--out", help="build directory (default: in the harness cache, keyed by source and fragments)")
    b.add_argument("--timeout", type=float, default=kbuild.DEFAULT_TIMEOUT,
                   help=f"seconds the whole build may take (default {kbuild.DEFAULT_TIMEOUT})")
    b.add_argument("--strict", action="store_true", help="exit 1 if a requested option did not survive")
    b.add_argument("--apply", action="extend", nargs="+", metavar="SERIES",
                   help="patch series to apply first with git am -3, in order: an mbox (as b4 am writes it) or a "
                        "directory of numbered .patch files; applied onto a new branch numa-harness/series-* of "
                        "--src (or of a git copy when --src is not a git tree); the build directory is keyed by "
                        "the series too")
    b.add_argument("--config-only", action="store_true",
                   help="stop after the merge and the report of options that did not survive (no compile)")

    c = ks.add_parser("check", help="what a kernel's config lacks for topologies and test markers")
    c.add_argument("topologies", nargs="*", metavar="TOPOLOGY", help="presets or YAML files (default: every preset)")
    c.add_argument("--kernel", help="a bzImage (its .config found next to it), a build tree, or debian:X.Y")
    c.add_argument("--kernel-tree", help="a kernel build tree (its .config)")
    c.add_argument("--kernel-config", help="a kernel .config file")
    c.add_argument("--tests", action="append", metavar="DIR",
                   help="also check every requires_kconfig(...) marker in this test directory (repeatable)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")

    f = ks.add_parser("fetch", help="download Debian's kernel of a series into the cache (debian:7.2)")
    f.add_argument("name", nargs="?", default="default", metavar="NAME",
                   help="debian:X.Y (Debian's newest X.Y kernel; the package index is refreshed first) "
                        "or default (the default kernel)")

    ks.add_parser("fragments", help="list the shipped kernel-config fragments")
