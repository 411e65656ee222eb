"""Cross-field checks on a loaded :class:`Topology`.

Each check raises :class:`SchemaError` naming the YAML path of the value at
fault and how to fix it. Independent parts (each node, each device, each
window, ...) are checked inside ``with found.item():`` (:class:`.schema.Found`),
so one run reports every mistake a person can fix at once; checks run in
dependency order (nodes before HMAT, ports before devices), and a part whose
inputs are already wrong is not judged again. The rules mirror what QEMU and
the kernel would reject or silently mis-handle; where a rule comes from QEMU,
its message says so. The kernel's CXL region rules live in :mod:`.regions`.
Longer than 500 lines because it is one flat list of independent checks,
each short, read top to bottom.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable

from harness.qemu.ids import RESERVED_ID_PREFIXES
from harness.units import IdList, format_size

from .cxltree import CxlTree
from .model import Node, Topology, Type3
from .provision import check_provision
from .regions import VALID_WAYS, check_region
from .schema import Found, SchemaError, SchemaErrors

MiB = 1 << 20
CXL_CAPACITY_UNIT = 256 * MiB          # CXL device capacity granule (and QEMU's check)
VALID_GRANULARITIES = [256 << i for i in range(7)]  # 256 .. 16K
VALID_WINDOW_WAYS = VALID_WAYS      # CXL encodings QEMU (cxl_interleave_ways_enc) and the kernel accept
# The most vCPUs any q35 machine type takes (pc-q35-9.0 and later: 4096); the installed
# QEMU's own limit for its q35 is checked in preflight.
MAX_SMP = 4096
_PCI_DRIVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_QEMU_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
#: QEMU itself takes ids of any length, but the harness builds names from them: backend ids
#: (``hmem-ID``), and a file-backed device's files ``ID-pmem.raw``, which NAME_MAX (255 bytes)
#: caps. 128 leaves room for both; an id longer than that is a mistake, not a name.
MAX_ID_LENGTH = 128
#: The kernel's command line limit on x86 (COMMAND_LINE_SIZE, arch/x86/include/asm/setup.h:
#: 2048 bytes with its terminating NUL); a longer one is cut short at boot, silently.
COMMAND_LINE_SIZE = 2048
#: Room kept for the parameters the harness adds after the topology's own: console, panic,
#: the guest's address, its SSH key and module list (at most ~260 bytes for the stock presets).
HARNESS_CMDLINE_RESERVE = 384


def validate(t: Topology) -> None:
    """Raise :class:`SchemaErrors` holding every problem found, or return None."""
    errors = validate_all(t)
    if errors:
        raise SchemaErrors(errors)


def validate_all(t: Topology) -> list[SchemaError]:
    """Every problem found, in dependency order (a root cause before what follows from it).

    Each check group goes on past its own errors where its items are independent. A check
    that trips over the consequence of an earlier error (a KeyError on a node id already
    reported) adds nothing; without an earlier error such a crash is a bug and propagates.
    """
    found = Found()
    for check in (_check_nodes, _check_machine, _check_slit, _check_hmat, _check_initiators_need_hmat, _check_ids, _check_cxl,
                  _check_initiators, _check_guest, _check_expect):
        try:
            with found.item():
                check(t)
        except Exception:
            if not found:
                raise
    return list(found)


def _closest(name: str, options: Iterable[str]) -> str:
    opts = list(options)
    close = difflib.get_close_matches(name, opts, n=1, cutoff=0.4)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"known: {', '.join(opts)}" if opts else "none are defined"


def _node_ref(t: Topology, nid: int, path: str, what: str = "node") -> None:
    ids = [n.id for n in t.nodes]
    if nid not in ids:
        raise SchemaError(path, f"{what} {nid} does not exist",
                          hint=f"nodes are {', '.join(map(str, ids))}; add it under nodes: or use one of those")


def _cpu_nodes(t: Topology) -> set[int]:
    return {n.id for n in t.nodes if n.cpus}


# --- nodes and machine ---------------------------------------------------------

def _short_ids(ids: Iterable[int], limit: int = 8) -> str:
    """``0-3,7`` for a list of ids; long lists are cut so one error stays one short line."""
    ranges = IdList(sorted(set(ids))).ranges()
    return ",".join(ranges[:limit]) + (f",... ({len(ranges) - limit} more ranges)" if len(ranges) > limit else "")


def _check_nodes(t: Topology) -> None:
    if not 1 <= t.machine.smp <= MAX_SMP:
        raise SchemaError("machine.smp", f"{t.machine.smp} vCPUs is outside 1..{MAX_SMP} (the most a QEMU q35 machine takes)",
                          hint="a few vCPUs are plenty under TCG; use the host's core count or less")
    if len(t.nodes) > 128:
        raise SchemaError("nodes", f"{len(t.nodes)} nodes is more than QEMU's 128 (MAX_NODES)")
    if not t.nodes:
        raise SchemaError("nodes", "no nodes are defined", hint="add at least one node with cpus and memory")
    found = Found()
    seen: dict[int, int] = {}
    for i, n in enumerate(t.nodes):
        with found.item():
            if n.id in seen:
                raise SchemaError(f"nodes[{i}].id", f"node id {n.id} is used twice (also nodes[{seen[n.id]}])",
                                  hint="give every node its own id")
            seen[n.id] = i
    for i, n in enumerate(t.nodes):
        with found.item():
            if n.id < 0 or n.id >= len(t.nodes):
                missing = sorted(set(range(len(t.nodes))) - set(seen))
                raise SchemaError(f"nodes[{i}].id", f"node id {n.id} is out of range: QEMU needs ids 0..{len(t.nodes) - 1} with no gaps",
                                  hint=f"renumber it to {missing[0]}" if missing else None)
    owner: dict[int, int] = {}
    cpu_errors = False
    for i, n in enumerate(t.nodes):
        with found.item():
            beyond = [c for c in n.cpus or () if c >= t.machine.smp]
            if beyond:
                cpu_errors = True
                need = max(beyond) + 1
                raise SchemaError(f"nodes[{i}].cpus", f"CPU {_short_ids(beyond)} does not exist: machine.smp is {t.machine.smp}"
                                  if len(beyond) == 1 else
                                  f"CPUs {_short_ids(beyond)} do not exist: machine.smp is {t.machine.smp}",
                                  hint=f"use CPUs 0-{t.machine.smp - 1} or raise machine.smp to {need}")
            for c in n.cpus or ():
                if c in owner:
                    cpu_errors = True
                    raise SchemaError(f"nodes[{i}].cpus", f"CPU {c} is already in node {owner[c]}",
                                      hint="each vCPU belongs to exactly one node")
                owner[c] = n.id
    unplaced = sorted(set(range(t.machine.smp)) - set(owner))
    if unplaced and not cpu_errors:
        found.append(SchemaError("nodes", f"vCPUs {_short_ids(unplaced)} are in no node",
                                 hint="add them to a node's cpus, or lower machine.smp"))
    for i, n in enumerate(t.nodes):
        with found.item():
            _check_node(t, n, f"nodes[{i}]")
    if not any(n.memory for n in t.nodes):
        found.append(SchemaError("nodes", "no node has memory", hint="give at least one node memory: 1G"))
    found.done()


def _check_node(t: Topology, n: Node, p: str) -> None:
    if not n.cpus and n.memory == 0 and not _is_port_or_initiator_node(t, n.id):
        raise SchemaError(p, f"node {n.id} has neither CPUs nor memory",
                          hint="give it cpus or memory, or use it as a cxl.generic_ports / generic_initiators node")
    if n.memory % MiB:
        raise SchemaError(f"{p}.memory", f"{n.memory} bytes is not a whole number of MiB", hint="QEMU needs MiB alignment")
    if n.backend == "file" and not n.path:
        raise SchemaError(f"{p}.path", "backend: file needs a path", hint="add path: /some/file (it is created if missing)")
    if n.path and n.backend != "file":
        raise SchemaError(f"{p}.path", f"path is only used with backend: file (backend is {n.backend})",
                          hint="set backend: file or drop path")
    if n.initiator is not None:
        if n.cpus:
            raise SchemaError(f"{p}.initiator", f"node {n.id} has CPUs, so it is its own initiator",
                              hint="drop initiator: it is only for memory-only nodes")
        _node_ref(t, n.initiator, f"{p}.initiator", "initiator node")
        if n.initiator not in _cpu_nodes(t) and n.initiator not in _gi_nodes(t):
            raise SchemaError(f"{p}.initiator", f"initiator node {n.initiator} has no CPUs",
                              hint=f"name a node with CPUs: {', '.join(map(str, sorted(_cpu_nodes(t))))}")


def _is_port_or_initiator_node(t: Topology, nid: int) -> bool:
    gp = {g.node for g in t.cxl.generic_ports} if t.cxl else set()
    return nid in gp or nid in _gi_nodes(t)


def _gi_nodes(t: Topology) -> set[int]:
    return {g.node for g in t.generic_initiators}


def _check_machine(t: Topology) -> None:
    m = t.machine
    if m.smp < 1:
        raise SchemaError("machine.smp", "needs at least 1 vCPU")
    found = Found()
    with found.item():
        _check_cmdline(m.kernel_cmdline)
    with found.item():
        if m.cpu.split(",")[0] == "host" and m.accel == "tcg":
            raise SchemaError("machine.cpu", "cpu: host needs KVM, and machine.accel is tcg (QEMU refuses -cpu host under TCG)",
                              hint="use cpu: max (the default) under TCG, or accel: kvm on a host where KVM works")
    with found.item():
        _check_memory(t)
    found.done()


def _check_cmdline(line: str) -> None:
    """The topology's kernel_cmdline fits beside the harness's own parameters, and its quotes
    pair up: the kernel reads a double quote as opening a value that runs to the next one
    (lib/cmdline.c, next_arg), so an odd one swallows every parameter after it, the harness's
    SSH key included."""
    room = COMMAND_LINE_SIZE - 1 - HARNESS_CMDLINE_RESERVE
    size = len(line.encode())
    if size > room:
        raise SchemaError("machine.kernel_cmdline", f"is {size} bytes; the kernel takes {COMMAND_LINE_SIZE - 1} in all and "
                          f"the harness needs up to {HARNESS_CMDLINE_RESERVE} of them, which leaves {room}",
                          hint="drop parameters you do not need; the kernel would silently cut the line short")
    if line.count('"') % 2:
        raise SchemaError("machine.kernel_cmdline", 'has an unbalanced double quote (")',
                          hint='close the quote: the kernel would read every parameter after it, the harness\'s own '
                               'included, as part of one value')


def _check_memory(t: Topology) -> None:
    m = t.machine
    total = t.total_memory
    if m.memory is not None and m.memory != total:
        parts = " + ".join(format_size(n.memory) for n in t.nodes)
        raise SchemaError("machine.memory", f"{format_size(m.memory)} does not equal the nodes' memory {parts} = {format_size(total)}",
                          hint=f"set machine.memory: {format_size(total)} or drop it (it defaults to the sum)")
    if (m.maxmem is None) != (m.slots == 0):
        raise SchemaError("machine.maxmem" if m.maxmem is None else "machine.slots",
                          "maxmem and slots go together (QEMU needs both for memory hotplug)",
                          hint="set both, or neither")
    if m.maxmem is not None and m.maxmem < total:
        raise SchemaError("machine.maxmem", f"{format_size(m.maxmem)} is less than boot memory {format_size(total)}",
                          hint=f"raise maxmem to at least {format_size(total)}")


# --- SLIT and HMAT -------------------------------------------------------------

def _check_slit(t: Topology) -> None:
    found = Found()
    with found.item():
        if not t.slit:
            return
        given: dict[tuple[int, int], int] = {}
        for i, d in enumerate(t.slit.distances):
            with found.item():
                p = f"slit.distances[{i}]"
                _node_ref(t, d.src, f"{p}.src")
                _node_ref(t, d.dst, f"{p}.dst")
                if d.src == d.dst and d.value != 10:
                    raise SchemaError(f"{p}.value", f"local distance of node {d.src} must be 10 (QEMU rejects others)", hint="write value: 10 or drop the entry")
                if d.src != d.dst and not 11 <= d.value <= 254:
                    raise SchemaError(f"{p}.value", f"remote distance {d.value} is out of range 11..254", hint="typical values: 20 (one hop), 30+ (far)")
                if (d.src, d.dst) in given:
                    raise SchemaError(p, f"distance {d.src}→{d.dst} is listed twice")
                given[(d.src, d.dst)] = d.value
        ids = sorted(n.id for n in t.nodes)
        if given:
            for a in ids:
                for b in ids:
                    if a < b and (a, b) not in given and (b, a) not in given:
                        raise SchemaError("slit.distances", f"no distance between nodes {a} and {b}: QEMU needs every pair once any distance is given",
                                          hint=f"add {{src: {a}, dst: {b}, value: 20}}")
        if t.slit.symmetric:
            for (src, dst), v in given.items():
                back = given.get((dst, src))
                if back is not None and back != v:
                    raise SchemaError("slit.distances", f"{src}→{dst} is {v} but {dst}→{src} is {back} while slit.symmetric is true",
                                      hint="make them equal or set slit.symmetric: false")
    found.done()


def _check_initiators_need_hmat(t: Topology) -> None:
    if t.hmat:
        return
    found = Found()
    for i, n in enumerate(t.nodes):
        if n.initiator is not None:
            found.append(SchemaError(f"nodes[{i}].initiator", "initiator is HMAT data, and there is no hmat: section "
                                     "(QEMU refuses initiator= without -machine hmat=on)",
                                     hint="add hmat: {links: [...]} with this node's latency, or drop initiator"))
    found.done()


def _check_hmat(t: Topology) -> None:
    found = Found()
    with found.item():
        if not t.hmat:
            return
        targets_ok = {n.id for n in t.nodes if n.memory} | ({g.node for g in t.cxl.generic_ports} if t.cxl else set())
        initiators_ok = _cpu_nodes(t) | _gi_nodes(t)
        seen = set()
        for i, link in enumerate(t.hmat.links):
            with found.item():
                p = f"hmat.links[{i}]"
                _node_ref(t, link.initiator, f"{p}.initiator", "initiator node")
                _node_ref(t, link.target, f"{p}.target", "target node")
                if link.initiator not in initiators_ok:
                    raise SchemaError(f"{p}.initiator", f"node {link.initiator} has no CPUs, so it cannot be an HMAT initiator",
                                      hint=f"use one of nodes {', '.join(map(str, sorted(initiators_ok)))}")
                if link.target not in targets_ok:
                    raise SchemaError(f"{p}.target", f"node {link.target} has no memory, so it cannot be an HMAT target",
                                      hint="give the node memory, or make it a cxl.generic_ports node")
                if link.latency is None and link.bandwidth is None:
                    raise SchemaError(p, "has neither latency nor bandwidth", hint="add latency: <ns> and/or bandwidth: <size per second>")
                if link.latency is not None and link.latency <= 0:
                    raise SchemaError(f"{p}.latency", "latency must be a positive number of nanoseconds")
                if (link.initiator, link.target) in seen:
                    raise SchemaError(p, f"initiator {link.initiator} → target {link.target} is listed twice")
                seen.add((link.initiator, link.target))
                if link.bandwidth is not None and (link.bandwidth == 0 or link.bandwidth % MiB):
                    raise SchemaError(f"{p}.bandwidth", f"bandwidth {format_size(link.bandwidth) if link.bandwidth else 0} "
                                      "is not a whole, non-zero number of MiB per second (QEMU needs 1 MiB alignment)",
                                      hint="e.g. bandwidth: 20G or 512M")
        found.extend(_hmat_ranges(t))
        for i, c in enumerate(t.hmat.caches):
            with found.item():
                p = f"hmat.caches[{i}]"
                _node_ref(t, c.node, f"{p}.node")
                if not 1 <= c.level <= 3:
                    raise SchemaError(f"{p}.level", f"cache level {c.level} is out of range 1..3")
                if c.line <= 0 or c.line & (c.line - 1):
                    raise SchemaError(f"{p}.line", f"line size {c.line} is not a power of two", hint="typical: 64")
        # With hmat=on QEMU insists every node without CPUs names its initiator.
        for i, n in enumerate(t.nodes):
            with found.item():
                if not n.cpus and n.initiator is None and n.id not in _gi_nodes(t):
                    raise SchemaError(f"nodes[{i}].initiator", f"memory-only node {n.id} needs an initiator when hmat is given (QEMU requires it)",
                                      hint=f"add initiator: {min(_cpu_nodes(t))}")
    found.done()


#: ACPI HMAT stores each latency/bandwidth entry as a 16-bit multiple of one 64-bit base
#: unit per table, 0xFFFF meaning "no data" (ACPI 6.3, 5.2.27.4, System Locality Latency and
#: Bandwidth Information Structure). QEMU (hw/core/numa.c, parse_numa_hmat_lb) takes the base
#: as the largest power of ten dividing every latency (in ns; the option is a uint64) and the
#: largest power of two dividing every bandwidth (in MiB/s, which must be whole), and refuses
#: an entry whose value over that base reaches 65535 ("should not differ from previously
#: entered min or max values on more than 65534"; seen with QEMU 10.0: latencies 10 and
#: 655350 refused, bandwidths 1M and 65535M refused). Checked here once for the whole table,
#: so the answer does not depend on the order of the links.
HMAT_ENTRY_MAX = 0xFFFF - 1
UINT64_MAX = (1 << 64) - 1


def _hmat_ranges(t: Topology) -> list[SchemaError]:
    if not t.hmat:
        return []
    errors: list[SchemaError] = []
    lat = [(i, lk.latency) for i, lk in enumerate(t.hmat.links) if lk.latency is not None and lk.latency > 0]
    bw = [(i, lk.bandwidth // MiB) for i, lk in enumerate(t.hmat.links)
          if lk.bandwidth is not None and lk.bandwidth > 0 and not lk.bandwidth % MiB]
    for i, v in lat:
        if v > UINT64_MAX:
            errors.append(SchemaError(f"hmat.links[{i}].latency", f"latency {v} ns does not fit QEMU's 64-bit latency option",
                                      hint="latencies are nanoseconds: tens to a few thousands"))
    lat = [(i, v) for i, v in lat if v <= UINT64_MAX]
    if lat:
        base = min(_pow10_dividing(v) for _, v in lat)
        for i, v in lat:
            if v // base > HMAT_ENTRY_MAX:
                errors.append(SchemaError(f"hmat.links[{i}].latency",
                                          f"latency {v} ns is more than {HMAT_ENTRY_MAX} × {base} ns, the range HMAT can "
                                          f"encode next to the table's other latencies (QEMU refuses it)",
                                          hint=f"keep latencies within {HMAT_ENTRY_MAX} × the finest one's unit, "
                                               "e.g. round them to tens of ns"))
    if bw:
        shift = min((v & -v).bit_length() - 1 for _, v in bw)
        for i, v in bw:
            if v >> shift > HMAT_ENTRY_MAX:
                errors.append(SchemaError(f"hmat.links[{i}].bandwidth",
                                          f"bandwidth {format_size(v * MiB)}/s is more than {HMAT_ENTRY_MAX} × "
                                          f"{format_size(MiB << shift)}/s, the range HMAT can encode next to the table's "
                                          "other bandwidths (QEMU refuses it)",
                                          hint="keep bandwidths within 65534 × the finest one's unit, e.g. round them to whole G"))
    return errors


def _pow10_dividing(v: int) -> int:
    base = 1
    while v % (base * 10) == 0:
        base *= 10
    return base


# --- ids -----------------------------------------------------------------------

def _all_ids(t: Topology) -> list[tuple[str, str]]:
    ids: list[tuple[str, str]] = []
    if t.cxl:
        for i, hb in enumerate(t.cxl.host_bridges):
            ids.append((f"cxl.host_bridges[{i}].id", hb.id))
            ids += [(f"cxl.host_bridges[{i}].root_ports[{j}].id", rp.id) for j, rp in enumerate(hb.root_ports)]
        for i, sw in enumerate(t.cxl.switches):
            ids.append((f"cxl.switches[{i}].id", sw.id))
            ids += [(f"cxl.switches[{i}].downstream_ports[{j}].id", dp.id) for j, dp in enumerate(sw.downstream_ports)]
        ids += [(f"cxl.devices[{i}].id", d.id) for i, d in enumerate(t.cxl.devices)]
        ids += [(f"cxl.generic_ports[{i}].id", g.id) for i, g in enumerate(t.cxl.generic_ports)]
        ids += [(f"cxl.switches[{i}].mailbox_cci", sw.mailbox_cci) for i, sw in enumerate(t.cxl.switches) if sw.mailbox_cci]
    ids += [(f"pci_devices[{i}].id", d.id) for i, d in enumerate(t.pci_devices)]
    ids += [(f"generic_initiators[{i}].id", g.id) for i, g in enumerate(t.generic_initiators)]
    return ids


def _check_ids(t: Topology) -> None:
    found = Found()
    with found.item():
        first: dict[str, str] = {}
        for path, ident in _all_ids(t):
            with found.item():
                if len(ident) > MAX_ID_LENGTH:
                    raise SchemaError(path, f"id {ident[:20]!r}... is {len(ident)} characters long; ids are at most {MAX_ID_LENGTH}",
                                      hint="ids are names: give it a short one")
                if not _QEMU_ID_RE.match(ident):
                    raise SchemaError(path, f"id {ident!r} is not a valid QEMU id",
                                      hint="start with a letter; use letters, digits, '-', '.', '_'")
                if ident.startswith(RESERVED_ID_PREFIXES):
                    raise SchemaError(path, f"id {ident!r} is reserved by the harness", hint="choose another id")
                if ident in first:
                    raise SchemaError(path, f"id '{ident}' is already used at {first[ident]}", hint="QEMU ids must be unique")
                first[ident] = path
        for i, d in enumerate(t.pci_devices):
            with found.item():
                if not _PCI_DRIVER_RE.match(d.driver):
                    raise SchemaError(f"pci_devices[{i}].driver", f"{d.driver!r} is not a QEMU device model name",
                                      hint="e.g. edu or pci-testdev (qemu-system-x86_64 -device help lists them)")
                if not _PCI_DRIVER_RE.match(d.bus):
                    raise SchemaError(f"pci_devices[{i}].bus", f"{d.bus!r} is not a QEMU bus id", hint="e.g. pcie.0")
    found.done()


# --- CXL -----------------------------------------------------------------------

def _check_cxl(t: Topology) -> None:
    found = Found()
    with found.item():
        cxl = t.cxl
        if not cxl:
            return
        if not cxl.host_bridges:
            raise SchemaError("cxl.host_bridges", "a cxl section needs at least one host bridge", hint="add host_bridges: [{id: cxl.0, bus_nr: 12, root_ports: [{id: rp0}]}]")
        hb_ids = [hb.id for hb in cxl.host_bridges]
        tree = CxlTree(cxl)
        # bus numbers
        by_nr: dict[int, int] = {}
        for i, hb in enumerate(cxl.host_bridges):
            p = f"cxl.host_bridges[{i}]"
            if not 1 <= hb.bus_nr <= 254:
                raise SchemaError(f"{p}.bus_nr", f"bus_nr {hb.bus_nr} is out of range 1..254")
            if hb.bus_nr in by_nr:
                raise SchemaError(f"{p}.bus_nr", f"bus_nr {hb.bus_nr} is already used by cxl.host_bridges[{by_nr[hb.bus_nr]}]",
                                  hint="give each host bridge its own range, e.g. 12 and 222 as in QEMU's docs")
            by_nr[hb.bus_nr] = i
            if hb.node is not None:
                _node_ref(t, hb.node, f"{p}.node")
            if not hb.root_ports:
                raise SchemaError(f"{p}.root_ports", f"host bridge {hb.id} has no root ports", hint="add root_ports: [{id: rp0}]")
            nums = Counter(tree.ports[rp.id].number for rp in hb.root_ports)
            dup = [n for n, c in nums.items() if c > 1]
            if dup:
                raise SchemaError(f"{p}.root_ports", f"port number {dup[0]} is used twice on {hb.id}")
        ordered = sorted(cxl.host_bridges, key=lambda h: h.bus_nr)
        for lo, hi in zip(ordered, ordered[1:] + [None]):
            end = hi.bus_nr if hi else 256
            need = tree.bus_need(lo.id)
            if lo.bus_nr + need > end:
                i = hb_ids.index(lo.id)
                raise SchemaError(f"cxl.host_bridges[{i}].bus_nr",
                                  f"host bridge {lo.id} needs buses {lo.bus_nr}..{lo.bus_nr + need - 1} but "
                                  + (f"{hi.id} starts at bus {hi.bus_nr}" if hi else "bus numbers end at 255"),
                                  hint=f"space the bus_nr values at least {need} apart")
        ports = tree.under_host_bridges()
        users: dict[str, str] = {}

        def plug(path: str, port: str, what: str) -> None:
            """One device or switch per port, and the port must exist."""
            if port not in ports:
                raise SchemaError(path, f"port '{port}' does not exist", hint=_closest(port, ports))
            if port in users:
                raise SchemaError(path, f"port '{port}' already has {users[port]} plugged in",
                                  hint="one device or switch per port: add a root port or a switch downstream port")
            users[port] = what

        for i, sw in enumerate(cxl.switches):
            with found.item():
                p = f"cxl.switches[{i}]"
                own = [dp.id for dp in sw.downstream_ports]
                if sw.upstream in own:
                    raise SchemaError(f"{p}.upstream", f"switch {sw.id} is plugged into its own downstream port '{sw.upstream}'",
                                      hint="plug it into a root port or another switch's downstream port")
                if sw.upstream not in ports:
                    loop = tree.switch_loop(sw.id)
                    if loop:
                        raise SchemaError(f"{p}.upstream", f"switches {' -> '.join(loop)} are plugged into each other in a loop",
                                          hint="the chain must end at a host bridge's root port")
                plug(f"{p}.upstream", sw.upstream, f"switch {sw.id}")
                if sw.port is not None and not 0 <= sw.port <= 255:
                    raise SchemaError(f"{p}.port", f"port number {sw.port} is out of range 0..255 (QEMU's port= is 8 bits)")
                if sw.serial is not None and not 0 <= sw.serial < (1 << 64) - 1:
                    raise SchemaError(f"{p}.serial", f"serial {sw.serial} is out of range 0..2^64-2 (QEMU's sn= is 64 bits; all ones means none)")
                for j, dp in enumerate(sw.downstream_ports):
                    if dp.hotplug:
                        raise SchemaError(f"{p}.downstream_ports[{j}].hotplug",
                                          f"switch downstream port {dp.id} cannot be declared hot-pluggable",
                                          hint="QEMU's cxl-downstream has no power controller: on device_del the guest's "
                                          "pciehp removes the device but never powers the slot off, so QEMU never releases "
                                          "it (no DEVICE_DELETED); put the device on a root port with hotplug: true")
                if not sw.downstream_ports:
                    raise SchemaError(f"{p}.downstream_ports", f"switch {sw.id} has no downstream ports", hint="add downstream_ports: [{id: dsp0}]")
        for i, d in enumerate(cxl.devices):
            with found.item():
                p = f"cxl.devices[{i}]"
                plug(f"{p}.port", d.port, f"device {d.id}")
                _check_device_sizes(d, p)
        for i, w in enumerate(cxl.windows):
            with found.item():
                p = f"cxl.windows[{i}]"
                if not w.targets:
                    raise SchemaError(f"{p}.targets", "a window needs at least one host bridge target")
                for j, tg in enumerate(w.targets):
                    if tg not in hb_ids:
                        raise SchemaError(f"{p}.targets[{j}]", f"host bridge '{tg}' does not exist", hint=_closest(tg, hb_ids))
                if len(set(w.targets)) != len(w.targets):
                    raise SchemaError(f"{p}.targets", "a host bridge is listed twice")
                ways = len(w.targets)
                if ways not in VALID_WINDOW_WAYS:
                    raise SchemaError(f"{p}.targets", f"{ways} targets is not a valid interleave ways count",
                                      hint=f"CXL windows interleave over {', '.join(map(str, VALID_WINDOW_WAYS))} host bridges")
                if w.granularity not in VALID_GRANULARITIES:
                    raise SchemaError(f"{p}.granularity", f"interleave granularity {format_size(w.granularity) if w.granularity >= 1024 else int(w.granularity)} is not valid",
                                      hint="use a power of two from 256 to 16K: 256, 512, 1K, 2K, 4K, 8K, 16K")
                unit = CXL_CAPACITY_UNIT * ways
                if w.size == 0 or w.size % unit:
                    raise SchemaError(f"{p}.size", f"window size {format_size(w.size)} is not a multiple of 256M × {ways} ways",
                                      hint=f"use a multiple of {format_size(unit)}, e.g. {format_size(max(unit, (w.size // unit + 1) * unit))}")
        for i, g in enumerate(cxl.generic_ports):
            with found.item():
                p = f"cxl.generic_ports[{i}]"
                if g.host_bridge not in hb_ids:
                    raise SchemaError(f"{p}.host_bridge", f"host bridge '{g.host_bridge}' does not exist", hint=_closest(g.host_bridge, hb_ids))
                _node_ref(t, g.node, f"{p}.node")
                n = t.node(g.node)
                if n.cpus or n.memory:
                    raise SchemaError(f"{p}.node", f"node {g.node} has CPUs or memory; a generic port needs a node of its own",
                                      hint="add a node with no cpus and memory: 0 for the port")
    found.done()


def _check_device_sizes(d: Type3, p: str) -> None:
    if d.volatile == 0 and d.persistent == 0:
        raise SchemaError(p, f"device {d.id} has no capacity", hint="set volatile: 256M and/or persistent: 256M")
    for key in ("volatile", "persistent"):
        v = getattr(d, key)
        if v % CXL_CAPACITY_UNIT:
            raise SchemaError(f"{p}.{key}", f"{format_size(v)} is not a multiple of 256M (CXL capacity granule; QEMU rejects it)",
                              hint=f"use {format_size(max(CXL_CAPACITY_UNIT, (v // CXL_CAPACITY_UNIT) * CXL_CAPACITY_UNIT))}")
    if d.persistent and not d.lsa:
        raise SchemaError(f"{p}.lsa", f"device {d.id} has persistent capacity but no label storage area",
                          hint="add lsa: 1M (the kernel needs labels for pmem regions)")
    if d.lsa and d.lsa % (1 << 10):
        raise SchemaError(f"{p}.lsa", f"label storage area {format_size(d.lsa)} is not a whole number of KiB", hint="e.g. lsa: 1M")
    if d.serial is not None and not 0 <= d.serial < (1 << 64) - 1:
        raise SchemaError(f"{p}.serial", f"serial {d.serial} is out of range 0..2^64-2 (QEMU's sn= is 64 bits; all ones means none)")
    if d.persistent and d.serial == 0:
        raise SchemaError(f"{p}.serial", f"device {d.id} has persistent capacity and serial 0",
                          hint="give it a non-zero serial or none (the harness then derives one from its id): Linux refuses "
                          "serial 0 in a pmem region (7.2) or loses the region's namespace at the next boot (6.12)")
    if d.backend == "file" and not d.path:
        raise SchemaError(f"{p}.path", "backend: file needs a path (a directory)")


def _check_initiators(t: Topology) -> None:
    found = Found()
    with found.item():
        pci = [d.id for d in t.pci_devices]
        for i, g in enumerate(t.generic_initiators):
            with found.item():
                p = f"generic_initiators[{i}]"
                if g.device not in pci:
                    raise SchemaError(f"{p}.device", f"PCI device '{g.device}' does not exist", hint=_closest(g.device, pci))
                _node_ref(t, g.node, f"{p}.node")
                if t.node(g.node).cpus:
                    raise SchemaError(f"{p}.node", f"node {g.node} has CPUs; a generic initiator's node should have none",
                                      hint="use a memory-only node")
    found.done()


# --- guest set-up and expectations ---------------------------------------------

def _check_guest(t: Topology) -> None:
    found = Found()
    with found.item():
        devices = {d.id: d for d in t.cxl.devices} if t.cxl else {}
        windows = t.cxl.windows if t.cxl else []
        ports = CxlTree(t.cxl).under_host_bridges()
        used: dict[tuple[str, str], int] = {}
        window_use = [0] * len(windows)
        for i, r in enumerate(t.guest.regions):
            with found.item():
                p = f"guest.regions[{i}]"
                if not 0 <= r.window < len(windows):
                    raise SchemaError(f"{p}.window", f"window {r.window} does not exist",
                                      hint=f"cxl.windows has {len(windows)} entries (0..{len(windows) - 1})" if windows else "define cxl.windows first")
                w = windows[r.window]
                if not r.devices:
                    raise SchemaError(f"{p}.devices", "a region needs at least one device")
                for j, dev in enumerate(r.devices):
                    if dev not in devices:
                        raise SchemaError(f"{p}.devices[{j}]", f"device '{dev}' does not exist", hint=_closest(dev, devices))
                    cap = devices[dev].volatile if r.mode == "ram" else devices[dev].persistent
                    if not cap:
                        raise SchemaError(f"{p}.devices[{j}]", f"device '{dev}' has no {'volatile' if r.mode == 'ram' else 'persistent'} capacity for a {r.mode} region",
                                          hint=f"set mode: {'pmem' if r.mode == 'ram' else 'ram'} or give the device that capacity")
                    if ports[devices[dev].port] not in w.targets:
                        raise SchemaError(f"{p}.devices[{j}]", f"device '{dev}' is under host bridge {ports[devices[dev].port]}, which window {r.window} does not target",
                                          hint=f"window {r.window} targets {', '.join(w.targets)}")
                    if (dev, r.mode) in used:
                        raise SchemaError(f"{p}.devices[{j}]", f"device '{dev}' is already in guest.regions[{used[(dev, r.mode)]}] with mode {r.mode}")
                    used[(dev, r.mode)] = i
                check_region(t, r, w, p, r.window)
                ways = len(r.devices)
                per_dev = min((devices[d].volatile if r.mode == "ram" else devices[d].persistent) for d in r.devices)
                size = r.size if r.size is not None else per_dev * ways
                if r.size is not None and (r.size % (CXL_CAPACITY_UNIT * ways) or r.size > per_dev * ways):
                    raise SchemaError(f"{p}.size", f"region size {format_size(r.size)} must be a multiple of {format_size(CXL_CAPACITY_UNIT * ways)} and at most {format_size(per_dev * ways)}")
                window_use[r.window] += size
                if window_use[r.window] > w.size:
                    raise SchemaError(f"cxl.windows[{r.window}].size", f"window {r.window} ({format_size(w.size)}) is too small for its regions ({format_size(window_use[r.window])})",
                                      hint=f"raise the window size to at least {format_size(window_use[r.window])}")
                if r.mode == "pmem" and r.online != "devdax" and r.online != "system-ram":
                    raise SchemaError(f"{p}.online", "a pmem region is onlined as devdax or system-ram")
        for i, pn in enumerate(t.guest.private_nodes):
            _node_ref(t, pn.node, f"guest.private_nodes[{i}].node")
            if pn.features is not None and pn.features < 0:
                raise SchemaError(f"guest.private_nodes[{i}].features", "feature mask must be non-negative")
        if t.guest.private_nodes and "private-nodes" not in t.requires:
            raise SchemaError("requires", "guest.private_nodes needs a patched kernel; say so",
                              hint="add requires: [private-nodes]")
        check_provision(t)
    found.done()


def _check_expect(t: Topology) -> None:
    e = t.expect
    if not e:
        return
    if e.nodes is not None and e.nodes < 1:
        raise SchemaError("expect.nodes", "at least one node is always online")
    max_node = (e.nodes if e.nodes is not None else len(t.nodes)) - 1
    for nid, _ne in e.node.items():
        if nid < 0 or nid > max_node:
            raise SchemaError(f"expect.node.{nid}", f"node {nid} is beyond the {max_node + 1} nodes expected",
                              hint="raise expect.nodes or drop this entry")
    if not 0 <= e.memory_tolerance <= 100:
        raise SchemaError("expect.memory_tolerance", "a percentage from 0 to 100")
