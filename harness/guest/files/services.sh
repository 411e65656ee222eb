#!/bin/sh
# numa-harness services: the kernel services the contract checks turn on a node's pages
# (hugetlb reservations, the multi-gen LRU, KSM, compaction), through their sysfs files.
# POSIX sh; runs under busybox ash (the guest's shell) and dash.
#
# Usage:
#   services probe NODE              which of them this kernel has, and the multi-gen LRU setting
#   services hugetlb NODE COUNT      ask NODE for COUNT 2 MiB huge pages, read how many it got,
#                                    give them back
#   services lru-gen VALUE           write VALUE (n: off; or a value probe read) to lru_gen/enabled
#   services ksm PID WANT SECONDS    run KSM (4096 pages a scan, no sleep) until process PID has
#                                    WANT pages merged or SECONDS pass; then unmerge all, stop it
#   services compact NODE            compact NODE's memory (the write returns when done)
#
# Output, one line each, REASON last (it has spaces):
#   probe node=NODE ksm=yes|no compact=yes|no lru_gen=VALUE|absent
#   hugetlb node=NODE asked=COUNT got=N [pool=absent]
#   lru_gen now=VALUE
#   ksm pid=PID merged=N seconds=S
#   compact node=NODE status=ok | compact node=NODE status=error reason=REASON
# A missing file or a refused write of its own: "error step=STEP file=FILE msg=TEXT"
# (lib.sh's fail), exit 1. HARNESS_SYSFS (default /sys) is the sysfs root (tests: a fake tree).

set -u
# fail, wr, rd, wait_until, bad_usage (and SYSFS)
LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$LIB"

NODES=$SYSFS/devices/system/node
KSM=$SYSFS/kernel/mm/ksm
LRU_GEN=$SYSFS/kernel/mm/lru_gen/enabled
HUGE=hugepages/hugepages-2048kB/nr_hugepages

yes_no() {   # TEST-ARGS...
	if test "$@"; then echo yes; else echo no; fi
}

probe() {   # NODE
	lru=absent
	[ -r "$LRU_GEN" ] && lru=$(cat "$LRU_GEN")
	echo "probe node=$1 ksm=$(yes_no -e "$KSM/run") compact=$(yes_no -e "$NODES/node$1/compact") lru_gen=$lru"
}

hugetlb() {   # NODE COUNT
	f=$NODES/node$1/$HUGE
	if [ ! -e "$f" ]; then   # no pool (a kernel without hugetlb): nothing was reserved
		echo "hugetlb node=$1 asked=$2 got=0 pool=absent"
		return
	fi
	echo "$2" > "$f" 2>/dev/null
	got=$(cat "$f")
	echo 0 > "$f" 2>/dev/null
	echo "hugetlb node=$1 asked=$2 got=$got"
}

merged_at_least() {   # PID WANT
	ma_v=0
	read -r ma_v < "/proc/$1/ksm_merging_pages" 2>/dev/null
	[ "${ma_v:-0}" -ge "$2" ]
}

ksm() {   # PID WANT SECONDS
	uptime_cs
	k_t0=$UP
	wr "start ksm" "$KSM/pages_to_scan" 4096
	wr "start ksm" "$KSM/sleep_millisecs" 0
	wr "start ksm" "$KSM/run" 1
	wait_until "$3" merged_at_least "$1" "$2"
	k_got=0
	read -r k_got < "/proc/$1/ksm_merging_pages" 2>/dev/null
	echo 2 > "$KSM/run" 2>/dev/null   # unmerge everything, stop
	uptime_cs
	echo "ksm pid=$1 merged=${k_got:-0} seconds=$(( (UP - k_t0) / 100 ))"
}

compact() {   # NODE
	f=$NODES/node$1/compact
	[ -e "$f" ] || fail compact "$f" "no compaction file for node $1 (CONFIG_COMPACTION)"
	if err=$( { echo 1 > "$f"; } 2>&1 ); then
		echo "compact node=$1 status=ok"
	else
		echo "compact node=$1 status=error reason=${err##*: }"
	fi
}

case "${1:-}" in
	probe) [ $# -eq 2 ] || bad_usage "services probe NODE"; probe "$2" ;;
	hugetlb) [ $# -eq 3 ] || bad_usage "services hugetlb NODE COUNT"; hugetlb "$2" "$3" ;;
	lru-gen) [ $# -eq 2 ] || bad_usage "services lru-gen VALUE"; wr "set lru_gen" "$LRU_GEN" "$2"; rd "set lru_gen" "$LRU_GEN"; echo "lru_gen now=$VAL" ;;
	ksm) [ $# -eq 4 ] || bad_usage "services ksm PID WANT SECONDS"; ksm "$2" "$3" "$4" ;;
	compact) [ $# -eq 2 ] || bad_usage "services compact NODE"; compact "$2" ;;
	*) bad_usage "services probe NODE | hugetlb NODE COUNT | lru-gen VALUE | ksm PID WANT SECONDS | compact NODE" ;;
esac
