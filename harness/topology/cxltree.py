"""The CXL port tree of a topology, derived once: each port's place (its parent, position, port
number and slot), the host bridge above it, each device's path down from its host bridge, and
switches plugged into each other in a loop.

One pure view over :class:`~.model.Cxl`, read by validation (:mod:`.validate`), the kernel's
region rules (:mod:`.regions`), guest set-up (:mod:`harness.guest.setup`: a device's PCI path)
and the QEMU argv (:mod:`harness.qemu.argv`: port numbers and slots), so the four agree by
construction. It does not check the tree: on a topology validation has not passed, a port
whose chain never reaches a host bridge is simply not under one, and :meth:`CxlTree.path`
raises :class:`TreeLoop` where switches loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Cxl


class TreeLoop(ValueError):
    """A chain of ports that never reaches a host bridge (switches plugged into each other)."""


@dataclass(frozen=True)
class Port:
    """A port a device or switch plugs into: a host bridge's root port or a switch's downstream port."""

    id: str
    parent: str     # the host bridge (root port) or the switch (downstream port) it belongs to
    switch: bool    # a switch downstream port; else a root port
    index: int      # its place in the parent's list: its PCI device number (QEMU is given no addr=)
    number: int     # the CXL port number (QEMU's port=): as the topology gives it, else ``index``
    slot: int       # its PCIe slot on chassis 0, unique over all root and downstream ports


@dataclass(frozen=True)
class Hop:
    """One decoding port on a device's path below the root: its id and the downstream port taken."""

    port: str     # host bridge id or switch (upstream port) id
    dport: str    # root port id or switch downstream port id


class CxlTree:
    """The port tree of ``cxl`` (None: a topology without CXL, an empty tree)."""

    def __init__(self, cxl: Cxl | None):
        self.cxl = cxl
        self.ports: dict[str, Port] = {}
        self._bus_nr: dict[str, int] = {}
        self._upstream: dict[str, str] = {}     # switch id -> the port it plugs into
        self._devices: dict[str, str] = {}      # device id -> the port it plugs into
        if cxl is None:
            return
        slot = 0  # (chassis 0, slot N) must be unique across all PCIe slots with hotplug
        for hb in cxl.host_bridges:
            self._bus_nr.setdefault(hb.id, hb.bus_nr)
            for j, rp in enumerate(hb.root_ports):
                self.ports.setdefault(rp.id, Port(rp.id, hb.id, False, j, rp.port if rp.port is not None else j, slot))
                slot += 1
        for sw in cxl.switches:
            self._upstream.setdefault(sw.id, sw.upstream)
            for j, dp in enumerate(sw.downstream_ports):
                self.ports.setdefault(dp.id, Port(dp.id, sw.id, True, j, dp.port if dp.port is not None else j, slot))
                slot += 1
        for d in cxl.devices:
            self._devices.setdefault(d.id, d.port)

    def host_bridge(self, port: str) -> str | None:
        """The host bridge above ``port``, or None if the port does not exist or its chain of
        switches never reaches a root port."""
        seen: set[str] = set()
        cur = self.ports.get(port)
        while cur is not None and cur.switch and cur.id not in seen:
            seen.add(cur.id)
            cur = self.ports.get(self._upstream.get(cur.parent, ""))
        return cur.parent if cur is not None and not cur.switch else None

    def under_host_bridges(self) -> dict[str, str]:
        """Every port under a host bridge -> that host bridge (the ports a device or switch can use)."""
        out = {}
        for p in self.ports:
            hb = self.host_bridge(p)
            if hb is not None:
                out[p] = hb
        return out

    def switch_loop(self, start: str) -> list[str] | None:
        """Switch ids along the upstream chain from switch ``start`` that comes back to it, or None."""
        chain, cur = [start], start
        for _ in range(len(self._upstream)):
            up = self.ports.get(self._upstream.get(cur, ""))
            if up is None or not up.switch:
                return None
            chain.append(up.parent)
            if up.parent == start:
                return chain
            cur = up.parent
        return None

    def _chain(self, port: str) -> list[Port]:
        """The ports from a root port down to ``port`` (root port first)."""
        chain: list[Port] = []
        cur = self.ports.get(port)
        while cur is not None:
            if any(c.id == cur.id for c in chain):
                raise TreeLoop(f"switches are plugged into each other in a loop at {cur.id}")
            chain.append(cur)
            if not cur.switch:
                return list(reversed(chain))
            cur = self.ports.get(self._upstream.get(cur.parent, ""))
        raise TreeLoop(f"port {port!r} is not under a host bridge")

    def path(self, device: str) -> list[Hop]:
        """Hops from the host bridge down to ``device``'s port (host bridge first)."""
        return [Hop(p.parent, p.id) for p in self._chain(self._devices[device])]

    def pci_path(self, device: str) -> tuple[int, list[str]]:
        """(root bus number, ``dev.fn`` of each PCI hop down to the device, the device's own last):
        a root port or downstream port at position j is device j of its bus; a switch's upstream
        port and a type-3 device are device 0 on their parent port's secondary bus."""
        chain = self._chain(self._devices[device])
        hops: list[str] = []
        for p in chain:
            hops += (["00.0"] if p.switch else []) + [f"{p.index:02x}.0"]
        return self._bus_nr[chain[0].parent], hops + ["00.0"]

    def bus_need(self, hb_id: str) -> int:
        """PCI bus numbers a host bridge consumes: its own bus, one per root port, switch buses."""
        need = 1 + sum(1 for p in self.ports.values() if not p.switch and p.parent == hb_id)
        for sw, up in self._upstream.items():
            if self.host_bridge(up) == hb_id:
                need += 1 + sum(1 for p in self.ports.values() if p.switch and p.parent == sw)
        return need
