#!/bin/sh
# numa-harness guest CXL hot-plug: take a region apart before its device is removed, and wait
# for the guest to see a memdev go.
# POSIX sh; runs under busybox ash (the guest's shell) and dash.
#
# Usage: cxl-hotplug regions memN | teardown REGION | gone|ready memN SECONDS
#   regions   the regions memN's endpoint decoders are targets of ("region NAME" lines)
#   teardown  for a region onlined as memory: offline each memory block of its dax device (the
#             kernel migrates the pages on it to other nodes first, or refuses with EBUSY), unbind
#             the dax device from kmem (its memory is removed; the node leaves has_memory), then
#             delete the region (root decoder's delete_region) and free each endpoint decoder's
#             DPA (dpa_size 0), so the devices can be used for a region again
#   gone      wait up to SECONDS until memN is no longer in /sys/bus/cxl/devices
#   ready     wait up to SECONDS until memN is on the bus with its endpoint port (cxl_mem bound)
#
# Output:
#   block memoryN offline
#   teardown region=REGION dax=daxN.M|- node=NID|- blocks=N decoders=decX.Y,..
#   gone memdev=memN
#   ready memdev=memN endpoint=endpointN
# Errors: "error step=STEP file=FILE msg=..." (lib.sh fail), exit 1; bad usage exit 2.
#
# HARNESS_SYSFS (default /sys) is the sysfs root (the unit tests use a fake tree).

set -eu

FAIL_DMESG='cxl\|memory\|offline'
LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$LIB"

CXL=$SYSFS/bus/cxl/devices
MEMSYS=$SYSFS/devices/system/memory
DAXBUS=$SYSFS/bus/dax

# gone_from_bus memN
gone_from_bus() {
	[ ! -e "$CXL/$1" ]
}

# regions_of memN: print "region NAME" for each region with a target decoder on memN's endpoint.
regions_of() {
	ro_md=$(readlink -f "$CXL/$1")
	for ro_r in "$CXL"/region[0-9]*; do
		[ -e "$ro_r" ] || continue
		ro_i=0
		while [ -e "$ro_r/target$ro_i" ]; do
			ro_t=$(cat "$ro_r/target$ro_i" 2>/dev/null || true)
			ro_i=$((ro_i + 1))
			[ -n "$ro_t" ] || continue
			ro_e=endpoint${ro_t#decoder}
			ro_e=$CXL/${ro_e%.*}
			if [ -e "$ro_e/uport" ] && [ "$(readlink -f "$ro_e/uport")" = "$ro_md" ]; then
				echo "region ${ro_r##*/}"
				break
			fi
		done
	done
}

# has_endpoint memN (FOUND = its endpoint port)
has_endpoint() {
	[ -e "$CXL/$1" ] || return 1
	he_md=$(readlink -f "$CXL/$1")
	for he_e in "$CXL"/endpoint[0-9]*; do
		if [ -e "$he_e/uport" ] && [ "$(readlink -f "$he_e/uport")" = "$he_md" ]; then
			FOUND=${he_e##*/}
			return 0
		fi
	done
	return 1
}

teardown() {
	td_r=$CXL/$1
	[ -e "$td_r" ] || fail teardown "$td_r" "no such region"
	td_dax=-
	td_node=-
	td_n=0
	for td_d in "$td_r"/dax_region*/dax[0-9]*.[0-9]*; do
		[ -e "$td_d" ] || continue
		td_dax=${td_d##*/}
	done
	if [ "$td_dax" != - ] && [ -e "$DAXBUS/drivers/kmem/$td_dax" ]; then
		rd "read $td_dax" "$DAXBUS/devices/$td_dax/resource"
		td_start=$((VAL))
		rd "read $td_dax" "$DAXBUS/devices/$td_dax/size"
		td_size=$((VAL))
		rd "read block size" "$MEMSYS/block_size_bytes"
		td_bs=$((0x$VAL))
		td_b=$((td_start / td_bs))
		td_last=$(((td_start + td_size) / td_bs))
		while [ "$td_b" -lt "$td_last" ]; do
			td_blk=$MEMSYS/memory$td_b
			for td_l in "$td_blk"/node[0-9]*; do
				if [ -e "$td_l" ]; then td_node=${td_l##*/node}; fi
			done
			rd "offline memory$td_b" "$td_blk/state"
			if [ "$VAL" != offline ]; then
				wr "offline memory$td_b" "$td_blk/state" offline
			fi
			echo "block memory$td_b offline"
			td_n=$((td_n + 1))
			td_b=$((td_b + 1))
		done
		wr "unbind $td_dax from kmem" "$DAXBUS/drivers/kmem/unbind" "$td_dax"
	fi
	td_decs=
	td_i=0
	while [ -e "$td_r/target$td_i" ]; do
		td_t=$(cat "$td_r/target$td_i" 2>/dev/null || true)
		if [ -n "$td_t" ]; then td_decs="$td_decs${td_decs:+,}$td_t"; fi
		td_i=$((td_i + 1))
	done
	td_root=$(cd -P "$td_r" && cd .. && pwd -P)
	wr "delete region $1" "$td_root/delete_region" "$1"
	wait_until 10 gone_from_bus "$1" || fail "delete region $1" "$td_r" "still there 10 s after delete_region"
	td_rest=$td_decs,
	while [ "$td_rest" != , ] && [ -n "$td_rest" ]; do
		td_dec=${td_rest%%,*}
		td_rest=${td_rest#*,}
		rd "free DPA of $td_dec" "$CXL/$td_dec/dpa_size"
		if [ "$((VAL))" -ne 0 ]; then
			wr "free DPA of $td_dec" "$CXL/$td_dec/dpa_size" 0
		fi
	done
	echo "teardown region=$1 dax=$td_dax node=$td_node blocks=$td_n decoders=${td_decs:--}"
}

[ $# -ge 2 ] || bad_usage "cxl-hotplug regions memN | teardown REGION | gone|ready memN SECONDS"
case $1 in
	teardown)
		[ $# -eq 2 ] || bad_usage "cxl-hotplug teardown REGION"
		teardown "$2"
		;;
	regions)
		[ $# -eq 2 ] || bad_usage "cxl-hotplug regions memN"
		[ -e "$CXL/$2" ] || fail regions "$CXL/$2" "no such CXL memdev"
		regions_of "$2"
		;;
	ready)
		[ $# -eq 3 ] || bad_usage "cxl-hotplug ready memN SECONDS"
		wait_until "$3" has_endpoint "$2" || fail ready "$CXL/$2" "no endpoint port for $2 after $3 s (cxl_mem not bound?)"
		echo "ready memdev=$2 endpoint=$FOUND"
		;;
	gone)
		[ $# -eq 3 ] || bad_usage "cxl-hotplug gone memN SECONDS"
		wait_until "$3" gone_from_bus "$2" || fail gone "$CXL/$2" "still there after $3 s"
		echo "gone memdev=$2"
		;;
	*) bad_usage "cxl-hotplug regions memN | teardown REGION | gone|ready memN SECONDS" ;;
esac
