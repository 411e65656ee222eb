#!/bin/sh
# numa-harness guest node-memory operations: swap for reclaim, driver rebinding, offlining.
# POSIX sh; runs under busybox ash (the guest's shell). The contract checks run it.
#
# Usage:
#   node-memory swap-on MIB                  a zram swap device of MIB (compressed, in RAM), so
#                                            reclaim and MADV_PAGEOUT can move anonymous pages
#   node-memory swap-off                     swapoff and reset it
#   node-memory rebind NODE CYCLES SECONDS [HOW]
#                                            offline NODE's memory, unbind the driver of the dax
#                                            device whose memory it is (kmem removes only offline
#                                            memory), bind it again, online what came back
#                                            (HOW: online, the default, or online_movable);
#                                            CYCLES times, every write under a SECONDS time limit
#   node-memory offline NODE SECONDS         offline every memory block of NODE, every write
#                                            under a SECONDS time limit (SIGTERM interrupts it)
#   node-memory online NODE [HOW]            online NODE's offline memory blocks (HOW as above)
#   node-memory movable NODE                 offline every block of NODE that can be and online it
#                                            movable (ZONE_MOVABLE); the others stay as they are
#
# Output, one line per step, REASON/ERROR last (they have spaces):
#   swap status=ok bytes=N | swap status=skipped reason=REASON
#   device node=NODE dax=DAX driver=DRIVER bytes=N | device node=NODE status=skipped reason=REASON
#   cycle n=N offline=RESULT unbind=RESULT unbound_bytes=N bind=RESULT bytes=N
#   block node=NODE name=memoryN result=RESULT seconds=S
#   done node=NODE bytes=N
#   movable node=NODE ok=N bad=M             (blocks onlined movable, blocks that would not go offline)
# RESULT is ok, timeout, or error:TEXT (the write's error, spaces as _). Exit 1 on a bad
# step (a file that is not there; exit 2 for usage), not on a failed write: that is the finding.

set -u

# fail, blocks_in, node_bytes (and SYSFS from HARNESS_SYSFS)
LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$LIB"
DAX=$SYSFS/bus/dax
ZRAM=$SYSFS/block/zram0

now_ms() {   # monotonic enough: /proc/uptime in milliseconds
	awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime
}

limited_write() {   # limited_write SECONDS FILE VALUE -> prints ok | timeout | error:TEXT
	# shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
	if err=$(timeout "$1" sh -c 'echo "$1" > "$2"' _ "$3" "$2" 2>&1); then
		echo ok
		return
	fi
	rc=$?
	if [ "$rc" -eq 143 ] || [ "$rc" -eq 124 ]; then
		echo timeout
	else
		echo "error:$(echo "${err##*: }" | tr ' ' _)"
	fi
}

online_node() {   # NODE HOW: online the offline blocks of NODE (new blocks appear under the node)
	for blk in $(blocks_in "$1" offline); do
		echo "$2" > "$blk/state" 2>/dev/null
	done
	return 0
}

offline_node() {   # NODE SECONDS: offline NODE's online blocks; "ok", or the first failed block's result
	res=ok
	for blk in $(blocks_in "$1" online); do
		r=$(limited_write "$2" "$blk/state" offline)
		[ "$r" = ok ] || { res=$r; break; }
	done
	echo "$res"
}

swap_on() {   # MIB
	if ! modprobe zram 2>/dev/null && [ ! -d "$SYSFS/module/zram" ]; then
		echo "swap status=skipped reason=no zram module in this kernel"
		return
	fi
	[ -e "$ZRAM/disksize" ] || fail swap-on "$ZRAM" "no zram device after modprobe zram"
	grep -q '^/dev/zram0 ' /proc/swaps && swapoff /dev/zram0
	echo 1 > "$ZRAM/reset" 2>/dev/null
	echo "$(($1 * 1048576))" > "$ZRAM/disksize" || fail swap-on "$ZRAM/disksize" "cannot size the zram device"
	mkswap /dev/zram0 > /dev/null 2>&1 || fail swap-on /dev/zram0 "mkswap failed"
	swapon /dev/zram0 || fail swap-on /dev/zram0 "swapon failed"
	echo "swap status=ok bytes=$(cat "$ZRAM/disksize")"
}

swap_off() {
	if grep -q '^/dev/zram0 ' /proc/swaps; then
		swapoff /dev/zram0 || fail swap-off /dev/zram0 "swapoff failed"
	fi
	[ -e "$ZRAM/reset" ] && echo 1 > "$ZRAM/reset"
	echo "swap status=off"
}

node_dax() {   # the dax device whose memory is node $1, bound to a driver: "DAX DRIVER", or nothing
	for d in "$DAX"/devices/dax*; do
		[ -e "$d/target_node" ] || continue
		[ "$(cat "$d/target_node")" = "$1" ] || continue
		[ -e "$d/driver" ] || continue
		drv=$(cd "$d/driver" && pwd -P)
		echo "${d##*/} ${drv##*/}"
		return
	done
}

rebind() {   # NODE CYCLES SECONDS HOW
	node=$1 cycles=$2 secs=$3 how=$4
	found=$(node_dax "$node")
	if [ -z "$found" ]; then
		echo "device node=$node status=skipped reason=no dax device with target_node $node is bound to a driver"
		return
	fi
	dax=${found% *} drv=${found#* }
	echo "device node=$node dax=$dax driver=$drv bytes=$(node_bytes "$node")"
	i=1
	while [ "$i" -le "$cycles" ]; do
		o=$(offline_node "$node" "$secs")
		u=$(limited_write "$secs" "$DAX/drivers/$drv/unbind" "$dax")
		ub=$(node_bytes "$node")
		bd=$(limited_write "$secs" "$DAX/drivers/$drv/bind" "$dax")
		online_node "$node" "$how"
		echo "cycle n=$i offline=$o unbind=$u unbound_bytes=$ub bind=$bd bytes=$(node_bytes "$node")"
		i=$((i + 1))
	done
	echo "done node=$node bytes=$(node_bytes "$node")"
}

offline() {   # NODE SECONDS
	for blk in $(blocks_in "$1" online); do
		t0=$(now_ms)
		r=$(limited_write "$2" "$blk/state" offline)
		t1=$(now_ms)
		echo "block node=$1 name=${blk##*/} result=$r seconds=$(( (t1 - t0) / 1000 )).$(( (t1 - t0) % 1000 / 100 ))"
	done
	echo "done node=$1 bytes=$(node_bytes "$1")"
}

movable() {   # NODE
	ok=0 bad=0
	for blk in "$SYSFS/devices/system/node/node$1"/memory[0-9]*; do
		[ -e "$blk/state" ] || continue
		if echo offline 2>/dev/null > "$blk/state"; then
			echo online_movable 2>/dev/null > "$blk/state" && ok=$((ok + 1))
		else
			bad=$((bad + 1))
		fi
	done
	echo "movable node=$1 ok=$ok bad=$bad"
}

case "${1:-}" in
	swap-on) [ $# -eq 2 ] || bad_usage "node-memory swap-on MIB"; swap_on "$2" ;;
	swap-off) swap_off ;;
	rebind) [ $# -ge 4 ] || bad_usage "node-memory rebind NODE CYCLES SECONDS [HOW]"; rebind "$2" "$3" "$4" "${5:-online}" ;;
	offline) [ $# -eq 3 ] || bad_usage "node-memory offline NODE SECONDS"; offline "$2" "$3" ;;
	movable) [ $# -eq 2 ] || bad_usage "node-memory movable NODE"; movable "$2" ;;
	online) [ $# -ge 2 ] || bad_usage "node-memory online NODE [HOW]"; online_node "$2" "${3:-online}"; echo "done node=$2 bytes=$(node_bytes "$2")" ;;
	*) bad_usage "node-memory swap-on MIB | swap-off | rebind NODE CYCLES SECONDS [HOW] | offline NODE SECONDS | online NODE [HOW] | movable NODE" ;;
esac
