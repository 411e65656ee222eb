#!/bin/sh
# Run one selftest in the guest with a time limit (numa-harness; busybox sh).
#
#   run-one.sh SECONDS DIR TEST [ARGS...]
#
# Runs ./TEST in DIR, in its own session so that on time-out the whole process
# group goes (TERM, then KILL 5 s later), and prints the test's output (stdout
# and stderr, in order) followed by one last line:
#   numa-harness-selftest: exit=N seconds=S timed_out=0|1
# Exit status 4 is kselftest's "skip"; the harness decides what N means.
set -u
limit=$1
dir=$2
test=$3
shift 3
cd "$dir" || { echo "numa-harness-selftest: exit=127 seconds=0 timed_out=0"; exit 0; }
for sh in /bin/bash /usr/bin/bash; do
    [ -e "$sh" ] || [ ! -x /bin/bash-static ] || ln -s /bin/bash-static "$sh" 2>/dev/null
done
out=$(mktemp /tmp/nh-selftest-out.XXXXXX)
flag=$out.timeout
start=$(date +%s)
if [ -x "./$test" ]; then
    setsid "./$test" "$@" >"$out" 2>&1 </dev/null &
else
    setsid sh "./$test" "$@" >"$out" 2>&1 </dev/null &
fi
pid=$!
(
    i=0
    while [ "$i" -lt "$limit" ] && kill -0 "$pid" 2>/dev/null; do
        sleep 1
        i=$((i + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        : >"$flag"
        kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        sleep 5
        kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
) >/dev/null 2>&1 &
wait "$pid"
rc=$?
end=$(date +%s)
# the test's leftover background processes go with it
kill -KILL "-$pid" 2>/dev/null
timed_out=0
[ -e "$flag" ] && timed_out=1
cat "$out"
rm -f "$out" "$flag"
echo "numa-harness-selftest: exit=$rc seconds=$((end - start)) timed_out=$timed_out"
