#!/bin/sh
# numa-harness hold: run a guest program in the background, wait for its report; stop it.
# POSIX sh; runs under busybox ash (the guest's shell) and dash.
#
# Usage:
#   hold start PREFIX SECONDS COMMAND
#       Run COMMAND (one shell command line, exec'd: the pid is the program's own) in the
#       background, stdout to PREFIX.out, stderr to PREFIX.err, its exit status to PREFIX.rc
#       once it ends (128+N: killed by signal N). Wait up to SECONDS until it has printed a
#       report (a line starting with "{": the guest programs print theirs once their memory
#       is in place, then hold it) or has ended; past SECONDS it is killed. A PREFIX on a
#       filesystem with less than MIN_FREE_KB left fails at once ("no space left on device"):
#       the program's report could not be written there.
#   hold stop PID SECONDS
#       SIGTERM to PID (a holding program exits 0 on it), then wait up to SECONDS until it is gone.
#
# Output of start:
#   hold pid=PID state=reported|exited|timeout rc=STATUS|- [full=MOUNTPOINT]
#       (full=: the program did not report and PREFIX's filesystem is full now)
#   @@ out      then what it printed on stdout
#   @@ err      then the last 40 lines of its stderr
# Output of stop:
#   stopped pid=PID state=gone|alive

set -u
# wait_until, fail
LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$LIB"

# Less than this many kB free where the outputs go: no room for the four small files.
MIN_FREE_KB=64

full_now() {   # DIR: true if DIR's filesystem has less than MIN_FREE_KB left; sets kb and mnt
	f=$(df -P -k "$1" 2>/dev/null | awk 'NR == 2 { print $4, $6 }')
	kb=${f%% *} mnt=${f#* }
	[ -n "$kb" ] && [ "$kb" -lt "$MIN_FREE_KB" ]
}

reported_or_ended() {   # PREFIX
	grep -q '^{' "$1.out" 2>/dev/null || [ -e "$1.rc" ]
}

gone() {   # PID
	! kill -0 "$1" 2>/dev/null
}

start() {   # PREFIX SECONDS COMMAND
	p=$1
	mkdir -p "${p%/*}" || fail start "${p%/*}" "cannot create the directory"
	if full_now "${p%/*}"; then
		fail start "${p%/*}" "no space left on device: the guest's $mnt is full ($kb kB free)"
	fi
	rm -f "$p.out" "$p.err" "$p.rc" "$p.pid"
	: > "$p.out"
	(
		eval "exec $3" > "$p.out" 2> "$p.err" < /dev/null &
		echo $! > "$p.pid"
		wait $!
		echo $? > "$p.rc"
	) > /dev/null 2>&1 < /dev/null &
	wait_until 10 test -s "$p.pid" || fail start "$p.pid" "the background shell did not start within 10 s"
	pid=$(cat "$p.pid")
	timed_out=
	if ! wait_until "$2" reported_or_ended "$p"; then
		timed_out=1
		kill "$pid" 2>/dev/null
		wait_until 10 test -e "$p.rc" || kill -9 "$pid" 2>/dev/null
	fi
	if grep -q '^{' "$p.out"; then
		state=reported
	elif [ -n "$timed_out" ]; then
		state=timeout
	else
		state=exited
	fi
	full=
	if [ "$state" != reported ] && full_now "${p%/*}"; then full=" full=$mnt"; fi
	rc=$(cat "$p.rc" 2>/dev/null)
	echo "hold pid=$pid state=$state rc=${rc:--}$full"
	echo "@@ out"
	cat "$p.out"
	echo "@@ err"
	tail -n 40 "$p.err" 2>/dev/null
	return 0
}

stop() {   # PID SECONDS
	kill "$1" 2>/dev/null
	if wait_until "$2" gone "$1"; then
		echo "stopped pid=$1 state=gone"
	else
		echo "stopped pid=$1 state=alive"
	fi
}

case "${1:-}" in
	start) [ $# -eq 4 ] || bad_usage "hold start PREFIX SECONDS COMMAND"; start "$2" "$3" "$4" ;;
	stop) [ $# -eq 3 ] || bad_usage "hold stop PID SECONDS"; stop "$2" "$3" ;;
	*) bad_usage "hold start PREFIX SECONDS COMMAND | stop PID SECONDS" ;;
esac
