#!/bin/sh
# Guest side of scripts/record_stats_fixtures.py: a process holding ~4 MB of anonymous memory
# bound to node 1, inside memory cgroup "rec", so numa_maps and memory.numa_stat have content.
# Prints the holder's pid. The trailing "; echo" keeps busybox sh from exec'ing sleep (which
# would drop the memory).
mkdir -p /sys/fs/cgroup
grep -q cgroup2 /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/rec
# shellcheck disable=SC2016 # expanded by the inner shells
sh -c 'echo $$ > /sys/fs/cgroup/rec/cgroup.procs; exec numactl --membind=1 sh -c '\''x=$(head -c 4000000 /dev/zero | tr "\0" a); echo ${#x} > /tmp/len; sleep 100000; echo'\''' >/dev/null 2>&1 &
echo $!
sleep 3
