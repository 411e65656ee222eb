"""A kernel's ``.config``: parsing it and telling the user, option by option, what a topology needs that it lacks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from harness.errors import KernelError
from harness.kernel.model import Kernel


def parse_config(text: str) -> dict[str, str]:
    """Parse a kernel ``.config``: ``{"CONFIG_CXL_BUS": "y", "CONFIG_LOCALVERSION": "-x"}``.

    ``# CONFIG_X is not set`` lines are left out (an absent key means "not set").
    String values lose their surrounding double quotes.
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("CONFIG_") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[name.strip()] = value
    return out


def _satisfies(have: str | None, want: str) -> bool:
    """'m' is satisfied by y or m; 'y' only by y; anything else must match exactly."""
    if have is None:
        return want == "n"
    if want == "m":
        return have in ("y", "m")
    return have == want


def missing_options(config: Mapping[str, str], required: Mapping[str, str]) -> list[tuple[str, str, str | None]]:
    """``[(option, wanted, have)]`` for each required option the config does not satisfy."""
    out = []
    for name, want in required.items():
        key = name if name.startswith("CONFIG_") else f"CONFIG_{name}"
        have = config.get(key)
        if not _satisfies(have, want):
            out.append((key, want, have))
    return out


def describe_missing(
    missing: Iterable[tuple[str, str, str | None]], why: Mapping[str, str] | None = None
) -> list[str]:
    """One line per missing option: ``CONFIG_CXL_MEM is not set (need m): <why>``."""
    why = why or {}
    lines = []
    for key, want, have in missing:
        reason = why.get(key) or why.get(key.removeprefix("CONFIG_"))
        state = "is not set" if have is None else f"is {have}"
        need = "y or m" if want == "m" else want
        line = f"{key} {state} (need {need})"
        if reason:
            line += f": {reason}"
        lines.append(line)
    return lines


def read_config(kernel: Kernel) -> dict[str, str]:
    """The kernel's .config as a dict; KernelError if the config is unknown or unreadable."""
    if kernel.config is None:
        raise KernelError(f"the .config of {kernel.origin} is unknown",
                          hint="pass --kernel-config PATH/.config")
    try:
        return parse_config(kernel.config.read_text(errors="replace"))
    except OSError as e:
        raise KernelError(f"cannot read kernel config {kernel.config}: {e.strerror}") from e


def check_config(kernel: Kernel, required: Mapping[str, str], why: Mapping[str, str] | None = None) -> None:
    """Raise KernelError naming every required option the kernel's config lacks.

    ``required`` maps option (with or without ``CONFIG_``) to ``y``, ``m`` (y or m) or a
    literal value; ``why`` maps option to the reason a topology needs it. A kernel whose
    config is unknown (``kernel.config is None``) is not checked: the caller may warn.
    """
    if kernel.config is None or not required:
        return
    missing = missing_options(read_config(kernel), required)
    if not missing:
        return
    lines = describe_missing(missing, why)
    first = lines[0] if len(lines) == 1 else f"{len(lines)} kernel config options are missing: " + "; ".join(lines)
    raise KernelError(
        f"{kernel.origin}: {first}",
        hint="enable them (e.g. `scripts/config -e OPTION` or `make menuconfig`) and rebuild, or use the default kernel",
        detail="\n".join(lines),
    )
