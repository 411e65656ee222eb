#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# KTAP through kselftest's ktap_helpers.sh (copied from linux 6.12): one result per NUMA
# node the guest kernel reports, a SKIP for a node state the kernel does not have.
set -u
DIR=$(dirname "$0")
# shellcheck source=ktap_helpers.sh
. "$DIR/ktap_helpers.sh"

nodes=$(ls -d /sys/devices/system/node/node[0-9]*)
count=$(echo "$nodes" | wc -l)
ktap_print_header
ktap_set_plan $((count + 2))
for n in $nodes; do
    ktap_print_msg "$(basename "$n"): $(grep MemTotal "$n/meminfo")"
    ktap_test_result "$(basename "$n") has meminfo" test -s "$n/meminfo"
done
ktap_test_result "node0 is online" grep -qw 0 /sys/devices/system/node/online
if [ -e /sys/devices/system/node/has_public_memory ]; then
    ktap_test_pass "private-node masks"
else
    ktap_test_skip "private-node masks"
fi
ktap_finished
