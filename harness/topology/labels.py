"""Persistent CXL memory across boots: device serials, label areas, and whether the kernel will
find a namespace again.

A pmem region's namespace lives in its devices' label storage areas (LSA) as namespace labels
(Linux writes the EFI/UEFI 2.7 "v1.2" layout for CXL devices too: drivers/nvdimm/label.c; it
never sets ``ndd->cxl``). Re-created at the next boot, the region finds its namespace only if

* the interleave-set cookie of the new region equals the ``isetcookie`` in each label
  (``nsl_validate_isetcookie()``); drivers/cxl/pmem.c computes it as
  ``nd_fletcher64()`` over each position's (DPA offset, device serial), and a cookie of 0 is
  refused outright (namespace_devs.c ``create_namespace_pmem()``: "invalid interleave-set-cookie",
  the nvdimm region's probe fails with ENXIO);
* every device holds a label of the namespace at its own position, with ``nlabel`` = the ways
  (``has_uuid_at_pos()``).

QEMU gives a type-3 device without ``sn=`` the serial 0. Every device at DPA 0 with serial 0 makes
the cookie 0: the first boot creates its namespace (no label is read), every later boot's region
fails to probe. Linux 7.2 refuses a serial of 0 in a pmem region at once ("invalid or missing
serial number", cxl_pmem_region_probe). So a persistent device the topology gives no serial gets
:func:`default_serial`, derived from its id (stable across boots and list order).

Pure: :func:`parse_label_area` reads an LSA image (bytes), :func:`region_label_problem` says in one
line why a region re-created from the topology would not find the namespace its devices' labels
describe (or None). Reading the files is the caller's (:mod:`harness.boot.prepare`).
"""

from __future__ import annotations

import struct
import uuid as uuidlib
import zlib
from dataclasses import dataclass

from .model import Region, Topology, Type3
from .regions import region_size, region_ways

#: High bits of a default serial ("NH"), so it never looks like a small hand-given one.
DEFAULT_SERIAL_BASE = 0x4E48 << 48

INDEX_SIG = b"NAMESPACE_INDEX\0"
INDEX_HEADER = struct.Struct("<16s3sBIQQQQIHHQ")  # sig flags labelsize seq myoff mysize otheroff labeloff nslot major minor checksum
LABEL = struct.Struct("<16s64sIHHQQQQIB3s16s16s88sQ")  # EFI v1.2 namespace label, 256 bytes
NSLABEL_FLAG_UPDATING = 0x8
#: The most of an LSA file read: QEMU's label areas are a few MiB at most (the topologies use 1M).
MAX_LSA_BYTES = 16 << 20


def default_serial(device_id: str) -> int:
    """The serial a persistent device without ``serial:`` is given: stable, non-zero, from its id."""
    return DEFAULT_SERIAL_BASE | zlib.crc32(device_id.encode())


def device_serial(d: Type3) -> int | None:
    """The serial QEMU gives ``d`` (``sn=``): as written, else :func:`default_serial` for a device with
    persistent capacity, else None (QEMU's own default, 0)."""
    if d.serial is not None:
        return d.serial
    return default_serial(d.id) if d.persistent else None


def fletcher64(data: bytes) -> int:
    """drivers/nvdimm/core.c ``nd_fletcher64()`` over little-endian 32-bit words."""
    lo, hi = 0, 0
    for (w,) in struct.iter_unpack("<I", data[: len(data) // 4 * 4]):
        lo = (lo + w) & 0xFFFFFFFF
        hi += lo
    return ((hi << 32) | lo) & 0xFFFFFFFFFFFFFFFF


def interleave_set_cookie(mappings: list[tuple[int, int]]) -> int:
    """The cookie drivers/cxl/pmem.c gives a region: fletcher64 over (DPA offset, serial) per position."""
    return fletcher64(b"".join(struct.pack("<QQ", off, serial) for off, serial in mappings))


@dataclass(frozen=True)
class NamespaceLabel:
    """One active namespace label of a label area."""

    uuid: str
    name: str
    flags: int
    nlabel: int        # devices in the interleave set
    position: int      # this device's position in it
    isetcookie: int
    dpa: int
    rawsize: int
    slot: int


@dataclass(frozen=True)
class LabelArea:
    """What a label storage area holds: no valid index (never initialised), or its active labels."""

    initialised: bool
    labels: tuple[NamespaceLabel, ...] = ()


def _index_at(data: bytes, off: int) -> tuple[int, int, int, int, bytes] | None:
    """(seq, mysize, labeloff, nslot, free bitmap) of a valid index block at ``off``, else None."""
    if off + INDEX_HEADER.size > len(data):
        return None
    sig, _flags, labelsize, seq, myoff, mysize, _other, labeloff, nslot, _major, _minor, csum = \
        INDEX_HEADER.unpack_from(data, off)
    if sig != INDEX_SIG or myoff != off or not 1 <= seq <= 3 or labelsize > 1 or off + mysize > len(data):
        return None
    block = bytearray(data[off:off + mysize])
    block[INDEX_HEADER.size - 8:INDEX_HEADER.size] = bytes(8)
    if fletcher64(bytes(block)) != csum:
        return None
    free = data[off + INDEX_HEADER.size: off + INDEX_HEADER.size + (nslot + 7) // 8]
    return seq, mysize, labeloff, nslot, free


def _newer(a: int, b: int) -> bool:
    """label.c best_seq(): sequence numbers go 1, 2, 3, 1; is ``b`` the one after ``a``?"""
    return {1: 2, 2: 3, 3: 1}[a] == b


def parse_label_area(data: bytes) -> LabelArea:
    """The active namespace labels of an LSA image, as label.c reads them: the newer of the two
    valid index blocks, its free bitmap (a clear bit is a slot in use), labels with a good checksum."""
    first = _index_at(data, 0)
    if first is None:  # block 0 damaged: block 1 follows it, at a multiple of 256 bytes
        first = next((ix for off in range(256, 1 << 14, 256) if (ix := _index_at(data, off))), None)
        if first is None:
            return LabelArea(initialised=False)
        second = None
    else:
        second = _index_at(data, first[1])
    cur = first if second is None or not _newer(first[0], second[0]) else second
    _seq, _size, labeloff, nslot, free = cur
    labels = []
    for slot in range(nslot):
        if free[slot // 8] >> (slot % 8) & 1:
            continue
        off = labeloff + slot * LABEL.size
        if off + LABEL.size > len(data):
            break
        raw = bytearray(data[off:off + LABEL.size])
        fields = LABEL.unpack_from(raw)
        raw[-8:] = bytes(8)
        if fletcher64(bytes(raw)) != fields[-1]:
            continue
        uid, name, flags, nlabel, position, cookie, _lba, dpa, rawsize, lslot = fields[:10]
        labels.append(NamespaceLabel(uuid=str(uuidlib.UUID(bytes=uid)), name=name.rstrip(b"\0").decode(errors="replace"),
                                     flags=flags, nlabel=nlabel, position=position, isetcookie=cookie, dpa=dpa,
                                     rawsize=rawsize, slot=lslot))
    return LabelArea(initialised=True, labels=tuple(labels))


def region_dpa_offsets(t: Topology, r: Region) -> dict[str, int]:
    """Where ``r`` starts in each of its devices' DPA space, as the guest set-up allocates it:
    after the volatile partition and the earlier pmem regions on the same device."""
    assert t.cxl
    devs = {d.id: d for d in t.cxl.devices}
    used: dict[str, int] = {}
    for other in t.guest.regions:
        if other.mode != "pmem":
            continue
        if other is r:
            break
        for d in other.devices:
            used[d] = used.get(d, 0) + region_size(t, other) // region_ways(other)
    return {d: int(devs[d].volatile) + used.get(d, 0) for d in r.devices}


def region_cookie(t: Topology, r: Region) -> int:
    """The interleave-set cookie the kernel will give region ``r`` of ``t``."""
    assert t.cxl
    devs = {d.id: d for d in t.cxl.devices}
    offsets = region_dpa_offsets(t, r)
    return interleave_set_cookie([(offsets[d], device_serial(devs[d]) or 0) for d in r.devices])


def region_label_problem(t: Topology, r: Region, index: int, areas: dict[str, LabelArea]) -> str | None:
    """Why region ``r`` (``guest.regions[index]``), re-created from the topology, would not find the
    namespace its devices' label areas describe, in one line; None if it will, or if there are no
    labels yet. ``areas`` has the label area of each region device whose LSA file exists."""
    held = {d: [lb for lb in areas[d].labels if not lb.flags & NSLABEL_FLAG_UPDATING] for d in r.devices if d in areas}
    with_labels = {d: lbs for d, lbs in held.items() if lbs}
    if not with_labels:
        return None
    where = f"guest.regions[{index}]"
    ways = len(r.devices)
    bare = [d for d in r.devices if d not in with_labels]
    if bare:
        return (f"{where}: {', '.join(bare)} hold{'s' if len(bare) == 1 else ''} no namespace label but "
                f"{', '.join(with_labels)} do: the files are from a different region")
    cookie = region_cookie(t, r)
    for pos, d in enumerate(r.devices):
        mine = with_labels[d]
        lb = mine[0]
        if lb.nlabel != ways:
            return f"{where}: {d}'s namespace {lb.uuid} spans {lb.nlabel} devices, the region {ways}"
        if lb.position != pos:
            order = sorted(r.devices, key=lambda x: with_labels[x][0].position)
            return (f"{where}: {d} holds position {lb.position} of namespace {lb.uuid}, the topology puts it at {pos} "
                    f"(list the devices as [{', '.join(order)}])")
        if lb.isetcookie == 0:
            return (f"{where}: the namespace {lb.uuid} was written with interleave-set cookie 0 (every device had "
                    "serial 0 at DPA 0, QEMU's default); Linux refuses it at every later boot")
        if lb.isetcookie != cookie:
            return (f"{where}: the namespace {lb.uuid} was written for interleave-set cookie {lb.isetcookie:#x}, this "
                    f"topology's devices (serials, DPA offsets) give {cookie:#x}: a serial or a device changed")
    uuids = {lbs[0].uuid for lbs in with_labels.values()}
    if len(uuids) > 1:
        return f"{where}: the devices' labels name different namespaces ({', '.join(sorted(uuids))})"
    return None
