#!/bin/sh
# numa-harness guest memory-block helpers, sourced by provision and node-memory (not run).
# POSIX sh. The sourcing script sets SYSFS (the sysfs root).

blocks_in() {   # NODE STATE: the memory block directories of NODE whose state is STATE, one a line
	for blk in "$SYSFS/devices/system/node/node$1"/memory[0-9]*; do
		[ -e "$blk/state" ] && [ "$(cat "$blk/state")" = "$2" ] && echo "$blk"
	done
	return 0
}

node_bytes() {   # NODE: its online memory in bytes, from its memory blocks
	bs=$(cat "$SYSFS/devices/system/memory/block_size_bytes")
	echo $(( $(blocks_in "$1" online | wc -l) * 0x$bs ))
}
