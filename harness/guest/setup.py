"""Guest set-up after boot: create the topology's CXL regions and online them.

:func:`setup_script` renders ``topology.guest`` as one POSIX sh script
(busybox ash and dash compatible, ``set -eu``) that drives the kernel's CXL
sysfs ABI directly, the same steps ``cxl create-region`` takes:

1. read ``decoder0.<window>/create_{ram,pmem}_region`` for the next region
   name, write it back; (pmem) write a ``uuid``;
2. region ``interleave_granularity``, ``interleave_ways``;
3. per device, in position order: the first free endpoint decoder of its
   memdev (``mode`` none, ``dpa_size`` 0) gets ``mode`` and ``dpa_size`` =
   size / ways;
4. region ``size``, ``target<i>`` per decoder, ``commit`` = 1;
5. ``auto_online_blocks`` set for the region's ``online`` (online,
   online_movable, or offline for devdax), the region bound to the
   ``cxl_region`` driver; dax_cxl then creates ``daxN.0`` and kmem adds it
   as system RAM on a new node; any block still offline is onlined, a devdax
   region's dax device is moved from kmem to device_dax;
6. pmem regions surface as an nvdimm region; ``ndctl create-namespace -m
   devdax`` gives the dax device (kmem for online: system-ram).

Every write goes through one helper that, on failure, prints
``error step=<step> file=<sysfs file> msg=<errno text>`` plus the last dmesg
lines mentioning cxl and exits 1. Results are one line each
(``memdev ...``, ``region <name> committed size=<bytes> node=<nid> ...``)
and a final ``summary <json>`` line, which :func:`parse_setup_output` reads.

Memdev mapping. The topology names devices by QEMU id; the guest calls them
mem0, mem1, ... in probe order, and QEMU gives every device without ``sn=``
the same serial (0), so neither names nor serials identify a device. The
PCI path does: a pxb-cxl's root bus number is its ``bus_nr``, and QEMU
places root ports on a host bridge, and downstream ports in a switch, at
device numbers 0, 1, 2, ... in the order :mod:`harness.qemu.argv` creates
them (the topology's list order; it passes no ``addr=``); a switch's
upstream port and a type-3 device are device 0 on their parent port's
secondary bus. So each device has a key ``<bus_nr hex>/<dev.fn>/...`` (e.g.
``0c/00.0/00.0/01.0/00.0`` for the device on a switch's second downstream
port), which the script computes from the memdev's sysfs path
(``/sys/devices/pci0000:0c/0000:0c:00.0/.../memN``). Secondary bus numbers,
which the guest assigns, are not part of the key. Where the topology gives
a serial, the script checks it as well.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from harness.errors import GuestCommandError
from harness.topology.model import Cxl, Region, Topology

#: Where the script is written in the guest before it runs.
GUEST_SCRIPT_PATH = "/tmp/harness-guest-setup.sh"
#: Dropbear refuses exec requests longer than 9000 bytes (MAX_CMD_LEN); the
#: script is sent in pieces well below that.
CHUNK_LIMIT = 6000

ONLINE_TYPE = {"system-ram": "online", "system-ram-movable": "online_movable", "devdax": "offline"}


class GuestSetupError(GuestCommandError):
    """The guest set-up script failed. ``step`` and ``file`` name the failing sysfs write."""

    def __init__(self, message: str, *, step: str | None = None, file: str | None = None,
                 hint: str | None = None, detail: str | None = None):
        super().__init__(message, hint=hint, detail=detail)
        self.step = step
        self.file = file


@dataclass(frozen=True)
class RegionResult:
    """One region as the guest kernel reports it after set-up."""

    name: str                   # region0, ...
    size: int                   # bytes
    node: int | None         # NUMA node of its memory (target node for devdax); None if unknown
    mode: str                   # ram | pmem
    online: str                 # system-ram | system-ram-movable | devdax
    dax: str | None = None   # daxN.M, if a dax device was created
    memdevs: tuple[str, ...] = ()    # guest memdevs in position order
    decoders: tuple[str, ...] = ()   # endpoint decoders in position order


@dataclass(frozen=True)
class SetupResult:
    """What :func:`apply_guest_setup` did. Empty when the topology asks for nothing."""

    regions: list[RegionResult] = field(default_factory=list)
    memdevs: dict[str, str] = field(default_factory=dict)   # QEMU device id -> guest memdev (memN)
    demotion: bool | None = None
    output: str = ""            # the script's stdout, for logs


# --------------------------------------------------------------------------
# Memdev mapping
# --------------------------------------------------------------------------


def _port_path(cxl: Cxl, port_id: str, seen: frozenset[str] = frozenset()) -> tuple[int, list[str]]:
    """(root bus number, dev.fn of each PCI hop down to and including the port)."""
    if port_id in seen:
        raise ValueError(f"switch loop at {port_id}")
    for hb in cxl.host_bridges:
        for j, rp in enumerate(hb.root_ports):
            if rp.id == port_id:
                return hb.bus_nr, [f"{j:02x}.0"]
    for sw in cxl.switches:
        for j, dp in enumerate(sw.downstream_ports):
            if dp.id == port_id:
                bus, hops = _port_path(cxl, sw.upstream, seen | {port_id})
                return bus, hops + ["00.0", f"{j:02x}.0"]
    raise ValueError(f"port {port_id!r} is neither a root port nor a switch downstream port")


def memdev_pci_key(t: Topology, device_id: str) -> str:
    """The PCI path key of type-3 device ``device_id``, as the script derives it from sysfs.

    ``<root bus hex>/<dev.fn of each bridge>/<dev.fn of the device>``.
    """
    assert t.cxl
    dev = next(d for d in t.cxl.devices if d.id == device_id)
    bus, hops = _port_path(t.cxl, dev.port)
    return f"{bus:02x}/" + "/".join(hops + ["00.0"])


def region_size(t: Topology, r: Region) -> int:
    """The region's size: as given, else ways × the smallest device capacity of its mode."""
    if r.size is not None:
        return int(r.size)
    assert t.cxl
    devs = {d.id: d for d in t.cxl.devices}
    per = min(int(devs[d].volatile if r.mode == "ram" else devs[d].persistent) for d in r.devices)
    return per * region_ways(r)


def region_ways(r: Region) -> int:
    return r.ways if r.ways is not None else len(r.devices)


def has_setup(t: Topology) -> bool:
    """Whether the topology asks for anything after boot."""
    return bool(t.guest.regions) or t.guest.demotion is not None


# --------------------------------------------------------------------------
# The script
# --------------------------------------------------------------------------

# The fixed part: helpers. fd 3 is the script's stdout, so result and error
# lines printed from inside $(...) still reach the caller.
_LIBRARY = r"""set -eu
exec 3>&1
CXL=/sys/bus/cxl/devices
MEMSYS=/sys/devices/system/memory
DAXBUS=/sys/bus/dax
ERRF=/tmp/harness-guest-setup.err
AUTO_ONLINE_ORIG=
SUMMARY=
MEMDEVS=

say() { echo "$*" >&3; }

errmsg() {
	sed -e 's/^[a-z]*: //' -e 's/^write error: //' -e 's/^read error: //' "$ERRF" 2>/dev/null | tail -n 1
}

# fail STEP FILE MESSAGE: the error line, the kernel's view, exit 1.
fail() {
	say "error step=$1 file=$2 msg=$3"
	dmesg 2>/dev/null | grep -i cxl | grep -iv 'command line' | tail -n 8 | sed 's/^/dmesg /' >&3 || true
	exit 1
}

# wr FILE VALUE STEP: one sysfs write; the errno text goes into the error line.
wr() {
	if ! echo "$2" 2>"$ERRF" >"$1"; then
		fail "$3" "$1" "writing '$2': $(errmsg)"
	fi
}

# rd FILE STEP: print a sysfs file's contents or fail.
rd() {
	if ! cat "$1" 2>"$ERRF"; then
		fail "$2" "$1" "reading: $(errmsg)"
	fi
}

# wait_path PATH SECONDS STEP
wait_path() {
	wp_n=0
	while [ ! -e "$1" ]; do
		wp_n=$((wp_n + 1))
		if [ "$wp_n" -gt $(($2 * 10)) ]; then
			fail "$3" "$1" "did not appear within $2 s"
		fi
		sleep 0.1
	done
}

restore_auto_online() {
	if [ -n "$AUTO_ONLINE_ORIG" ]; then
		echo "$AUTO_ONLINE_ORIG" > "$MEMSYS/auto_online_blocks" 2>/dev/null || true
	fi
}
trap restore_auto_online EXIT

# set_auto_online ONLINE: how kmem onlines the blocks it adds.
set_auto_online() {
	case $1 in
		system-ram) sa_v=online ;;
		system-ram-movable) sa_v=online_movable ;;
		*) sa_v=offline ;;
	esac
	[ -e "$MEMSYS/auto_online_blocks" ] || return 0
	if [ -z "$AUTO_ONLINE_ORIG" ]; then
		AUTO_ONLINE_ORIG=$(rd "$MEMSYS/auto_online_blocks" "set auto_online_blocks") || exit 1
	fi
	wr "$MEMSYS/auto_online_blocks" "$sa_v" "set auto_online_blocks"
}

# pcikey SYSFS-PATH: /sys/devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/mem0 -> 0c/00.0/00.0
pcikey() {
	echo "$1" | sed -e 's|/mem[0-9]*$||' \
		-e 's|^/sys/devices/pci[0-9a-f]*:\([0-9a-f]*\)|\1|' \
		-e 's|/[0-9a-f]*:[0-9a-f]*:\([0-9a-f]*\.[0-9a-f]\)|/\1|g'
}

# wait_memdevs COUNT: wait for the CXL memdevs the topology has.
wait_memdevs() {
	wm_n=0
	while :; do
		wm_c=0
		for wm_m in "$CXL"/mem[0-9]*; do
			[ -e "$wm_m" ] && wm_c=$((wm_c + 1))
		done
		[ "$wm_c" -ge "$1" ] && return 0
		wm_n=$((wm_n + 1))
		if [ "$wm_n" -gt 300 ]; then
			fail "find memdevs" "$CXL" "$wm_c CXL memdevs after 30 s, the topology has $1 (cxl_pci/cxl_mem loaded?)"
		fi
		sleep 0.1
	done
}

# find_memdev QEMU-ID PCI-KEY SERIAL|-: print memN, say the mapping.
find_memdev() {
	fm_list=
	for fm_m in "$CXL"/mem[0-9]*; do
		[ -e "$fm_m" ] || continue
		fm_k=$(pcikey "$(readlink -f "$fm_m")")
		fm_list="$fm_list ${fm_m##*/}=$fm_k"
		if [ "$fm_k" = "$2" ]; then
			fm_s=$(rd "$fm_m/serial" "find memdev $1") || exit 1
			if [ "$3" != - ] && [ "$((fm_s))" -ne "$3" ]; then
				fail "find memdev $1" "$fm_m/serial" "serial $fm_s, the topology says $3"
			fi
			say "memdev $1 ${fm_m##*/} pci=$2 serial=$fm_s"
			echo "${fm_m##*/}"
			return 0
		fi
	done
	fail "find memdev $1" "$CXL" "no memdev at PCI path $2; found:$fm_list"
}

# endpoint_of memN: its endpoint port (endpointN/uport points at the memdev).
endpoint_of() {
	eo_t=$(readlink -f "$CXL/$1")
	eo_n=0
	while :; do
		for eo_e in "$CXL"/endpoint[0-9]*; do
			[ -e "$eo_e/uport" ] || continue
			if [ "$(readlink -f "$eo_e/uport")" = "$eo_t" ]; then
				echo "${eo_e##*/}"
				return 0
			fi
		done
		eo_n=$((eo_n + 1))
		if [ "$eo_n" -gt 300 ]; then
			fail "find endpoint of $1" "$CXL/$1" "no endpoint port after 30 s (cxl_mem/cxl_port not bound?)"
		fi
		sleep 0.1
	done
}

# free_decoder endpointN: its first decoder with mode none and dpa_size 0.
free_decoder() {
	fd_i=${1#endpoint}
	for fd_d in $(cd "$CXL" && ls -d "decoder$fd_i".* 2>/dev/null | sort -t. -k2 -n); do
		fd_mode=$(cat "$CXL/$fd_d/mode" 2>/dev/null || echo unknown)
		[ "$fd_mode" = none ] || continue
		fd_size=$(cat "$CXL/$fd_d/dpa_size" 2>/dev/null || echo 1)
		if [ "$((fd_size))" -eq 0 ]; then
			echo "$fd_d"
			return 0
		fi
	done
	fail "pick endpoint decoder" "$CXL/decoder$fd_i.*" "$1 has no free decoder (mode none, dpa_size 0)"
}

# dax_of REGION-PATH: the dax device dax_cxl made for the region (waits).
dax_of() {
	do_n=0
	while :; do
		for do_d in "$1"/dax_region*/dax[0-9]*.[0-9]*; do
			if [ -e "$do_d" ]; then
				echo "${do_d##*/}"
				return 0
			fi
		done
		do_n=$((do_n + 1))
		if [ "$do_n" -gt 200 ]; then
			fail "find dax device" "$1/dax_region*" "no dax device after 20 s (dax_cxl loaded?)"
		fi
		sleep 0.1
	done
}

# driver_of daxN.M: the name of the driver it is bound to, or nothing.
driver_of() {
	if [ -e "$DAXBUS/devices/$1/driver" ]; then
		dv_p=$(readlink -f "$DAXBUS/devices/$1/driver")
		echo "${dv_p##*/}"
	fi
	return 0
}

# bind_dax daxN.M DRIVER: move a dax device to kmem or device_dax.
bind_dax() {
	bd_cur=$(driver_of "$1")
	[ "$bd_cur" = "$2" ] && return 0
	[ -d "$DAXBUS/drivers/$2" ] || modprobe "$2" 2>/dev/null || true
	[ -d "$DAXBUS/drivers/$2" ] || fail "bind $1 to $2" "$DAXBUS/drivers/$2" "driver $2 not loaded"
	if [ -n "$bd_cur" ]; then
		wr "$DAXBUS/drivers/$bd_cur/unbind" "$1" "unbind $1 from $bd_cur"
	fi
	# new_id makes the driver match this device whatever its region's type,
	# and attaches it (what daxctl reconfigure-device does).
	echo "$1" > "$DAXBUS/drivers/$2/new_id" 2>/dev/null || true
	bd_n=0
	while [ "$(driver_of "$1")" != "$2" ]; do
		bd_n=$((bd_n + 1))
		if [ "$bd_n" -eq 10 ]; then
			wr "$DAXBUS/drivers/$2/bind" "$1" "bind $1 to $2"
		fi
		if [ "$bd_n" -gt 100 ]; then
			fail "bind $1 to $2" "$DAXBUS/devices/$1/driver" "still bound to '$(driver_of "$1")' after 10 s"
		fi
		sleep 0.1
	done
}

# online_dax daxN.M ONLINE-TYPE: online every block of the dax range, print its node.
online_dax() {
	od_dev=$DAXBUS/devices/$1
	od_bs=$(rd "$MEMSYS/block_size_bytes" "online $1") || exit 1
	od_bs=$((0x$od_bs))
	od_start=$(rd "$od_dev/resource" "online $1") || exit 1
	od_size=$(rd "$od_dev/size" "online $1") || exit 1
	od_b=$(((od_start + od_bs - 1) / od_bs))
	od_last=$(((od_start + od_size) / od_bs))
	od_node=
	od_count=0
	while [ "$od_b" -lt "$od_last" ]; do
		od_st=$MEMSYS/memory$od_b/state
		wait_path "$od_st" 10 "online $1"
		if [ "$(rd "$od_st" "online $1")" != online ]; then
			wr "$od_st" "$2" "online memory$od_b of $1"
		fi
		for od_l in "$MEMSYS/memory$od_b"/node[0-9]*; do
			[ -e "$od_l" ] && od_node=${od_l##*/node}
		done
		od_count=$((od_count + 1))
		od_b=$((od_b + 1))
	done
	if [ "$od_count" -eq 0 ]; then
		fail "online $1" "$od_dev/resource" "the dax range holds no whole memory block"
	fi
	echo "$od_node"
}

# target_node daxN.M
target_node() {
	rd "$DAXBUS/devices/$1/target_node" "read target node of $1"
}

# pmem_dax REGION-PATH: an nvdimm namespace in devdax mode on the nvdimm region
# cxl_pmem made for the CXL region (same resource); print daxN.M.
pmem_dax() {
	pd_res=$(rd "$1/resource" "find nvdimm region") || exit 1
	pd_nd=
	pd_n=0
	while :; do
		for pd_r in /sys/bus/nd/devices/region[0-9]*; do
			[ -e "$pd_r/resource" ] || continue
			if [ "$(($(cat "$pd_r/resource" 2>/dev/null || echo -1)))" -eq "$((pd_res))" ]; then
				pd_nd=${pd_r##*/}
			fi
		done
		[ -n "$pd_nd" ] && break
		pd_n=$((pd_n + 1))
		if [ "$pd_n" -gt 200 ]; then
			fail "find nvdimm region" "/sys/bus/nd/devices/region*/resource" "no nvdimm region at $pd_res after 20 s (cxl_pmem loaded?)"
		fi
		sleep 0.1
	done
	modprobe dax_pmem 2>/dev/null || true
	if ! ndctl create-namespace -m devdax -r "$pd_nd" >"$ERRF" 2>&1; then
		fail "create namespace" "/sys/bus/nd/devices/$pd_nd" "ndctl create-namespace -m devdax -r $pd_nd: $(tail -n 1 "$ERRF")"
	fi
	pd_n=0
	while :; do
		for pd_d in /sys/bus/nd/devices/"$pd_nd"/dax[0-9]*.[0-9]*/dax[0-9]*.[0-9]*; do
			if [ -e "$DAXBUS/devices/${pd_d##*/}" ]; then
				echo "${pd_d##*/}"
				return 0
			fi
		done
		pd_n=$((pd_n + 1))
		if [ "$pd_n" -gt 100 ]; then
			fail "find dax device" "/sys/bus/nd/devices/$pd_nd" "no dax device 10 s after create-namespace (dax_pmem loaded?)"
		fi
		sleep 0.1
	done
}

# create_region WINDOW MODE WAYS GRANULARITY SIZE DPA-SIZE ONLINE memN...
# (DPA-SIZE = SIZE / WAYS, each device's share; memdevs in position order)
create_region() {
	cr_win=$1 cr_mode=$2 cr_ways=$3 cr_gran=$4 cr_size=$5 cr_per=$6 cr_online=$7
	shift 7
	cr_root=$CXL/decoder0.$cr_win
	wait_path "$cr_root" 30 "find root decoder"
	cr_f=$cr_root/create_${cr_mode}_region
	cr_name=$(rd "$cr_f" "create region") || exit 1
	wr "$cr_f" "$cr_name" "create region"
	cr_r=$CXL/$cr_name
	wait_path "$cr_r" 10 "create region"
	if [ "$cr_mode" = pmem ]; then
		wr "$cr_r/uuid" "$(cat /proc/sys/kernel/random/uuid)" "set uuid"
	fi
	wr "$cr_r/interleave_granularity" "$cr_gran" "set interleave_granularity"
	wr "$cr_r/interleave_ways" "$cr_ways" "set interleave_ways"
	cr_decs=
	cr_mds=
	for cr_md in "$@"; do
		cr_ep=$(endpoint_of "$cr_md") || exit 1
		cr_dec=$(free_decoder "$cr_ep") || exit 1
		wr "$CXL/$cr_dec/mode" "$cr_mode" "reserve DPA on $cr_md"
		wr "$CXL/$cr_dec/dpa_size" "$cr_per" "reserve DPA on $cr_md"
		cr_decs="$cr_decs $cr_dec"
		cr_mds="$cr_mds\"$cr_md\","
	done
	wr "$cr_r/size" "$cr_size" "set region size"
	cr_i=0
	for cr_dec in $cr_decs; do
		wr "$cr_r/target$cr_i" "$cr_dec" "attach target$cr_i"
		cr_i=$((cr_i + 1))
	done
	wr "$cr_r/commit" 1 "commit"
	cr_c=$(rd "$cr_r/commit" "commit") || exit 1
	[ "$cr_c" = 1 ] || fail "commit" "$cr_r/commit" "reads $cr_c after writing 1"
	set_auto_online "$cr_online"
	wr /sys/bus/cxl/drivers/cxl_region/bind "$cr_name" "bind region"
	if [ "$cr_mode" = ram ]; then
		cr_dax=$(dax_of "$cr_r") || exit 1
	else
		cr_dax=$(pmem_dax "$cr_r") || exit 1
	fi
	case $cr_online in
		system-ram|system-ram-movable)
			bind_dax "$cr_dax" kmem
			if [ "$cr_online" = system-ram ]; then cr_t=online; else cr_t=online_movable; fi
			cr_node=$(online_dax "$cr_dax" "$cr_t") || exit 1
			;;
		*)
			bind_dax "$cr_dax" device_dax
			wait_path "/dev/$cr_dax" 10 "devdax $cr_dax"
			cr_node=$(target_node "$cr_dax") || exit 1
			;;
	esac
	cr_sz=$(rd "$cr_r/size" "read region size") || exit 1
	cr_sz=$((cr_sz))
	say "region $cr_name committed size=$cr_sz node=$cr_node mode=$cr_mode online=$cr_online dax=$cr_dax memdevs=$(echo "$@" | tr ' ' ,) decoders=$(echo $cr_decs | tr ' ' ,)"
	SUMMARY="$SUMMARY{\"name\":\"$cr_name\",\"size\":$cr_sz,\"node\":${cr_node:-null},\"mode\":\"$cr_mode\",\"online\":\"$cr_online\",\"dax\":\"$cr_dax\",\"memdevs\":[${cr_mds%,}],\"decoders\":[$(echo $cr_decs | sed -e 's/[^ ]*/"&"/g' -e 's/ /,/g')]},"
}

set_demotion() {
	wr /sys/kernel/mm/numa/demotion_enabled "$1" "set demotion"
	sd_v=$(rd /sys/kernel/mm/numa/demotion_enabled "set demotion") || exit 1
	say "demotion enabled=$sd_v"
	DEMOTION=$1
}
DEMOTION=null
"""


def _q(s: str) -> str:
    return shlex.quote(s)


def setup_script(t: Topology) -> str:
    """The guest set-up script for ``t.guest`` (see the module docstring)."""
    lines = [_LIBRARY.rstrip("\n"), "", "# --- this topology ---"]
    regions = t.guest.regions
    if regions:
        assert t.cxl
        devs = {d.id: d for d in t.cxl.devices}
        used = list(dict.fromkeys(d for r in regions for d in r.devices))
        lines.append(f"wait_memdevs {len(t.cxl.devices)}")
        var = {}
        for i, dev in enumerate(used):
            serial = devs[dev].serial
            var[dev] = f"MD{i}"
            lines.append(f"MD{i}=$(find_memdev {_q(dev)} {memdev_pci_key(t, dev)} "
                         f"{serial if serial is not None else '-'}) || exit 1")
            lines.append(f'MEMDEVS="$MEMDEVS\\"{dev}\\":\\"$MD{i}\\","')
        for r in regions:
            size, ways = region_size(t, r), region_ways(r)
            args = [str(r.window), r.mode, str(ways), str(int(r.granularity)), str(size), str(size // ways), r.online]
            lines.append(f"create_region {' '.join(args)} " + " ".join(f'"${var[d]}"' for d in r.devices))
    if t.guest.demotion is not None:
        lines.append(f"set_demotion {'true' if t.guest.demotion else 'false'}")
    lines.append('say "summary {\\"regions\\":[${SUMMARY%,}],\\"memdevs\\":{${MEMDEVS%,}},\\"demotion\\":$DEMOTION}"')
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Output parsing
# --------------------------------------------------------------------------


def _kv(line: str) -> dict[str, str]:
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


def parse_error(text: str) -> tuple[str, str, str] | None:
    """(step, file, message) of the script's ``error`` line, if any."""
    for line in text.splitlines():
        if line.startswith("error step="):
            body = line[len("error "):]
            step = body[len("step="):body.index(" file=")] if " file=" in body else body[len("step="):]
            rest = body[body.index(" file=") + len(" file="):] if " file=" in body else ""
            file, _, msg = rest.partition(" msg=")
            return step, file, msg
    return None


def parse_setup_output(text: str) -> SetupResult:
    """The script's stdout -> SetupResult. Raises GuestSetupError without a summary line."""
    summary = None
    for line in text.splitlines():
        if line.startswith("summary "):
            summary = line[len("summary "):]
    if summary is None:
        raise GuestSetupError("guest set-up printed no summary line", detail=_tail(text))
    try:
        data: dict[str, Any] = json.loads(summary)
    except json.JSONDecodeError as e:
        raise GuestSetupError(f"guest set-up summary is not JSON: {e}", detail=summary) from None
    regions = [RegionResult(name=r["name"], size=int(r["size"]), node=r.get("node"), mode=r["mode"],
                            online=r["online"], dax=r.get("dax") or None, memdevs=tuple(r.get("memdevs", ())),
                            decoders=tuple(r.get("decoders", ())))
               for r in data.get("regions", [])]
    return SetupResult(regions=regions, memdevs=dict(data.get("memdevs", {})), demotion=data.get("demotion"),
                       output=text)


def _tail(text: str, n: int = 20) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


# --------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------


def _chunks(script: str, limit: int = CHUNK_LIMIT) -> list[str]:
    """Split at line boundaries into pieces below ``limit`` characters."""
    out: list[str] = []
    cur = ""
    for line in script.splitlines(keepends=True):
        if cur and len(cur) + len(line) > limit:
            out.append(cur)
            cur = ""
        cur += line
    if cur:
        out.append(cur)
    return out


def upload_commands(script: str, path: str = GUEST_SCRIPT_PATH) -> list[str]:
    """Shell commands that write ``script`` to ``path`` in the guest, each below dropbear's limit."""
    marker = "HARNESS_GUEST_SETUP_EOF"
    assert marker not in script
    cmds = []
    for i, chunk in enumerate(_chunks(script)):
        redir = ">" if i == 0 else ">>"
        cmds.append(f"cat {redir} {path} <<'{marker}'\n{chunk}{marker}\n")
    return cmds


def apply_guest_setup(vm: Any, t: Topology, timeout: float = 120) -> SetupResult:
    """Run :func:`setup_script` in ``vm`` (a started :class:`harness.vm.VM`) and parse its result.

    Returns an empty SetupResult, running nothing, when ``t`` asks for no
    set-up. Raises GuestSetupError (a GuestCommandError) naming the failed
    step and sysfs file, with the script's output tail (dmesg included).
    """
    if not has_setup(t):
        return SetupResult()
    script = setup_script(t)
    for cmd in upload_commands(script):
        r = vm.run(cmd, timeout=30)
        if r.exit_status != 0:
            raise GuestSetupError(f"could not write {GUEST_SCRIPT_PATH} in the guest (status {r.exit_status})",
                                  detail=_tail(r.stderr or r.stdout))
    r = vm.run(f"sh {GUEST_SCRIPT_PATH}", timeout=timeout)
    if r.exit_status != 0:
        err = parse_error(r.stdout)
        detail = _tail(r.stdout + ("\n" + r.stderr if r.stderr.strip() else ""), 30)
        if err:
            step, file, msg = err
            raise GuestSetupError(f"guest set-up failed at '{step}': {file}: {msg}", step=step, file=file,
                                  detail=detail)
        raise GuestSetupError(f"guest set-up script exited with status {r.exit_status}", detail=detail)
    return parse_setup_output(r.stdout)
