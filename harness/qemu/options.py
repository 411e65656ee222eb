"""QEMU's ``key=value,...`` option syntax and the options the harness keeps for itself.

Every QEMU option the harness writes goes through :func:`opt_escape` / :func:`kv`; the ids it
gives QEMU are :mod:`.ids`. Pure; imports nothing of the harness.
"""

from __future__ import annotations

#: Options the boot part adds itself (:mod:`.bootargs`); a machine argv carrying one is a bug upstream.
RESERVED_OPTIONS = frozenset({"-kernel", "-initrd", "-append", "-serial", "-qmp", "-monitor", "-mon",
                              "-netdev", "-nic", "-net", "-display", "-nographic", "-S", "-daemonize",
                              "-no-reboot", "-nodefaults", "-pidfile"})


def opt_escape(value: object) -> str:
    """A value for QEMU's ``key=value,...`` option syntax: commas doubled, so a comma in a
    path stays in the path instead of starting a new option."""
    return str(value).replace(",", ",,")


def kv(kind: str, **props: object) -> str:
    """``kv("pxb-cxl", bus_nr=12, id="cxl.1")`` -> ``pxb-cxl,bus_nr=12,id=cxl.1``.

    None values are dropped, booleans become ``on``/``off``, values are escaped
    (:func:`opt_escape`); ``__`` in a key becomes ``-`` and a trailing ``_`` is dropped
    (``mem__path`` -> ``mem-path``).
    """
    parts = [kind]
    for k, v in props.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "on" if v else "off"
        parts.append(f"{k.replace('__', '-').rstrip('_')}={opt_escape(v)}")
    return ",".join(parts)


def check_machine_argv(argv: list[str]) -> None:
    """ValueError if a machine argv has an option the boot part adds itself (pure)."""
    bad = sorted({a for a in argv if a in RESERVED_OPTIONS})
    if bad:
        raise ValueError(f"machine_argv must not contain {', '.join(bad)} (the VM adds them)")
