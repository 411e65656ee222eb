#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Nested KTAP: one subtest per NUMA node, each with a result per sysfs file checked.
set -u
files="meminfo numastat distance cpulist"
nodes=$(ls -d /sys/devices/system/node/node[0-9]*)
echo "KTAP version 1"
echo "1..$(echo "$nodes" | wc -l)"
i=0
for n in $nodes; do
    i=$((i + 1))
    name=$(basename "$n")
    echo "    KTAP version 1"
    echo "    # Subtest: $name"
    echo "    1..4"
    j=0
    fail=0
    for f in $files; do
        j=$((j + 1))
        if [ -r "$n/$f" ]; then echo "    ok $j $f"; else echo "    not ok $j $f"; fail=1; fi
    done
    if [ "$fail" = 0 ]; then echo "ok $i $name"; else echo "not ok $i $name"; fi
done
