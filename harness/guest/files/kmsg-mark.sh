#!/bin/sh
# numa-harness kmsg-mark: write one mark line into the guest kernel's log.
# POSIX sh; runs under busybox ash (the guest's shell).
#
# Usage: kmsg-mark TEXT
#
# Writes "numa-harness: TEXT" to /dev/kmsg (lib.sh's kmsg_mark; guest-state --mark writes the
# same line). The host reads dmesg later and keeps what follows the last such line
# (harness/guest/dmesg.py). Prints nothing; exit 2 without TEXT.

set -eu
LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$LIB"

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: kmsg-mark TEXT" >&2
	exit 2
fi
kmsg_mark "$1"
