"""QEMU preflight: find the binary, learn what it supports, check an argv against it.

What a binary supports is read from its own help output (``--version``,
``-device help``, ``-device T,help``, ``-object help``, ``-object T,help``)
and cached per binary (path, size, mtime) in the user's cache, so the checks
cost nothing after the first run. The feature -> minimum-version table is
data: ``qemu/features.yaml``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import CacheError, QemuError
from harness.hints import APT_QEMU
from harness.paths import cache_dir
from harness.resources import qemu_features_file

log = logging.getLogger(__name__)

QEMU_ENV = "NUMA_HARNESS_QEMU"
DEFAULT_BINARY = "qemu-system-x86_64"
MIN_VERSION = (8, 0)   # oldest QEMU the harness itself supports (volatile CXL memory)
_HELP_TIMEOUT = 20


@dataclass(frozen=True)
class Feature:
    name: str
    min_version: tuple[int, ...]
    match: tuple[tuple[str, str], ...]   # (kind, value) pairs from features.yaml


@dataclass
class Capabilities:
    """What one QEMU binary supports, as read from its help output."""

    binary: str
    version: tuple[int, int, int]
    devices: set[str]
    objects: set[str]
    device_props: dict[str, set[str]] = field(default_factory=dict)
    object_props: dict[str, set[str]] = field(default_factory=dict)
    cpu_models: set[str] = field(default_factory=set)   # from -cpu help, read when an argv has -cpu
    cpu_flags: set[str] = field(default_factory=set)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def load_features(path: Path | None = None) -> list[Feature]:
    data = yaml.safe_load((path or qemu_features_file()).read_text())
    out = []
    for f in data["features"]:
        match = tuple((k, v) for m in f["match"] for k, v in m.items())
        out.append(Feature(f["name"], parse_version(str(f["min_version"])), match))
    return out


def parse_version(text: str) -> tuple[int, ...]:
    """``"QEMU emulator version 10.0.2 (Debian ...)"`` or ``"8.0"`` -> (10, 0, 2) / (8, 0)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise ValueError(f"no version in {text!r}")
    return tuple(int(g) for g in m.groups() if g is not None)


def find_binary(explicit: str | None = None) -> str:
    """The QEMU binary: ``explicit`` (--qemu), else $NUMA_HARNESS_QEMU, else PATH."""
    name = explicit or os.environ.get(QEMU_ENV) or DEFAULT_BINARY
    where = "--qemu" if explicit else (f"${QEMU_ENV}" if os.environ.get(QEMU_ENV) else "PATH")
    path = shutil.which(name) if "/" not in name else (name if os.access(name, os.X_OK) else None)
    if not path:
        raise QemuError(f"QEMU binary '{name}' not found (from {where})",
                        hint=f"{APT_QEMU}; or point --qemu / $NUMA_HARNESS_QEMU at qemu-system-x86_64")
    return os.path.realpath(path)


# --- reading help output (pure parsers) -----------------------------------------

def parse_type_list(text: str) -> set[str]:
    """``-device help`` / ``-object help`` output -> the type names."""
    names = set(re.findall(r'^name "([^"]+)"', text, re.M))
    if not names:  # -object help lists bare names, one per line, after a header
        names = {ln.strip() for ln in text.splitlines()[1:] if ln.strip() and " " not in ln.strip()}
    return names


def parse_props(text: str) -> set[str]:
    """``-device T,help`` output -> property names."""
    return set(re.findall(r"^\s+([A-Za-z0-9_.-]+)=", text, re.M))


# --- probing (I/O) --------------------------------------------------------------

def parse_cpu_help(text: str) -> tuple[set[str], set[str]]:
    """(CPU models, CPUID flags) from ``-cpu help``: the indented names under ``Available
    CPUs:`` (older QEMU: ``x86 NAME  description`` lines), then the words under ``Recognized
    CPUID flags:``."""
    models: set[str] = set()
    flags: set[str] = set()
    section = ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            section = "flags" if line.startswith("Recognized CPUID flags") else (
                "models" if line.startswith("Available CPUs") else "")
            m = re.match(r"^x86\s+(\S+)", line)
            if m:
                models.add(m.group(1))
            continue
        if section == "flags":
            flags.update(line.split())
        elif section == "models" and line.split():
            models.add(line.split()[0])
    return models, flags


def _run_help(binary: str, *args: str) -> str:
    """Output of ``binary ARGS`` (stdout + stderr). Help queries get ``-machine none`` so
    QEMU lists types without building a default machine."""
    argv = [binary, *args] if args == ("--version",) else [binary, *args, "-machine", "none"]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=_HELP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise QemuError(f"{binary} {' '.join(args)} did not answer in {_HELP_TIMEOUT} s") from None
    except OSError as e:
        raise QemuError(f"cannot run {binary}: {e.strerror}") from None
    return p.stdout + p.stderr


def _cache_file(binary: str) -> Path:
    st = os.stat(binary)
    key = hashlib.sha256(f"{binary}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "qemu-caps" / f"{key}.json"


def cached_version(binary: str) -> str | None:
    """The version of ``binary`` if an earlier run probed it (no QEMU started), else None."""
    try:
        version = json.loads(_cache_file(binary).read_text()).get("version")
    except (OSError, ValueError, AttributeError, CacheError):
        return None
    return ".".join(str(v) for v in version) if isinstance(version, list) else None


def capabilities(binary: str, *, needed_types: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset(),
                 cpus: bool = False) -> Capabilities:
    """What ``binary`` supports; per-type property lists are probed for ``needed_types``
    (("device"|"object", type)), and its CPU models and flags when ``cpus``; all cached alongside the rest."""
    cf = _cache_file(binary)
    data: dict = {}
    if cf.is_file():
        try:
            data = json.loads(cf.read_text())
        except ValueError:
            data = {}
    changed = "version" not in data  # no usable cache: probe everything, then write it
    if changed:
        ver_text = _run_help(binary, "--version")
        try:
            ver = parse_version(ver_text)
        except ValueError:
            raise QemuError(f"cannot read the version of {binary}: {ver_text.strip()[:200]!r}") from None
        data = {"version": list(ver) + [0] * (3 - len(ver)),
                "devices": sorted(parse_type_list(_run_help(binary, "-device", "help"))),
                "objects": sorted(parse_type_list(_run_help(binary, "-object", "help"))),
                "device_props": {}, "object_props": {}}
    for kind, tp in sorted(needed_types):
        table = data[f"{kind}_props"]
        known = data["devices" if kind == "device" else "objects"]
        if tp not in table and tp in known:
            table[tp] = sorted(parse_props(_run_help(binary, f"-{kind}", f"{tp},help")))
            changed = True
    if cpus and "cpus" not in data:
        models, flags = parse_cpu_help(_run_help(binary, "-cpu", "help"))
        data["cpus"] = {"models": sorted(models), "flags": sorted(flags)}
        changed = True
    log.debug("QEMU %s: capabilities %s (%s)", binary, "probed" if changed else "cached", cf)
    if changed:
        try:
            cf.parent.mkdir(parents=True, exist_ok=True)
            tmp = cf.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(cf)
        except OSError:
            pass  # a read-only or full cache only costs the probe next time
    return Capabilities(binary=binary, version=tuple(data["version"]), devices=set(data["devices"]),
                        objects=set(data["objects"]),
                        device_props={k: set(v) for k, v in data["device_props"].items()},
                        object_props={k: set(v) for k, v in data["object_props"].items()},
                        cpu_models=set(data.get("cpus", {}).get("models", ())),
                        cpu_flags=set(data.get("cpus", {}).get("flags", ())))


# --- checking an argv (pure, given Capabilities) --------------------------------

# Properties every -device/-object accepts that the help output does not list.
_IMPLICIT_PROPS = {"id", "bus"}


def argv_uses(argv: list[str]) -> list[tuple[str, str, set[str]]]:
    """(kind, type, {props}) for each -device/-object/-machine/-M/-numa element."""
    out = []
    for opt, val in zip(argv, argv[1:]):
        if opt not in ("-device", "-object", "-machine", "-M", "-numa"):
            continue
        head, *rest = val.split(",")
        props = {kv.split("=", 1)[0] for kv in rest if "=" in kv}
        if opt in ("-machine", "-M"):
            if "=" in head:
                props.add(head.split("=", 1)[0])
            props = {p.split(".")[0] for p in props}
            out.append(("machine", head if "=" not in head else "", props))
        elif opt == "-numa":
            out.append(("numa", head, props))
        else:
            out.append((opt[1:], head, props))
    return out


def needed_types(argv: list[str]) -> set[tuple[str, str]]:
    return {(k, t) for k, t, _ in argv_uses(argv) if k in ("device", "object")}


def check_min_version(caps: Capabilities) -> None:
    """QemuError if ``caps`` is older than the harness supports at all."""
    if caps.version[:2] < MIN_VERSION:
        raise QemuError(f"QEMU {caps.version_text} at {caps.binary} is too old: numa-harness needs QEMU >= {'.'.join(map(str, MIN_VERSION))}",
                        hint=f"{APT_QEMU}; or point --qemu at a newer build")


def check_version(binary: str) -> Capabilities:
    """Read ``binary``'s version (cached) and refuse one too old: the first check, before any probe boots it."""
    caps = capabilities(binary)
    check_min_version(caps)
    return caps


def check_cpu(value: str, caps: Capabilities) -> None:
    """QemuError if ``-cpu value`` names a model or a ``+flag``/``-flag`` this QEMU does not
    know (QEMU would refuse it only once the machine is being built). Properties written
    ``name=value`` are left to QEMU. Nothing is checked when the CPU list was not read."""
    if not caps.cpu_flags:
        return
    model, *opts = value.split(",")
    if caps.cpu_models and model not in caps.cpu_models and model not in ("host", "max", "base"):
        close = difflib.get_close_matches(model, sorted(caps.cpu_models), n=1)
        raise QemuError(f"machine.cpu: QEMU {caps.version_text} knows no CPU model '{model}'",
                        hint=(f"did you mean '{close[0]}'? " if close else "") + f"{caps.binary} -cpu help lists them")
    for opt in opts:
        if opt[:1] in "+-" and opt[1:] not in caps.cpu_flags:
            close = difflib.get_close_matches(opt[1:], sorted(caps.cpu_flags), n=1)
            raise QemuError(f"machine.cpu '{value}': QEMU {caps.version_text} knows no CPU flag '{opt[1:]}'",
                            hint=(f"did you mean '{close[0]}'? " if close else "") + f"{caps.binary} -cpu help lists them")


def check_argv(argv: list[str], caps: Capabilities, features: list[Feature]) -> None:
    """Raise QemuError naming the first feature ``caps`` lacks for ``argv``."""
    check_min_version(caps)
    for opt, val in zip(argv, argv[1:]):
        if opt == "-cpu":
            check_cpu(val, caps)
    for kind, tp, props in argv_uses(argv):
        for feat in features:
            if _feature_applies(feat, kind, tp, props) and caps.version < feat.min_version:
                raise _missing(caps, feat)
        if kind in ("device", "object"):
            known = caps.devices if kind == "device" else caps.objects
            if tp not in known:
                raise _missing(caps, _feature_for(features, kind, tp, None), f"{kind} type '{tp}'")
            table = caps.device_props if kind == "device" else caps.object_props
            for prop in sorted(props - _IMPLICIT_PROPS):
                if tp in table and prop not in table[tp]:
                    raise _missing(caps, _feature_for(features, kind, tp, prop),
                                   f"property '{prop}' of {kind} '{tp}'")


def _feature_applies(feat: Feature, kind: str, tp: str, props: set[str]) -> bool:
    for mk, mv in feat.match:
        if mk == kind and mv == tp:
            return True
        if mk == f"{kind}_prop":
            t, _, p = mv.partition(".")
            if t == tp and p in props:
                return True
        if kind == "machine" and mk == "machine_prop" and mv in props:
            return True
        if kind == "numa" and mk == "numa_prop" and mv in props:
            return True
    return False


def _feature_for(features: list[Feature], kind: str, tp: str, prop: str | None) -> Feature | None:
    for feat in features:
        for mk, mv in feat.match:
            if prop is None and mk == kind and mv == tp:
                return feat
            if prop is not None and mk == f"{kind}_prop" and mv == f"{tp}.{prop}":
                return feat
    return None


def _missing(caps: Capabilities, feat: Feature | None, what: str | None = None) -> QemuError:
    if feat is None:
        return QemuError(f"QEMU {caps.version_text} at {caps.binary} does not support {what}",
                         hint="the topology uses something this build lacks; try a newer QEMU")
    need = ".".join(map(str, feat.min_version))
    lacks = f" (it lacks {what})" if what else ""
    return QemuError(f"the topology needs {feat.name}, which needs QEMU >= {need}; {caps.binary} is {caps.version_text}{lacks}",
                     hint=f"{APT_QEMU}; or point --qemu at a newer QEMU")


def preflight(argv: list[str], binary: str | None = None, progress: Callable[[str], None] | None = None) -> Capabilities:
    """Find QEMU, read what it supports (cached), and check ``argv`` against it."""
    path = find_binary(binary)
    if progress:
        progress(f"checking {path}")
    caps = capabilities(path, needed_types=needed_types(argv), cpus="-cpu" in argv)
    check_argv(argv, caps, load_features())
    return caps
