"""Which CXL regions the Linux kernel will commit: its rules, applied before boot.

A region the kernel refuses is only found out after a full boot, at the
sysfs write that fails (``target0: No such device or address``). These
checks apply the same rules to the topology, each with the kernel function
it comes from (drivers/cxl/core/region.c and drivers/cxl/cxl.h, Linux 6.12;
the same code paths in later releases):

* ways and granularity encodings (``ways_to_eiw``, ``granularity_to_eig``);
* region ways against the window's ways (``interleave_ways_store``);
* region granularity against the window's (``interleave_granularity_store``);
* each position's host bridge (``cxl_region_attach_position``);
* per port: a power-of-two count of targets, peers sharing a downstream
  port spaced ``distance`` apart, and a valid decoder granularity
  (``cxl_port_setup_targets``, ``check_last_peer``);
* the HDM decoder's address bits (``check_interleave_cap``, with the
  capability QEMU's HDM decoders advertise: interleave on address bits 8-14).

:func:`check_region` raises :class:`SchemaError` for the first rule broken,
naming the region's YAML path and, where one exists, an order that works.
"""

from __future__ import annotations

from .cxltree import CxlTree, Hop, TreeLoop
from .model import Region, Topology, Window
from .schema import SchemaError

# drivers/cxl/cxl.h ways_to_eiw(): the interleave-ways encodings the kernel accepts.
WAYS_ENCODING = {1: 0, 2: 1, 4: 2, 8: 3, 16: 4, 3: 8, 6: 9, 12: 10}
VALID_WAYS = (1, 2, 3, 4, 6, 8, 12, 16)
# drivers/cxl/cxl.h granularity_to_eig(): 256 B .. 16 KiB, powers of two.
GRAN_ENCODING = {256 << i: i for i in range(7)}
# check_interleave_cap(): QEMU's HDM decoders set "interleave 256B" (A11to8) and
# "interleave 4K" (A14to12) in their capability register, so address bits 8..14.
HDM_INTERLEAVE_BITS = set(range(8, 15))


def region_ways(r: Region) -> int:
    """The region's interleave ways: as given, else one per listed device."""
    return r.ways if r.ways is not None else len(r.devices)


def region_size(t: Topology, r: Region) -> int:
    """The region's size: as given, else ways × the smallest device capacity of its mode."""
    if r.size is not None:
        return int(r.size)
    assert t.cxl
    devs = {d.id: d for d in t.cxl.devices}
    per = min(int(devs[d].volatile if r.mode == "ram" else devs[d].persistent) for d in r.devices)
    return per * region_ways(r)


def gran_text(g: int) -> str:
    return f"{g // 1024}K" if g >= 1024 and g % 1024 == 0 else str(g)


def device_path(t: Topology, device: str) -> list[Hop]:
    """Hops from the host bridge down to ``device``'s port (host bridge first)."""
    try:
        return CxlTree(t.cxl).path(device)
    except TreeLoop:
        raise SchemaError("cxl.switches", "switches are plugged into each other in a loop") from None


def check_region(t: Topology, r: Region, w: Window, p: str, window_index: int) -> None:
    """Raise SchemaError if the kernel would refuse region ``r`` (at YAML path ``p``) in window ``w``."""
    ww = len(w.targets)
    ways = r.ways if r.ways is not None else len(r.devices)
    # ways_to_eiw(): only these ways have an encoding.
    if ways not in WAYS_ENCODING:
        raise SchemaError(f"{p}.ways", f"interleave ways {ways} has no CXL encoding",
                          hint=f"use one of {', '.join(map(str, VALID_WAYS))} (kernel: ways_to_eiw)")
    if ways != len(r.devices):
        raise SchemaError(f"{p}.ways", f"ways is {ways} but {len(r.devices)} devices are listed",
                          hint="list one device per interleave way, or drop ways")
    # interleave_ways_store(): region ways = window ways x a power of two.
    if ways % ww or (ways // ww) & (ways // ww - 1):
        raise SchemaError(f"{p}.ways", f"{ways} ways cannot spread over window {window_index}'s {ww} host bridges",
                          hint=f"the kernel needs the window's ways times a power of two: {', '.join(str(ww << i) for i in range(5) if (ww << i) <= 16)}"
                          " devices (interleave_ways_store)")
    # granularity_to_eig()
    if r.granularity not in GRAN_ENCODING:
        raise SchemaError(f"{p}.granularity", f"interleave granularity {int(r.granularity)} is not valid",
                          hint="use a power of two from 256 to 16K (kernel: granularity_to_eig)")
    # interleave_granularity_store(): an interleaved window fixes the region's granularity.
    if ww > 1 and r.granularity != w.granularity:
        raise SchemaError(f"{p}.granularity",
                          f"region granularity {gran_text(r.granularity)} differs from window {window_index}'s {gran_text(w.granularity)}",
                          hint=f"set granularity: {gran_text(w.granularity)}; across host bridges the kernel requires the window's"
                          " (interleave_granularity_store)")
    # cxl_region_attach() first calls check_interleave_cap() on the endpoint decoder: region ways and granularity.
    bad = _cap_problem(ways, int(r.granularity))
    if bad:
        raise SchemaError(f"{p}.granularity", f"a {ways}-way region at granularity {gran_text(r.granularity)} {bad}",
                          hint="use a smaller granularity (check_interleave_cap)")
    paths = {d: device_path(t, d) for d in r.devices}
    hb_of = {d: paths[d][0].port for d in r.devices}
    # Every window target must get ways/ww devices (position i goes to target i % ww).
    per_hb = ways // ww
    counts = {hb: [d for d in r.devices if hb_of[d] == hb] for hb in w.targets}
    for hb in sorted(w.targets, key=lambda h: len(counts[h])):  # an uncovered target first
        have = counts[hb]
        if len(have) != per_hb:
            listed = f" ({', '.join(have)})" if have else ""
            raise SchemaError(f"{p}.devices",
                              f"window {window_index} interleaves over {', '.join(w.targets)}, so a {ways}-way region needs "
                              f"{per_hb} device{'s' if per_hb > 1 else ''} under each; {hb} has {len(have)}{listed}",
                              hint=f"give every host bridge of the window {per_hb} region device{'s' if per_hb > 1 else ''}")
    suggestion = suggest_order(t, r, w)
    fix = f"list them as [{', '.join(suggestion)}]" if suggestion and suggestion != list(r.devices) else None
    # cxl_region_attach_position(): position pos must sit under the window's target pos % ways.
    for pos, d in enumerate(r.devices):
        want = w.targets[pos % ww]
        if hb_of[d] != want:
            raise SchemaError(f"{p}.devices[{pos}]",
                              f"position {pos} is '{d}' under host bridge {hb_of[d]}, but window {window_index} sends position {pos} to {want}",
                              hint=(fix + "; " if fix else "") + "positions go round the window's targets in order"
                              " (cxl_region_attach_position)")
    problem = simulate_ports(r, w, paths, ways)
    if problem:
        at, msg, func = problem
        raise SchemaError(f"{p}.devices[{at}]" if at is not None else f"{p}.devices", msg,
                          hint=(fix + "; " if fix else "") + f"kernel: {func}")


def _cap_problem(iw: int, ig: int) -> str | None:
    """check_interleave_cap(): the address bits a decoder must route, against QEMU's HDM capability."""
    eiw, eig = WAYS_ENCODING[iw], GRAN_ENCODING[ig]
    if eiw in (0, 8):
        return None
    high = eiw + eig - 1 if eiw > 8 else eiw + eig + 7
    bits = set(range(eig + 8, high + 1))
    if bits - HDM_INTERLEAVE_BITS:
        return f"needs address bits {eig + 8}..{high}, but QEMU's HDM decoders interleave on bits 8..14 only"
    return None


def simulate_ports(r: Region, w: Window, paths: dict[str, list[Hop]], ways: int) -> tuple[int | None, str, str] | None:
    """Replay cxl_port_setup_targets() for every port the region uses, in position order.

    Returns (position, message, kernel function) for the first refusal, or None.
    """
    ww = len(w.targets)
    # cxl_port_attach_region(): a port's target count = distinct downstream ports the region uses.
    dports: dict[str, list[str]] = {}
    parent: dict[str, str | None] = {}
    for d in r.devices:
        prev = None
        for hop in paths[d]:
            lst = dports.setdefault(hop.port, [])
            if hop.dport not in lst:
                lst.append(hop.dport)
            parent[hop.port] = prev
            prev = hop.port
    for port, lst in dports.items():
        n = len(lst)
        # "While root level decoders support x3, x6, x12, switch level decoders only support powers of 2 up to x16."
        if n & (n - 1):
            return None, f"the region uses {n} downstream ports of {port} ({', '.join(lst)}); a host bridge or switch decodes to a power of two", \
                "cxl_port_setup_targets"
        if n > 8:
            return None, f"the region uses {n} downstream ports of {port}; a host bridge or switch decodes to at most 8", \
                "cxl_port_setup_targets"
    # Granularity each port's decoder gets: parent granularity x parent ways (the root: region granularity
    # x window ways, with x3 windows counted as their power-of-two part).
    gran: dict[str, int] = {}
    iw: dict[str, int] = {}

    def setup(port: str) -> tuple[str, str] | None:
        if port in gran:
            return None
        par = parent[port]
        if par is None:
            pig, piw = int(r.granularity), ww if ww & (ww - 1) == 0 else ww // 3
        else:
            err = setup(par)
            if err:
                return err
            pig, piw = gran[par], iw[par]
        g = pig * piw
        if g not in GRAN_ENCODING:
            return (f"{port}'s decoder would need granularity {gran_text(g)} ({gran_text(pig)} x {piw} ways above it), beyond 16K",
                    "cxl_port_setup_targets")
        n = len(dports[port])
        bad = _cap_problem(n, g)
        if bad:
            return f"{port}'s decoder ({n} ways at {gran_text(g)}) {bad}", "check_interleave_cap"
        gran[port], iw[port] = g, n
        return None

    set_targets: dict[str, list[str]] = {}
    for pos, d in enumerate(r.devices):
        chain: list[str] = []
        for hop in paths[d]:
            err = setup(hop.port)
            if err:
                return pos, err[0], err[1]
            chain.append(hop.port)
            targets = set_targets.setdefault(hop.port, [])
            if hop.dport in targets:
                # check_last_peer(): devices sharing a downstream port sit `distance` positions apart,
                # distance = targets of this port and every port above it x window ways.
                distance = ww
                for c in chain:
                    distance *= len(dports[c])
                peer = pos - distance
                if peer < 0 or hop.dport not in {h.dport for h in paths[r.devices[peer]]}:
                    return pos, (f"'{d}' shares {hop.dport} of {hop.port} with an earlier position, so the kernel expects it "
                                 f"{distance} positions after that one" + (f" (position {peer} is '{r.devices[peer]}')" if peer >= 0 else "")), \
                        "check_last_peer"
            else:
                targets.append(hop.dport)
    return None


def suggest_order(t: Topology, r: Region, w: Window) -> list[str] | None:
    """An order of ``r.devices`` the kernel accepts, if a simple one exists.

    Position i takes the next unused device under window target i % ways;
    under a host bridge, devices go round its downstream ports in turn.
    """
    ww = len(w.targets)
    ways = len(r.devices)
    if ways % ww:
        return None
    paths = {d: device_path(t, d) for d in r.devices}
    queues: dict[str, list[str]] = {hb: [] for hb in w.targets}
    for d in r.devices:
        if paths[d][0].port not in queues:
            return None
        queues[paths[d][0].port].append(d)
    for hb, devs in queues.items():
        # round-robin over the first-level downstream ports, keeping listed order inside each
        by_dport: dict[str, list[str]] = {}
        for d in devs:
            by_dport.setdefault(paths[d][0].dport, []).append(d)
        order: list[str] = []
        lists = list(by_dport.values())
        while any(lists):
            for lst in lists:
                if lst:
                    order.append(lst.pop(0))
        queues[hb] = order
    out: list[str] = []
    for i in range(ways):
        q = queues[w.targets[i % ww]]
        if not q:
            return None
        out.append(q.pop(0))
    if simulate_ports(Region(window=r.window, devices=out, mode=r.mode, ways=r.ways, granularity=r.granularity),
                      w, paths, ways):
        return None
    return out
