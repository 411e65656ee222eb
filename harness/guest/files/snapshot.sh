#!/bin/sh
# numa-harness: every NUMA statistic the guest kernel keeps, in one go (parsed by harness.stats).
#
# Usage: snapshot.sh [-p PID] [-g CGROUP] [-c] [-x] [-B]
#   -p PID     also /proc/PID/numa_maps
#   -g CGROUP  also CGROUP/memory.numa_stat (absolute, or relative to /sys/fs/cgroup)
#   -c         also `cxl list -vvv` (JSON; slow-ish)
#   -x         also `daxctl list` (JSON)
#   -B         skip the demotion targets from the boot log (saves two forks)
#
# Output (plain text, one section per "@@ " line):
#   @@ snapshot 1                      format version
#   @@ refresh STATUS                  exit status of the stat_refresh write (0 = counters folded)
#   @@ files                           then `grep -H ''` lines: PATH:LINE, for every file read
#   @@ link PATH                       one per HMAT initiator link (accessK/initiators/nodeN)
#   @@ pid PID present|missing         whether the numa_maps of -p could be read
#   @@ cgroup PATH present|missing     whether the memory.numa_stat of -g could be read
#   @@ demotion                        then the boot log's "Demotion targets" lines
#   @@ cxl STATUS / @@ daxctl STATUS   then the tool's JSON (STATUS 127: not installed)
#   @@ end                             the dump is complete
#
# Counters fold lazily per CPU: the stat_refresh write makes them exact before reading.
# Globs that match nothing stay literal and grep's complaint about them is dropped.

pid='' cgroup='' want_cxl='' want_dax='' want_boot=1
while getopts p:g:cxB opt; do
    case "$opt" in
        p) pid=$OPTARG ;;
        g) cgroup=$OPTARG ;;
        c) want_cxl=1 ;;
        x) want_dax=1 ;;
        B) want_boot= ;;
        *) echo "usage: snapshot.sh [-p PID] [-g CGROUP] [-c] [-x] [-B]" >&2; exit 2 ;;
    esac
done

echo "@@ snapshot 1"
if echo 1 > /proc/sys/vm/stat_refresh 2>/dev/null; then st=0; else st=1; fi
echo "@@ refresh $st"

N=/sys/devices/system/node
extra=''
if [ -n "$pid" ]; then
    if [ -r "/proc/$pid/numa_maps" ]; then
        extra="/proc/$pid/numa_maps"
        echo "@@ pid $pid present"
    else
        echo "@@ pid $pid missing"
    fi
fi
if [ -n "$cgroup" ]; then
    case "$cgroup" in
        /*) cg=$cgroup ;;
        *) cg=/sys/fs/cgroup/$cgroup ;;
    esac
    if [ -r "$cg/memory.numa_stat" ]; then
        extra="$extra $cg/memory.numa_stat"
        echo "@@ cgroup $cg present"
    else
        echo "@@ cgroup $cg missing"
    fi
fi

for l in "$N"/node*/access*/initiators/node*; do
    [ -e "$l" ] && echo "@@ link $l"
done

echo "@@ files"
# shellcheck disable=SC2086 # $extra is a list of paths without spaces
grep -H '' \
    "$N"/possible "$N"/online "$N"/has_* \
    "$N"/node*/cpulist "$N"/node*/distance "$N"/node*/meminfo "$N"/node*/numastat \
    "$N"/node*/vmstat "$N"/node*/mem_features \
    "$N"/node*/access*/initiators/*_latency "$N"/node*/access*/initiators/*_bandwidth \
    /sys/devices/virtual/memory_tiering/memory_tier*/nodelist \
    /sys/kernel/mm/numa/demotion_enabled \
    /sys/kernel/mm/transparent_hugepage/enabled \
    /proc/sys/kernel/numa_balancing \
    /proc/vmstat /proc/zoneinfo $extra 2>/dev/null

if [ -n "$want_boot" ]; then
    echo "@@ demotion"
    dmesg | grep 'Demotion targets'
fi
if [ -n "$want_cxl" ]; then
    if command -v cxl >/dev/null 2>&1; then
        out=$(cxl list -vvv 2>/dev/null)
        st=$?
    else
        out='' st=127
    fi
    echo "@@ cxl $st"
    [ -n "$out" ] && echo "$out"
fi
if [ -n "$want_dax" ]; then
    if command -v daxctl >/dev/null 2>&1; then
        out=$(daxctl list 2>/dev/null)
        st=$?
    else
        out='' st=127
    fi
    echo "@@ daxctl $st"
    [ -n "$out" ] && echo "$out"
fi
echo "@@ end"
