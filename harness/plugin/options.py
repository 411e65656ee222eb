"""The plugin's settings: one table; each setting is a command-line option, an ini key and an environment variable.

Names follow one rule: the option ``--nh-NAME``, the ini key ``nh_NAME`` (``pytest.ini``,
``[tool.pytest.ini_options]`` in ``pyproject.toml``, ``tox.ini``, ``setup.cfg``) and the variable
``NUMA_HARNESS_NAME`` (dashes become underscores). The first of these that is set wins:
command line, then ini file, then environment, then the default. A relative path in an ini
file is relative to that file's folder; on the command line or in the environment, to the
working directory. A repeatable option is a list in the ini file (TOML list, or words) and in
the environment (paths separated by ``:``, other values by spaces or commas).

The names the plugin used before the prefix (``--kernel``, ``--modules``, ``--qemu``,
``--accel``, ``--topology``, ``--ktap-dir``, ...) are aliases, registered after the repository's
own conftests have registered theirs and only when nothing else owns the name: a conftest
that defines ``--kernel`` keeps it.

Imported with the plugin at every pytest start: light imports only.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.selftest.run import DEFAULT_TIMEOUT

PREFIX = "nh"
ENV_PREFIX = "NUMA_HARNESS_"
DEFAULT_KTAP_TOPOLOGY = "numa-basic"
DEFAULT_KTAP_TIMEOUT = float(DEFAULT_TIMEOUT)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_SOURCES = pytest.StashKey[dict[str, str]]()


@dataclass(frozen=True)
class Setting:
    """One setting of the plugin."""

    name: str                  # "kernel-tree": --nh-kernel-tree, nh_kernel_tree, $NUMA_HARNESS_KERNEL_TREE
    help: str
    kind: str = "str"          # str | path | program (a path, or a name looked up on PATH) | kernel | bool | float
    many: bool = False         # repeatable; a list
    alias: str | None = None   # the name before the prefix, registered only when free
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    default: Any = None
    dest_name: str | None = None  # config.option attribute, when it predates the rule

    @property
    def option(self) -> str:
        return f"--{PREFIX}-{self.name}"

    @property
    def ini(self) -> str:
        return f"{PREFIX}_{self.name.replace('-', '_')}"

    @property
    def dest(self) -> str:
        return self.dest_name or self.ini

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.replace("-", "_").upper()


CORE: tuple[Setting, ...] = (
    Setting("kernel", "kernel to boot: a bzImage, a build tree, or debian:X.Y (Debian's X.Y kernel, fetched and "
            "cached) (default: the distribution kernel)", kind="kernel", alias="--kernel", metavar="BZIMAGE"),
    Setting("modules", "modules_install root for --nh-kernel", kind="path", alias="--modules", metavar="DIR"),
    Setting("kernel-tree", "a kernel build tree (its bzImage, .config and modules)", kind="path",
            alias="--kernel-tree", metavar="DIR"),
    Setting("kernel-config", "the .config of --nh-kernel", kind="path", alias="--kernel-config", metavar="FILE"),
    Setting("qemu", "QEMU binary (default: qemu-system-x86_64 on PATH)", kind="program", alias="--qemu",
            metavar="BIN"),
    Setting("accel", "accelerator (default: the topology's, normally auto: KVM if it works, else TCG)",
            alias="--accel", choices=("auto", "kvm", "tcg")),
    Setting("keep-vm-on-failure", "leave a VM that served a failed test running (harness ssh pytest-TOPOLOGY-PID; "
            "the run names it)",
            kind="bool", alias="--keep-vm-on-failure", default=False, dest_name="nh_keep"),
    Setting("fresh-vm", "give every test a VM of its own, restored from a snapshot (as @pytest.mark.fresh_vm)",
            kind="bool", alias="--fresh-vm", default=False, dest_name="nh_fresh_vm"),
    Setting("topology", "run only the tests of this topology (repeatable); -k NAME works too", many=True,
            alias="--topology", metavar="NAME"),
    Setting("topology-path", "folder of topology YAML files a @pytest.mark.topology(NAME) finds by name, before "
            "the presets (repeatable; searched in order)", kind="path", many=True, metavar="DIR"),
    Setting("artifacts", "where a failed test's bundle goes, one folder per test: console log, dmesg, QEMU argv, "
            "topology, .config, statistics, workload output, reproduce.sh (default: numa-harness-artifacts under "
            "pytest's basetemp)", kind="path", alias="--artifacts", metavar="DIR"),
    Setting("html-report", "write one HTML page for the run: per test the verdict, diagnostics and plots of memory "
            "per node (stats.timeline), and the kernel problems seen across all tests", kind="path",
            alias="--html-report", metavar="PATH", dest_name="nh_html"),
    Setting("fail-on-kernel-problems", "fail an otherwise green run when the guest kernel reported a problem (WARN, "
            "oops, BUG, lockdep, hung task) that no test expected, also outside the tests (boot, set-up)",
            kind="bool", alias="--fail-on-kernel-problems", default=False, dest_name="nh_fail_problems"),
)

KTAP: tuple[Setting, ...] = (
    Setting("ktap-dir", "run this directory's kernel selftests (KTAP scripts or a built kselftest target) in a guest "
            "(repeatable)", kind="path", many=True, alias="--ktap-dir", metavar="DIR", dest_name="nh_ktap_dirs"),
    Setting("ktap-topology", f"topology KTAP tests run on unless a script names one (default {DEFAULT_KTAP_TOPOLOGY})",
            alias="--ktap-topology", metavar="NAME", default=DEFAULT_KTAP_TOPOLOGY),
    Setting("ktap-timeout", "seconds each kernel selftest (or KUnit module load) may take "
            f"(default {DEFAULT_KTAP_TIMEOUT:.0f})", kind="float", alias="--ktap-timeout", metavar="S",
            default=DEFAULT_KTAP_TIMEOUT),
    Setting("kunit", "add the kernel's KUnit suites as tests (results read from the guest's debugfs)", kind="bool",
            alias="--kunit", default=False),
    Setting("kunit-suite", "with --nh-kunit: one test for the suites matching GLOB (repeatable; default: every suite)",
            many=True, alias="--kunit-suite", metavar="GLOB", dest_name="nh_kunit_suites"),
    Setting("kunit-module", "with --nh-kunit: load this KUnit test module in the guest first (repeatable)",
            many=True, alias="--kunit-module", metavar="NAME", dest_name="nh_kunit_modules"),
)

ALL = CORE + KTAP
GROUP = "numa-harness"


def _argparse_attrs(s: Setting) -> dict[str, Any]:
    attrs: dict[str, Any] = {"dest": s.dest, "default": None}
    if s.kind == "bool":
        attrs["action"] = "store_true"
    else:
        attrs["action"] = "append" if s.many else "store"
        if s.metavar:
            attrs["metavar"] = s.metavar
        if s.kind == "float":
            attrs["type"] = float
        if s.choices:
            attrs["choices"] = list(s.choices)
    return attrs


def register(parser: pytest.Parser, settings: tuple[Setting, ...]) -> None:
    """Add the prefixed options and their ini keys (never an unprefixed name: see :func:`register_aliases`)."""
    g = parser.getgroup(GROUP, "numa-harness: emulated NUMA/CXL machines")
    for s in settings:
        g.addoption(s.option, help=f"{s.help} [ini {s.ini}; ${s.env}]", **_argparse_attrs(s))
        ini_type: Any = "bool" if s.kind == "bool" else ("args" if s.many else "string")
        parser.addini(s.ini, f"numa-harness: {s.help} (as {s.option})", type=ini_type, default=None)


def option_names(parser: pytest.Parser) -> set[str]:
    """Every option string registered so far, by pytest, plugins and conftests."""
    names: set[str] = set()
    groups = [getattr(parser, "_anonymous", None), *getattr(parser, "_groups", [])]  # pytest 8 keeps them apart
    for group in [g for g in groups if g is not None]:
        for opt in getattr(group, "options", []):
            names.update(opt.names())
    names.update(getattr(parser, "_opt2dest", {}))  # pytest >= 9 keeps a map too
    return names


def register_aliases(parser: pytest.Parser, settings: tuple[Setting, ...] = ALL) -> list[str]:
    """Register the old unprefixed names whose prefixed option is registered and that nothing else
    owns (pytest refuses a name twice); the names registered."""
    taken = option_names(parser)
    g = parser.getgroup(GROUP)
    done = []
    for s in settings:
        if s.alias is None or s.alias in taken or s.option not in taken:
            continue
        attrs = _argparse_attrs(s)
        attrs.pop("metavar", None)
        try:
            g.addoption(s.alias, help=f"same as {s.option}", **attrs)
        except (ValueError, argparse.ArgumentError):  # owned after all: the other owner keeps it
            continue
        done.append(s.alias)
    return done


def _split_env(s: Setting, raw: str) -> list[str]:
    if s.kind == "path":
        return [p for p in raw.split(os.pathsep) if p]
    return [w for w in re.split(r"[\s,]+", raw) if w]


def _path(s: Setting, value: str, base: Path | None) -> str:
    """``value`` with ``~`` expanded and, from an ini file (``base``), made absolute against its folder."""
    if s.kind == "kernel" and re.match(r"^debian:", value):
        return value
    if s.kind == "program" and "/" not in value:
        return value  # a name on PATH
    p = Path(value).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    return str(p)


def _convert(s: Setting, value: Any, where: str, base: Path | None) -> Any:
    """An ini or environment value as the option would have parsed it; UsageError naming ``where`` if wrong."""
    if s.many:
        items = [str(v) for v in value]
        return [_path(s, v, base) for v in items] if s.kind == "path" else items
    if s.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise pytest.UsageError(f"{where}: expected true or false, got {value!r}")
    text = str(value).strip()
    if s.kind == "float":
        try:
            return float(text)
        except ValueError:
            raise pytest.UsageError(f"{where}: expected a number, got {value!r}") from None
    if s.choices and text not in s.choices:
        raise pytest.UsageError(f"{where}: expected one of {', '.join(s.choices)}, got {value!r}")
    if s.kind in ("path", "kernel", "program"):
        return _path(s, text, base)
    return text


def _unset(value: Any) -> bool:
    return value is None or value == "" or value == []


def resolve(config: pytest.Config, settings: tuple[Setting, ...]) -> None:
    """Put each setting's value into ``config.option.<dest>``: the command line's, else the ini
    file's, else the environment's, else the default; note where each came from."""
    sources = config.stash.setdefault(_SOURCES, {})
    inipath = config.inipath
    ini_base = inipath.parent if inipath is not None else config.rootpath
    for s in settings:
        value = getattr(config.option, s.dest, None)
        source = "command line"
        if _unset(value):
            raw = config.getini(s.ini)
            if not _unset(raw):
                where = f"{inipath.name if inipath else 'ini'}: {s.ini}"
                value, source = _convert(s, raw, where, ini_base), where
            else:
                env = os.environ.get(s.env, "").strip()
                if env:
                    value = _convert(s, _split_env(s, env) if s.many else env, f"${s.env}", None)
                    source = f"${s.env}"
                else:
                    value = list(s.default or []) if s.many else s.default
                    source = ""
        setattr(config.option, s.dest, value)
        sources[s.dest] = source


def source(config: pytest.Config, s: Setting) -> str:
    """Where ``s``'s value came from ("command line", "pyproject.toml: nh_kernel", "$NUMA_HARNESS_KERNEL"),
    "" for the default."""
    return config.stash.get(_SOURCES, {}).get(s.dest, "")


def setting(name: str) -> Setting:
    """The setting called ``name`` (``"kernel"``)."""
    for s in ALL:
        if s.name == name:
            return s
    raise KeyError(name)
