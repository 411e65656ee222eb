#!/bin/sh
# numa-harness guest node provisioning: bring up node memory through a driver path.
# POSIX sh; runs under busybox ash (the guest's shell).
#
# Usage: provision PLAN
#
# PLAN (written by harness/guest/setup.py), one step per line; # lines ignored:
#   memmap-kmem NODE START SIZE ZONE the legacy pmem range START (bytes) that memmap=SIZE!START
#                                    reserved: its namespace becomes a devdax device (4 KiB
#                                    alignment), bound to kmem, its memory blocks onlined into
#                                    ZONE (movable: ZONE_MOVABLE; normal: the kernel's choice)
#   private-module NODE START SIZE OPS CRAM KO  the same devdax device as memmap-kmem, bound instead to
#                                    the harness's numa_harness_private module (file KO, insmod'ed
#                                    once) with its ops= (NP_OPS_* mask, hex) and cram= (0/1) set
#                                    first: the module hands the range to the private-node series'
#                                    add_private_memory_driver_managed(); skipped without KO
#   dax_test NODE START SIZE FEATURES  modprobe the series' dax_test on that range (FEATURES: hex)
#   cxl-driver NODE DRIVER PCIKEY    the CXL type-3 device at PCIKEY (root bus hex / dev.fn per
#                                    hop) rebound to DRIVER through driver_override
#
# Output, one line per step, REASON last (it has spaces):
#   provisioned node=NODE via=VIA status=ok bytes=ONLINE dax=DAXDEV
#   provisioned node=NODE via=VIA status=skipped reason=REASON     (the kernel lacks the path)
#   done provisioned=N
# On failure: "error step=VIA file=FILE msg=TEXT" and the kernel's last lines as "dmesg ...";
# exit 1 (2 for a bad plan).

set -u

PLAN=${1:-}
# fail, wr, wait_until, blocks_in, node_bytes (and SYSFS from HARNESS_SYSFS)
LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$LIB"
ND=$SYSFS/bus/nd/devices
DAX=$SYSFS/bus/dax
COUNT=0

memmap_devdax() {   # STEP NODE START: sets $dax, the devdax device of the memmap range at START
	step=$1 node=$2 start=$3
	modprobe -a nd_e820 nd_pmem dax_pmem device_dax 2>/dev/null
	hex=$(printf '0x%x' "$start")
	region=''
	wait_until 10 test -d "$ND/ndbus0" || fail "$step" "$ND" "no nvdimm bus: was memmap= on the kernel command line?"
	for r in "$ND"/region*; do
		[ -e "$r/resource" ] && [ "$(cat "$r/resource")" = "$hex" ] && region=$r
	done
	[ -n "$region" ] || fail "$step" "$ND" "no pmem region starts at $hex (regions: $(cat "$ND"/region*/resource 2>/dev/null | tr '\n' ' '))"
	ns=${region##*/region}
	wr "$step" "$region/align" 4096
	out=$(ndctl create-namespace -f -e "namespace$ns.0" -m devdax -a 4K 2>&1) \
		|| fail "$step" "namespace$ns.0" "ndctl create-namespace: $(echo "$out" | tail -n 1)"
	dax=$(echo "$out" | sed -n 's/.*"chardev":"\(dax[0-9.]*\)".*/\1/p' | head -n 1)
	[ -n "$dax" ] || fail "$step" "namespace$ns.0" "ndctl made no dax device: $out"
	target=$(cat "$DAX/devices/$dax/target_node" 2>/dev/null || echo '?')
	[ "$target" = "$node" ] || fail "$step" "$DAX/devices/$dax/target_node" "the range belongs to node $target, not $node"
	if [ -e "$DAX/devices/$dax/driver" ]; then
		wr "$step" "$DAX/devices/$dax/driver/unbind" "$dax"
	fi
}

memmap_kmem() {   # NODE START SIZE ZONE
	node=$1
	online=online
	[ "${4:-movable}" = movable ] && online=online_movable
	modprobe kmem 2>/dev/null
	memmap_devdax memmap-kmem "$node" "$2"
	wr memmap-kmem "$DAX/drivers/kmem/new_id" "$dax"
	[ -e "$DAX/drivers/kmem/$dax" ] || wr memmap-kmem "$DAX/drivers/kmem/bind" "$dax"
	for b in $(blocks_in "$node" offline); do
		wr memmap-kmem "$b/state" "$online"
	done
	bytes=$(node_bytes "$node")
	[ "$bytes" -gt 0 ] || fail memmap-kmem "$DAX/drivers/kmem" "kmem onlined no memory on node $node"
	echo "provisioned node=$node via=memmap-kmem status=ok bytes=$bytes dax=$dax"
}

private_module() {   # NODE START SIZE OPS CRAM KO
	node=$1 ops=$4 cram=$5 ko=$6
	drv=$DAX/drivers/numa_harness_private
	if [ ! -r "$ko" ]; then
		echo "provisioned node=$node via=private-module status=skipped reason=no module file $ko (numa_harness_private.ko is built against the kernel's build tree: boot with --kernel-tree)"
		return
	fi
	memmap_devdax private-module "$node" "$2"
	if [ ! -d "$drv" ]; then
		if ! out=$(insmod "$ko" 2>&1); then
			echo "provisioned node=$node via=private-module status=skipped reason=insmod numa_harness_private failed (the kernel lacks the private-node series): ${out##*: }"
			return
		fi
	fi
	wr private-module /sys/module/numa_harness_private/parameters/ops "$ops"
	wr private-module /sys/module/numa_harness_private/parameters/cram "$cram"
	wr private-module "$drv/new_id" "$dax"
	[ -e "$drv/$dax" ] || fail private-module "$drv" "the module did not bind $dax (its probe failed: see dmesg)"
	bytes=$(node_bytes "$node")
	[ "$bytes" -gt 0 ] || fail private-module "$drv" "the module onlined no memory on node $node"
	echo "provisioned node=$node via=private-module status=ok bytes=$bytes dax=$dax"
}

dax_test() {   # NODE START SIZE FEATURES
	if ! out=$(modprobe dax_test "range_start=$2" "range_size=$3" "target_node=$1" "features=$4" 2>&1); then
		echo "provisioned node=$1 via=dax_test status=skipped reason=modprobe dax_test failed (the kernel lacks the private-node series' dax_test module): ${out##*: }"
		return
	fi
	echo "provisioned node=$1 via=dax_test status=ok bytes=$(node_bytes "$1") dax=-"
}

has_memory() {   # NODE: some of its memory is online
	[ "$(node_bytes "$1")" -gt 0 ]
}

cxl_driver() {   # NODE DRIVER PCIKEY
	node=$1 driver=$2 key=$3
	modprobe "$driver" 2>/dev/null
	if [ ! -d "$SYSFS/bus/pci/drivers/$driver" ] && [ ! -d "$SYSFS/bus/cxl/drivers/$driver" ]; then
		echo "provisioned node=$node via=$driver status=skipped reason=no $driver driver (the kernel lacks the private-node series' CXL drivers)"
		return
	fi
	dev=''
	for d in "$SYSFS"/bus/pci/devices/*; do
		[ "$(cat "$d/vendor" 2>/dev/null):$(cat "$d/device" 2>/dev/null)" = "0x8086:0x0d93" ] || continue
		path=$(cd "$d" && pwd -P)
		bus=$(echo "$path" | sed -n 's|.*/pci0000:\([0-9a-f]*\)/.*|\1|p')
		hops=$(echo "$path" | sed 's|.*/pci0000:[0-9a-f]*/||' | tr '/' '\n' | sed -n 's/^[0-9a-f]*:[0-9a-f]*:\([0-9a-f.]*\)$/\1/p' | tr '\n' '/')
		[ "$bus/${hops%/}" = "$key" ] && dev=$d
	done
	[ -n "$dev" ] || fail "$driver" "$SYSFS/bus/pci/devices" "no CXL type-3 device at $key"
	wr "$driver" "$dev/driver_override" "$driver"
	[ -e "$dev/driver" ] && wr "$driver" "$dev/driver/unbind" "${dev##*/}"
	wr "$driver" "$SYSFS/bus/pci/drivers_probe" "${dev##*/}"
	# the driver adds the memory asynchronously: up to 30 s
	wait_until 30 has_memory "$node" || true
	echo "provisioned node=$node via=$driver status=ok bytes=$(node_bytes "$node") dax=-"
}

if [ -z "$PLAN" ] || [ ! -r "$PLAN" ]; then
	echo "error step=plan file=${PLAN:--} msg=usage: provision PLAN (a readable plan file)"
	exit 2
fi

while read -r step a b c d e f; do
	case "$step" in
		''|'#'*) continue ;;
		memmap-kmem) memmap_kmem "$a" "$b" "$c" "$d" ;;
		private-module) private_module "$a" "$b" "$c" "$d" "$e" "$f" ;;
		dax_test) dax_test "$a" "$b" "$c" "$d" ;;
		cxl-driver) cxl_driver "$a" "$b" "$c" ;;
		*) echo "error step=plan file=$PLAN msg=unknown step '$step'"; exit 2 ;;
	esac
	COUNT=$((COUNT + 1))
done < "$PLAN"
echo "done provisioned=$COUNT"
