#!/bin/sh
# numa-harness cgroup: cgroup v2 groups for guest programs (memory reclaim, cpuset confinement).
# POSIX sh; runs under busybox ash (the guest's shell) and dash.
#
# Usage (PATH is a cgroup directory under the cgroup2 mount, /sys/fs/cgroup):
#   cgroup make PATH CONTROLLER...  enable the CONTROLLERs (memory, cpuset, ...) in the parent's
#                                   cgroup.subtree_control, create PATH
#   cgroup run PATH COMMAND [ARG...]
#                                   join PATH, then exec COMMAND (its pid stays this program's)
#   cgroup reclaim PATH AMOUNT      write AMOUNT (e.g. 8M) to PATH/memory.reclaim
#   cgroup confine PATH MEMS        make PATH a cpuset with cpuset.mems=MEMS and move every task
#                                   of its parent (the root cgroup) into it (kernel threads cannot)
#   cgroup release PATH             move PATH's tasks back to its parent, remove PATH
#   cgroup remove PATH              kill PATH's tasks (SIGKILL), remove PATH
#
# Output, one line, REASON last (it has spaces):
#   cgroup path=PATH                              (make)
#   reclaim status=ok | reclaim status=error reason=REASON   (the kernel reclaimed less than asked: EAGAIN)
#   confine path=PATH moved=N left=M
#   release path=PATH moved=N
#   remove path=PATH status=ok | remove path=PATH status=busy
# A failed step of its own: "error step=STEP file=FILE msg=TEXT" (lib.sh's fail), exit 1.

set -u
# fail, wr, wait_until, bad_usage
LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$LIB"

make_group() {   # PATH CONTROLLER...
	mg_path=$1
	shift
	mg_parent=${mg_path%/*}
	for mg_c in "$@"; do
		grep -qw "$mg_c" "$mg_parent/cgroup.subtree_control" ||
			wr "enable $mg_c" "$mg_parent/cgroup.subtree_control" "+$mg_c"
	done
	mkdir -p "$mg_path" || fail make "$mg_path" "cannot create the cgroup"
	echo "cgroup path=$mg_path"
}

move_tasks() {   # FROM TO: move every task that can move; prints how many moved
	mt_n=0
	# a snapshot of the list: the file changes as tasks move
	# shellcheck disable=SC2013 # one pid a line
	for mt_p in $(cat "$1/cgroup.procs"); do
		echo "$mt_p" > "$2/cgroup.procs" 2>/dev/null && mt_n=$((mt_n + 1))
	done
	echo "$mt_n"
}

empty() {   # PATH
	[ -z "$(cat "$1/cgroup.procs" 2>/dev/null)" ]
}

case "${1:-}" in
	make)
		[ $# -ge 2 ] || bad_usage "cgroup make PATH CONTROLLER..."
		shift
		make_group "$@"
		;;
	run)
		[ $# -ge 3 ] || bad_usage "cgroup run PATH COMMAND [ARG...]"
		wr join "$2/cgroup.procs" $$
		shift 2
		exec "$@"
		;;
	reclaim)
		[ $# -eq 3 ] || bad_usage "cgroup reclaim PATH AMOUNT"
		if err=$( { echo "$3" > "$2/memory.reclaim"; } 2>&1 ); then
			echo "reclaim status=ok"
		else
			echo "reclaim status=error reason=${err##*: }"
		fi
		;;
	confine)
		[ $# -eq 3 ] || bad_usage "cgroup confine PATH MEMS"
		make_group "$2" cpuset > /dev/null
		wr "set cpuset.mems" "$2/cpuset.mems" "$3"
		moved=$(move_tasks "${2%/*}" "$2")
		echo "confine path=$2 moved=$moved left=$(wc -l < "${2%/*}/cgroup.procs")"
		;;
	release)
		[ $# -eq 2 ] || bad_usage "cgroup release PATH"
		moved=$(move_tasks "$2" "${2%/*}")
		rmdir "$2" 2>/dev/null
		echo "release path=$2 moved=$moved"
		;;
	remove)
		[ $# -eq 2 ] || bad_usage "cgroup remove PATH"
		# shellcheck disable=SC2013 # one pid a line
		for p in $(cat "$2/cgroup.procs" 2>/dev/null); do
			kill -9 "$p" 2>/dev/null
		done
		wait_until 10 empty "$2"
		if rmdir "$2" 2>/dev/null || [ ! -d "$2" ]; then
			echo "remove path=$2 status=ok"
		else
			echo "remove path=$2 status=busy"
		fi
		;;
	*)
		bad_usage "cgroup make PATH CONTROLLER... | run PATH COMMAND [ARG...] | reclaim PATH AMOUNT | confine PATH MEMS | release PATH | remove PATH"
		;;
esac
