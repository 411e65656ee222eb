#!/bin/sh
# numa-harness guest shell library: sourced by the other guest shell files, never run.
# POSIX sh (busybox ash, the guest's shell, and dash).
#
# The helpers every guest program shares, each written once, with one argument order:
# what the program was doing (STEP) first, then the FILE, then the value or message; a
# command to poll comes last.
#
#   fail STEP FILE MESSAGE      "error step=STEP file=FILE msg=MESSAGE", the kernel log's last
#                               lines as "dmesg ..." lines, exit 1
#   bad_usage TEXT              "error step=usage file=PROGRAM msg=usage: TEXT", exit 2
#   wr STEP FILE VALUE          write VALUE to FILE (a sysfs file); on failure, fail with the
#                               kernel's errno text
#   rd STEP FILE                VAL = FILE's contents; on failure, fail
#   wait_until SECONDS CMD...   run CMD every 0.1 s until it succeeds (0) or SECONDS pass (1)
#   wait_path STEP PATH SECONDS wait until PATH exists, else fail
#   blocks_in NODE STATE        the memory block directories of NODE in STATE, one a line
#   node_bytes NODE             NODE's online memory in bytes, from its memory blocks
#   kmsg_mark TEXT              "numa-harness: TEXT" into the kernel log (the host cuts dmesg
#                               after that line: harness/guest/dmesg.py)
#
# How a program sources it (the image drops the .sh suffix, the source tree keeps it):
#   LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
#   # shellcheck source-path=SCRIPTDIR source=lib.sh
#   . "$LIB"
#
# Settings (environment, or variables the sourcing program sets):
#   HARNESS_SYSFS   the sysfs root (default /sys); the unit tests point it at a fake tree
#   HARNESS_TRACE   a file every wr appends "FILE VALUE" to, in order (tests)
#   HARNESS_KMSG    the kernel log device kmsg_mark writes to (default /dev/kmsg; tests)
#   FAIL_DMESG      a grep -i pattern choosing the kernel log lines fail shows (default: all)
# A program that sets its own EXIT trap calls lib_cleanup from it.

SYSFS=${HARNESS_SYSFS:-/sys}
LIB_ERR=${TMPDIR:-/tmp}/numa-harness-err.$$

lib_cleanup() {
	rm -f "$LIB_ERR"
}
trap lib_cleanup EXIT

# lib_errtext: the last error the shell wrote to LIB_ERR, without its "PROGRAM: line N: "
# (busybox) or "PROGRAM: N: " (dash), "echo: ", "write error: " and "read error: " prefixes.
lib_errtext() {
	sed -e 's/^[^:]*: line [0-9][0-9]*: //' -e 's/^[^:]*: [0-9][0-9]*: //' -e 's/^[a-z]*: //' \
		-e 's/^write error: //' -e 's/^read error: //' "$LIB_ERR" 2>/dev/null | tail -n 1
}

# fail STEP FILE MESSAGE
fail() {
	echo "error step=$1 file=$2 msg=$3"
	dmesg 2>/dev/null | grep -i -e "${FAIL_DMESG:-}" | grep -iv 'command line' | tail -n 8 | sed 's/^/dmesg /' || true
	exit 1
}

# bad_usage TEXT
bad_usage() {
	echo "error step=usage file=$0 msg=usage: $1"
	exit 2
}

# wr STEP FILE VALUE (echo is a builtin: no fork per write)
wr() {
	if [ -n "${HARNESS_TRACE:-}" ]; then echo "$2 $3" >> "$HARNESS_TRACE"; fi
	if ! echo "$3" 2>"$LIB_ERR" >"$2"; then
		fail "$1" "$2" "writing '$3': $(lib_errtext)"
	fi
}

# rd STEP FILE
# shellcheck disable=SC2034 # VAL is what the sourcing program reads
rd() {
	if ! VAL=$(cat "$2" 2>"$LIB_ERR"); then
		fail "$1" "$2" "reading: $(lib_errtext)"
	fi
}

# uptime_cs: UP = centiseconds since boot.
uptime_cs() {
	read -r UP _ < /proc/uptime
	UP=$((${UP%.*} * 100 + 1${UP#*.} - 100))
}

# wait_until SECONDS COMMAND [ARG...]: COMMAND is a predicate (prints nothing; may set
# variables for the caller). The one polling loop of the guest programs; callers turn a
# timeout into an error line.
wait_until() {
	wu_end=$1
	shift
	uptime_cs
	wu_end=$((UP + wu_end * 100))
	while ! "$@"; do
		uptime_cs
		[ "$UP" -lt "$wu_end" ] || return 1
		sleep 0.1
	done
}

# wait_path STEP PATH SECONDS
wait_path() {
	wait_until "$3" test -e "$2" || fail "$1" "$2" "did not appear within $3 s"
}

# blocks_in NODE STATE
blocks_in() {
	for bi_b in "$SYSFS/devices/system/node/node$1"/memory[0-9]*; do
		[ -e "$bi_b/state" ] && [ "$(cat "$bi_b/state")" = "$2" ] && echo "$bi_b"
	done
	return 0
}

# node_bytes NODE
node_bytes() {
	nb_bs=$(cat "$SYSFS/devices/system/memory/block_size_bytes")
	echo $(( $(blocks_in "$1" online | wc -l) * 0x$nb_bs ))
}

# kmsg_mark TEXT
kmsg_mark() {
	echo "numa-harness: $1" > "${HARNESS_KMSG:-/dev/kmsg}"
}
