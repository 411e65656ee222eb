#!/bin/sh
# numa-harness guest node sampler: memory per NUMA node, sampled while a workload runs.
# POSIX sh; runs under busybox ash (the guest's shell). harness/stats/timeline.py plans and parses it.
#
# Usage:
#   node-sampler start INTERVAL MAX_SECONDS OUT   sample every INTERVAL seconds (a decimal, e.g. 0.5)
#                                                 into OUT, in the background, for at most MAX_SECONDS;
#                                                 prints "sampler pid=PID"
#   node-sampler stop PID OUT                     end that sampler, print OUT's samples, remove OUT
#
# A sample is one line per node (times from /proc/uptime, seconds since boot):
#   sample t=SECONDS node=N total_kb=KB free_kb=KB used_kb=KB
# Exit 2 for usage.

set -u

SYSFS=${HARNESS_SYSFS:-/sys}

sample() {   # one line per node, read in one awk pass over every node's meminfo
    t=$(cut -d' ' -f1 /proc/uptime)
    awk -v t="$t" '
        $3 == "MemTotal:" { tot[$2] = $4 }
        $3 == "MemFree:"  { free[$2] = $4 }
        $3 == "MemUsed:"  { used[$2] = $4 }
        END { for (n in tot) printf "sample t=%s node=%s total_kb=%s free_kb=%s used_kb=%s\n", t, n, tot[n], free[n], used[n] }
    ' "$SYSFS"/devices/system/node/node*/meminfo
}

loop() {   # INTERVAL MAX_SECONDS OUT
    end=$(awk -v now="$(cut -d' ' -f1 /proc/uptime)" -v max="$2" 'BEGIN { print now + max }')
    while :; do
        sample >> "$3"
        awk -v now="$(cut -d' ' -f1 /proc/uptime)" -v end="$end" 'BEGIN { exit !(now >= end) }' && exit 0
        sleep "$1"
    done
}

case "${1:-}" in
    start)
        [ $# -eq 4 ] || { echo "usage: node-sampler start INTERVAL MAX_SECONDS OUT" >&2; exit 2; }
        : > "$4"
        sample >> "$4"   # the first sample before returning: the workload cannot start ahead of it
        "$0" loop "$2" "$3" "$4" < /dev/null > /dev/null 2>&1 &
        echo "sampler pid=$!"
        ;;
    loop)
        loop "$2" "$3" "$4"
        ;;
    stop)
        [ $# -eq 3 ] || { echo "usage: node-sampler stop PID OUT" >&2; exit 2; }
        kill "$2" 2> /dev/null
        i=0
        while kill -0 "$2" 2> /dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        sample >> "$3"   # the last sample, after the workload
        cat "$3"
        rm -f "$3"
        ;;
    *)
        echo "usage: node-sampler start INTERVAL MAX_SECONDS OUT | stop PID OUT" >&2
        exit 2
        ;;
esac
