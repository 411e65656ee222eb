#!/bin/sh
# Load KUnit test modules and print every KUnit suite's results (numa-harness; busybox sh).
#
#   kunit.sh DIR [MODULE...]
#
# Each MODULE is a file DIR/MODULE.ko, given dependencies first. A module not yet
# loaded is insmod'ed: KUnit runs a module's suites while it loads, so insmod
# returns when they are done. A loaded module is left as it is (its suites ran
# when it was loaded and their results are still in debugfs). Then, for every
# suite under /sys/kernel/debug/kunit (built-in suites ran at boot, before init):
#   numa-harness-kunit: suite NAME
#   <its results file: KTAP>
# Other lines it prints (the host parses them):
#   numa-harness-kunit: loaded NAME seconds=S
#   numa-harness-kunit: insmod-failed NAME status=N      (insmod's output follows)
#   numa-harness-kunit: disabled                         (kunit.enable=0)
#   numa-harness-kunit: no-debugfs                       (no /sys/kernel/debug/kunit; exit 3)
#   numa-harness-kunit: end
# NH_KUNIT_DEBUGFS replaces /sys/kernel/debug (the host's unit tests read a copy).
set -u
dir=$1
shift
root=${NH_KUNIT_DEBUGFS:-/sys/kernel/debug}
kunit=$root/kunit
if [ "$root" = /sys/kernel/debug ] && [ -z "$(ls -A "$root" 2>/dev/null)" ]; then
    mount -t debugfs debugfs "$root" 2>/dev/null  # the guest init mounts it; in case it did not
fi
for m in "$@"; do
    name=$(echo "$m" | tr - _)
    [ -d "/sys/module/$name" ] && continue
    start=$(date +%s)
    if out=$(insmod "$dir/$m.ko" 2>&1); then
        echo "numa-harness-kunit: loaded $name seconds=$(($(date +%s) - start))"
    else
        echo "numa-harness-kunit: insmod-failed $name status=$?"
        [ -n "$out" ] && echo "$out"
    fi
done
if [ -r /sys/module/kunit/parameters/enable ] && [ "$(cat /sys/module/kunit/parameters/enable)" = N ]; then
    echo "numa-harness-kunit: disabled"
fi
if [ ! -d "$kunit" ]; then
    echo "numa-harness-kunit: no-debugfs"
    exit 3
fi
for d in "$kunit"/*/; do
    [ -r "${d}results" ] || continue
    s=${d%/}
    echo "numa-harness-kunit: suite ${s##*/}"
    cat "${d}results"
done
echo "numa-harness-kunit: end"
