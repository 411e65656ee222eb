#!/bin/sh
# numa-harness guest CXL poison: inject, clear and list poison on a CXL memdev through the
# kernel's own interfaces, and say what the kernel did with memory-failure handling.
# POSIX sh; runs under busybox ash (the guest's shell) and dash.
#
# Usage: cxl-poison inject memN DPA | clear memN DPA | list memN
#   inject   debugfs cxl/memN/inject_poison (the kernel sends Inject Poison: 64 bytes at DPA)
#   clear    debugfs cxl/memN/clear_poison (Clear Poison, 64 bytes at DPA)
#   list     writes 1 to memN/trigger_poison_list; the kernel reads the device's poison list
#            and emits one cxl_poison trace event per record (tracefs events/cxl/cxl_poison)
# DPA is a number the shell reads (0x1000 or 4096), a multiple of 64.
#
# Output, one line per result:
#   injected memdev=memN dpa=0x...     | cleared memdev=memN dpa=0x...
#   poison memdev=memN dpa=0x... length=0x... source=SOURCE hpa=0x...|- region=NAME|- trace_type=List
#   meminfo hardware_corrupted_kb=N    (the kernel's count of memory it took offline as poisoned)
#   done records=N                     (list; 0 with no poison)
# A missing interface is "error step=STEP file=FILE msg=..." naming the file and what provides
# it, exit 1; bad usage exit 2.
#
# HARNESS_SYSFS (default /sys) is the sysfs root; the debugfs and tracefs roots are
# HARNESS_DEBUGFS (default $SYSFS/kernel/debug) and HARNESS_TRACEFS (default $SYSFS/kernel/tracing).
# HARNESS_MEMINFO (default /proc/meminfo) is read for HardwareCorrupted. The unit tests point
# them at fake trees.

set -eu

FAIL_DMESG=cxl
LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$LIB"

DEBUGFS=${HARNESS_DEBUGFS:-$SYSFS/kernel/debug}
TRACEFS=${HARNESS_TRACEFS:-$SYSFS/kernel/tracing}
MEMINFO=${HARNESS_MEMINFO:-/proc/meminfo}
CXL=$SYSFS/bus/cxl/devices

[ $# -ge 2 ] || bad_usage "cxl-poison inject|clear memN DPA | list memN"
OP=$1 MD=$2
case $MD in
	mem[0-9]*) ;;
	*) bad_usage "'$MD' is not a memdev name (memN)" ;;
esac
[ -e "$CXL/$MD" ] || fail "$OP" "$CXL/$MD" "no such CXL memdev"

# mounted ROOT TYPE: mount ROOT as TYPE unless something is mounted there already.
mounted() {
	[ -z "${HARNESS_SYSFS:-}" ] || return 0
	if ! grep -q " $1 " /proc/mounts 2>/dev/null; then
		mount -t "$2" "$2" "$1" 2>/dev/null || true
	fi
}

hardware_corrupted() {
	hc=$(sed -n 's/^HardwareCorrupted: *\([0-9]*\) kB$/\1/p' "$MEMINFO" 2>/dev/null || true)
	echo "meminfo hardware_corrupted_kb=${hc:--}"
}

# debugfs_op inject|clear: write DPA to debugfs cxl/memN/{inject,clear}_poison.
debugfs_op() {
	[ $# -eq 1 ] || bad_usage "cxl-poison $OP memN DPA"
	case $1 in
		''|*[!0-9a-fA-Fx]*) bad_usage "DPA '$1' is not a number" ;;
	esac
	mounted "$DEBUGFS" debugfs
	do_f=$DEBUGFS/cxl/$MD/${OP}_poison
	[ -e "$do_f" ] || fail "$OP" "$do_f" "no debugfs ${OP}_poison for $MD: the kernel needs CONFIG_DEBUG_FS and a device whose Command Effects Log allows poison injection (CXL memdev debugfs, drivers/cxl/mem.c)"
	wr "$OP" "$do_f" "$1"
	printf '%sed memdev=%s dpa=0x%x\n' "${OP%e}" "$MD" "$(($1))"
	hardware_corrupted
}

# list_poison: trigger the poison list and print the records the kernel traced for this memdev.
list_poison() {
	mounted "$TRACEFS" tracefs
	lp_ev=$TRACEFS/events/cxl/cxl_poison
	[ -d "$lp_ev" ] || fail list "$lp_ev" "no cxl_poison trace event: the kernel needs CONFIG_TRACING (tracefs) with the cxl_core events"
	lp_trig=$CXL/$MD/trigger_poison_list
	[ -e "$lp_trig" ] || fail list "$lp_trig" "no trigger_poison_list for $MD: the device does not support Get Poison List, or the kernel predates it (6.4)"
	lp_mark="numa-harness-poison-$$-$(date +%s)"
	wr list "$lp_ev/enable" 1
	echo "$lp_mark" > "$TRACEFS/trace_marker" 2>/dev/null || true
	wr list "$lp_trig" 1
	# The records are traced while the write above runs; the buffer holds them after the mark.
	lp_n=0
	lp_out=$(sed -n "/$lp_mark/,\$p" "$TRACEFS/trace" | grep " cxl_poison: memdev=$MD " | grep 'trace_type=List' || true)
	if [ -n "$lp_out" ]; then
		while IFS= read -r lp_l; do
			echo "$lp_l" | sed -e 's/.* cxl_poison: /poison /' \
				-e 's/ host=[^ ]*//' -e 's/ serial=[^ ]*//' -e 's/ region_uuid=[^ ]*//' \
				-e 's/ flags=[^ ]*//' -e 's/ overflow_time=[^ ]*//' -e 's/dpa_length=/length=/' \
				-e 's/region= /region=- /' -e 's/hpa=0xffffffffffffffff/hpa=-/'
			lp_n=$((lp_n + 1))
		done <<LP_EOF
$lp_out
LP_EOF
	fi
	hardware_corrupted
	echo "done records=$lp_n"
}

shift 2
case $OP in
	inject|clear) debugfs_op "$@" ;;
	list) [ $# -eq 0 ] || bad_usage "cxl-poison list memN"; list_poison ;;
	*) bad_usage "cxl-poison inject|clear memN DPA | list memN" ;;
esac
