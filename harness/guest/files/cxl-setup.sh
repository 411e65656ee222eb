#!/bin/sh
# numa-harness guest CXL set-up: create, commit and online the regions a plan asks for,
# through the kernel's CXL sysfs ABI (the steps `cxl create-region` takes).
# POSIX sh; runs under busybox ash (the guest's shell) and dash.
#
# Usage: cxl-setup PLAN
#
# PLAN is a file the host writes (harness/guest/setup.py), one step per line, run in order;
# blank lines and lines starting with # are ignored. The whole plan is checked before the
# first sysfs write.
#   memdevs COUNT SECONDS      wait up to SECONDS until COUNT CXL memdevs exist
#   memdev ID PCIKEY SERIAL    the memdev at PCI path PCIKEY (e.g. 0c/00.0/00.0: root bus, then
#                              dev.fn per hop) is topology device ID; SERIAL "-" or checked
#   region WINDOW MODE WAYS GRAN SIZE DPA ONLINE ID...
#                              a region in root decoder 0.WINDOW; MODE ram|pmem; DPA is each
#                              device's share (SIZE/WAYS); ONLINE system-ram|
#                              system-ram-movable|devdax; the IDs in position order
#   demotion true|false        write /sys/kernel/mm/numa/demotion_enabled
#
# Output, one line per result:
#   memdev ID memN pci=PCIKEY serial=SERIAL
#   region NAME committed size=BYTES node=NID mode=MODE online=ONLINE dax=daxN.M memdevs=memA,.. decoders=decX.Y,..
#     [namespace=namespaceN.M labels=created|reused]   (pmem regions)
#   demotion enabled=VALUE
#   done regions=N
# On failure: "error step=STEP file=FILE msg=TEXT", then the kernel's last CXL lines as
# "dmesg ..." lines; exit status 1 (2 for a bad plan or usage).
#
# HARNESS_SYSFS (default /sys) and HARNESS_DEV (default /dev) are the sysfs and devtmpfs
# roots; the unit tests run this program on the host against a fake tree. HARNESS_TRACE=FILE
# appends "PATH VALUE" to FILE for every write, in order (lib.sh's wr). HARNESS_NDCTL (default ndctl) is the
# ndctl the program runs to create a pmem namespace.
#
# Persistent regions across boots. A pmem region's namespace lives in the devices' label
# storage areas; with file-backed devices those outlive the VM. Linux 6.12 does not
# reassemble a CXL pmem region from labels at boot: the region is created again as in
# the first boot. The nvdimm region cxl_pmem then makes finds the earlier namespace by
# its interleave-set cookie, which the kernel computes from each device's serial number and
# DPA offset in position order (drivers/cxl/pmem.c, cxl_pmem_region_probe), not from the
# region's uuid; so the same devices in the same order bring the namespace back (a cookie of 0,
# every device with serial 0 at DPA 0, never does: the host gives persistent devices serials and
# checks the label files against the topology before booting), and its
# info block on the media makes it devdax again once dax_pmem is loaded. The program
# therefore checks the nvdimm region's available_size after it has read its labels: all of
# it free -> create a namespace; some taken -> reuse what the labels describe
# ("labels=reused"), and fail, never reformat, if that is not a devdax namespace.

set -eu

DEV=${HARNESS_DEV:-/dev}
NDCTL=${HARNESS_NDCTL:-ndctl}
PLAN=${1:-}
FAIL_DMESG=cxl  # fail shows the kernel's last CXL lines
# fail, wr, rd, wait_until, wait_path (and SYSFS from HARNESS_SYSFS)
LIB=${0%/*}/lib; [ -r "$LIB" ] || LIB=$LIB.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$LIB"

say() { echo "$*"; }

if [ -z "$PLAN" ] || [ ! -r "$PLAN" ]; then
	say "error step=plan file=${PLAN:--} msg=usage: cxl-setup PLAN (a readable plan file)"
	exit 2
fi
if ! SYSFS=$(cd "$SYSFS" 2>/dev/null && pwd -P); then
	say "error step=plan file=${HARNESS_SYSFS:-/sys} msg=no such sysfs root"
	exit 2
fi

CXL=$SYSFS/bus/cxl/devices
MEMSYS=$SYSFS/devices/system/memory
DAXBUS=$SYSFS/bus/dax
NDBUS=$SYSFS/bus/nd/devices
DEMOTION=$SYSFS/kernel/mm/numa/demotion_enabled
AUTO_ONLINE_ORIG=
MAP=            # " ID=memN ..." as memdev steps find them
VAL=            # what rd read
FOUND=          # what a predicate found
DAX_PARENT=     # the directory dax_under found FOUND in
NODE=           # the node online_dax saw
NS=             # the pmem namespace pmem_dax found or made
LABELS=         # created | reused: where that namespace came from
NREGIONS=0

cleanup() {
	if [ -n "$AUTO_ONLINE_ORIG" ]; then
		echo "$AUTO_ONLINE_ORIG" > "$MEMSYS/auto_online_blocks" 2>/dev/null || true
	fi
	lib_cleanup
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# ---------------------------------------------------------------- predicates (for wait_until)

# memdevs_at_least COUNT (FOUND = how many there are)
memdevs_at_least() {
	FOUND=0
	for ma_m in "$CXL"/mem[0-9]*; do
		if [ -e "$ma_m" ]; then FOUND=$((FOUND + 1)); fi
	done
	[ "$FOUND" -ge "$1" ]
}

# endpoint_of memN (FOUND = its endpoint port: endpointN/uport points at the memdev)
endpoint_of() {
	eo_t=$(readlink -f "$CXL/$1")
	for eo_e in "$CXL"/endpoint[0-9]*; do
		[ -e "$eo_e/uport" ] || continue
		if [ "$(readlink -f "$eo_e/uport")" = "$eo_t" ]; then
			FOUND=${eo_e##*/}
			return 0
		fi
	done
	return 1
}

# dax_under DIR (FOUND = the dax device below a child of DIR, once it is on the dax bus:
# REGION/dax_regionN/daxN.M for a ram region, NDREGION/daxN.M/daxN.M for a pmem one)
dax_under() {
	for du_d in "$1"/*/dax[0-9]*.[0-9]*; do
		if [ -e "$DAXBUS/devices/${du_d##*/}" ]; then
			FOUND=${du_d##*/}
			DAX_PARENT=${du_d%/*}
			return 0
		fi
	done
	return 1
}

# nd_probed NDREGION-PATH: the nvdimm region's driver has finished probing (it has read the
# labels and registered their namespaces; dax_seed is the last thing probe sets).
nd_probed() {
	np_v=$(cat "$1/dax_seed" 2>/dev/null) || return 1
	[ -n "$np_v" ]
}

# nd_region_at ADDRESS (FOUND = the nvdimm region starting there)
nd_region_at() {
	for nr_r in "$NDBUS"/region[0-9]*; do
		nr_v=$(cat "$nr_r/resource" 2>/dev/null) || continue
		if [ "$((nr_v))" -eq "$(($1))" ]; then
			FOUND=${nr_r##*/}
			return 0
		fi
	done
	return 1
}

# driver_of daxN.M: print the name of its driver, or nothing.
driver_of() {
	if [ -e "$DAXBUS/devices/$1/driver" ]; then
		dv_p=$(readlink -f "$DAXBUS/devices/$1/driver")
		echo "${dv_p##*/}"
	fi
}

# bound_to daxN.M DRIVER
bound_to() {
	[ "$(driver_of "$1")" = "$2" ]
}

# ---------------------------------------------------------------- memdevs

# pcikey PATH: the PCI key of a memdev's resolved sysfs path:
# $SYSFS/devices/pci0000:0c/0000:0c:00.0/0000:0d:00.0/mem0 -> 0c/00.0/00.0
pcikey() {
	echo "${1#"$SYSFS"/devices/}" | sed -e 's|/mem[0-9]*$||' \
		-e 's|^pci[0-9a-f]*:\([0-9a-f]*\)|\1|' \
		-e 's|/[0-9a-f]*:[0-9a-f]*:\([0-9a-f]*\.[0-9a-f]\)|/\1|g'
}

# find_memdev ID PCIKEY SERIAL|-: map topology device ID to the memdev at PCIKEY.
find_memdev() {
	fm_list=
	for fm_m in "$CXL"/mem[0-9]*; do
		[ -e "$fm_m" ] || continue
		fm_k=$(pcikey "$(readlink -f "$fm_m")")
		fm_list="$fm_list ${fm_m##*/}=$fm_k"
		[ "$fm_k" = "$2" ] || continue
		rd "find memdev $1" "$fm_m/serial"
		if [ "$3" != - ] && [ "$((VAL))" -ne "$3" ]; then
			fail "find memdev $1" "$fm_m/serial" "serial $VAL, the topology says $3"
		fi
		MAP="$MAP $1=${fm_m##*/}"
		say "memdev $1 ${fm_m##*/} pci=$2 serial=$VAL"
		return 0
	done
	fail "find memdev $1" "$CXL" "no memdev at PCI path $2; found:$fm_list"
}

# memdev_of ID (FOUND = the memdev find_memdev mapped ID to)
memdev_of() {
	for mo_pair in $MAP; do
		case $mo_pair in
			"$1="*) FOUND=${mo_pair#*=}; return 0 ;;
		esac
	done
	return 1
}

# free_decoder endpointN (FOUND = its first decoder with mode none and dpa_size 0)
free_decoder() {
	fd_i=${1#endpoint}
	for fd_d in $(printf '%s\n' "$CXL/decoder$fd_i".* | sed 's|.*/||' | sort -t. -k2 -n); do
		fd_mode=$(cat "$CXL/$fd_d/mode" 2>/dev/null || echo unknown)
		[ "$fd_mode" = none ] || continue
		fd_size=$(cat "$CXL/$fd_d/dpa_size" 2>/dev/null || echo 1)
		if [ "$((fd_size))" -eq 0 ]; then
			FOUND=$fd_d
			return 0
		fi
	done
	fail "pick endpoint decoder" "$CXL/decoder$fd_i.*" "$1 has no free decoder (mode none, dpa_size 0)"
}

# ---------------------------------------------------------------- dax and memory blocks

# set_auto_online ONLINE: how kmem onlines the blocks it adds (restored on exit).
set_auto_online() {
	case $1 in
		system-ram) sa_v=online ;;
		system-ram-movable) sa_v=online_movable ;;
		*) sa_v=offline ;;
	esac
	[ -e "$MEMSYS/auto_online_blocks" ] || return 0
	if [ -z "$AUTO_ONLINE_ORIG" ]; then
		rd "set auto_online_blocks" "$MEMSYS/auto_online_blocks"
		AUTO_ONLINE_ORIG=$VAL
	fi
	wr "set auto_online_blocks" "$MEMSYS/auto_online_blocks" "$sa_v"
}

# bind_dax daxN.M DRIVER: move a dax device to kmem or device_dax.
bind_dax() {
	bd_cur=$(driver_of "$1")
	if [ "$bd_cur" = "$2" ]; then return 0; fi
	[ -d "$DAXBUS/drivers/$2" ] || modprobe "$2" 2>/dev/null || true
	[ -d "$DAXBUS/drivers/$2" ] || fail "bind $1 to $2" "$DAXBUS/drivers/$2" "driver $2 not loaded"
	if [ -n "$bd_cur" ]; then
		wr "unbind $1 from $bd_cur" "$DAXBUS/drivers/$bd_cur/unbind" "$1"
	fi
	# new_id makes the driver match this device whatever its region's type, and attaches
	# it (what daxctl reconfigure-device does); an explicit bind if it has not after 1 s.
	echo "$1" 2>/dev/null > "$DAXBUS/drivers/$2/new_id" || true
	if ! wait_until 1 bound_to "$1" "$2"; then
		wr "bind $1 to $2" "$DAXBUS/drivers/$2/bind" "$1"
		wait_until 10 bound_to "$1" "$2" ||
			fail "bind $1 to $2" "$DAXBUS/devices/$1/driver" "still bound to '$(driver_of "$1")' after 10 s"
	fi
}

# online_dax daxN.M ONLINE-TYPE: online every memory block of the dax range (NODE = its node).
online_dax() {
	od_dev=$DAXBUS/devices/$1
	rd "online $1" "$MEMSYS/block_size_bytes"
	od_bs=$((0x$VAL))
	rd "online $1" "$od_dev/resource"
	od_start=$((VAL))
	rd "online $1" "$od_dev/size"
	od_b=$(((od_start + od_bs - 1) / od_bs))
	od_last=$(((od_start + VAL) / od_bs))
	NODE=
	od_count=0
	while [ "$od_b" -lt "$od_last" ]; do
		od_st=$MEMSYS/memory$od_b/state
		wait_path "online $1" "$od_st" 10
		rd "online $1" "$od_st"
		# kmem onlines the blocks it adds itself (auto_online_blocks, set above), and the
		# block appears before that is done: a write racing with it fails with EINVAL
		# (memory.c state_store: device_online() of an online block) and the block is
		# online all the same. Seen on 7.2 under TCG.
		if [ "$VAL" != online ]; then
			if [ -n "${HARNESS_TRACE:-}" ]; then echo "$od_st $2" >> "$HARNESS_TRACE"; fi
			if ! echo "$2" 2>"$LIB_ERR" >"$od_st"; then
				od_err=$(lib_errtext)
				rd "online $1" "$od_st"
				[ "$VAL" = online ] || fail "online memory$od_b of $1" "$od_st" "writing '$2': $od_err"
			fi
		fi
		for od_l in "$MEMSYS/memory$od_b"/node[0-9]*; do
			if [ -e "$od_l" ]; then NODE=${od_l##*/node}; fi
		done
		od_count=$((od_count + 1))
		od_b=$((od_b + 1))
	done
	if [ "$od_count" -eq 0 ]; then
		fail "online $1" "$od_dev/resource" "the dax range holds no whole memory block"
	fi
}

# ns_modes NDREGION-PATH: print "namespaceN.M (MODE)" for each namespace with capacity
# (MODE as ndctl names it).
ns_modes() {
	for nm_n in "$1"/namespace[0-9]*.[0-9]*; do
		nm_s=$(cat "$nm_n/size" 2>/dev/null) || continue
		[ "$((nm_s))" -gt 0 ] || continue
		case $(cat "$nm_n/mode" 2>/dev/null) in
			dax) nm_m=devdax ;;
			memory) nm_m=fsdax ;;
			safe) nm_m=sector ;;
			*) nm_m=raw ;;
		esac
		printf '%s (%s) ' "${nm_n##*/}" "$nm_m"
	done
}

# pmem_dax REGION-PATH: the devdax namespace on the nvdimm region cxl_pmem made for the CXL
# region (same resource): the one its labels already describe, else a new one.
# FOUND = its daxN.M; NS = the namespace; LABELS = created | reused.
pmem_dax() {
	rd "find nvdimm region" "$1/resource"
	pd_res=$VAL
	# Loaded before the nvdimm region reads its labels, so an earlier boot's devdax namespace
	# is claimed as soon as it is registered.
	[ -d "$SYSFS/bus/nd/drivers/dax_pmem" ] || modprobe dax_pmem 2>/dev/null || true
	wait_until 20 nd_region_at "$pd_res" ||
		fail "find nvdimm region" "$NDBUS/region*/resource" "no nvdimm region at $pd_res after 20 s (cxl_pmem loaded?)"
	pd_nd=$FOUND
	pd_r=$NDBUS/$pd_nd
	wait_until 20 nd_probed "$pd_r" ||
		fail "read labels" "$pd_r/dax_seed" "the nvdimm region $pd_nd was not probed within 20 s (the kernel refused the namespace its labels describe: its devices' serials, order or DPA offsets differ from the boot that wrote them)"
	rd "read labels" "$pd_r/available_size"
	pd_free=$((VAL))
	rd "read labels" "$pd_r/size"
	if [ "$pd_free" -lt "$((VAL))" ]; then
		# The label area describes a namespace from an earlier boot: use it, never reformat it.
		LABELS=reused
		if ! wait_until 10 dax_under "$pd_r"; then
			fail "reuse namespace" "$pd_r" "the label area holds $(ns_modes "$pd_r")from an earlier boot and no devdax device came up within 10 s; make it devdax in the guest (ndctl create-namespace -f -e NAMESPACE -m devdax; its data is lost) or delete the device's backing files"
		fi
	else
		LABELS=created
		if ! "$NDCTL" create-namespace -m devdax -r "$pd_nd" >"$LIB_ERR" 2>&1; then
			fail "create namespace" "$pd_r" "ndctl create-namespace -m devdax -r $pd_nd: $(tail -n 1 "$LIB_ERR")"
		fi
		wait_until 10 dax_under "$pd_r" ||
			fail "find dax device" "$pd_r" "no dax device 10 s after create-namespace (dax_pmem loaded?)"
	fi
	rd "find namespace of $FOUND" "$DAX_PARENT/namespace"
	NS=$VAL
}

# ---------------------------------------------------------------- steps

# create_region WINDOW MODE WAYS GRAN SIZE DPA ONLINE ID...
create_region() {
	cr_win=$1 cr_mode=$2 cr_ways=$3 cr_gran=$4 cr_size=$5 cr_per=$6 cr_online=$7
	shift 7
	cr_root=$CXL/decoder0.$cr_win
	wait_path "find root decoder" "$cr_root" 30
	cr_f=$cr_root/create_${cr_mode}_region
	rd "create region" "$cr_f"
	cr_name=$VAL
	wr "create region" "$cr_f" "$cr_name"
	cr_r=$CXL/$cr_name
	wait_path "create region" "$cr_r" 10
	if [ "$cr_mode" = pmem ]; then
		rd "set uuid" /proc/sys/kernel/random/uuid
		wr "set uuid" "$cr_r/uuid" "$VAL"
	fi
	wr "set interleave_granularity" "$cr_r/interleave_granularity" "$cr_gran"
	wr "set interleave_ways" "$cr_r/interleave_ways" "$cr_ways"
	cr_decs=
	cr_mds=
	for cr_id in "$@"; do
		memdev_of "$cr_id" || fail "find memdev $cr_id" "$PLAN" "no memdev step mapped $cr_id"
		cr_md=$FOUND
		wait_until 30 endpoint_of "$cr_md" ||
			fail "find endpoint of $cr_md" "$CXL/$cr_md" "no endpoint port after 30 s (cxl_mem/cxl_port not bound?)"
		free_decoder "$FOUND"
		wr "reserve DPA on $cr_md" "$CXL/$FOUND/mode" "$cr_mode"
		wr "reserve DPA on $cr_md" "$CXL/$FOUND/dpa_size" "$cr_per"
		cr_decs="$cr_decs${cr_decs:+,}$FOUND"
		cr_mds="$cr_mds${cr_mds:+,}$cr_md"
	done
	wr "set region size" "$cr_r/size" "$cr_size"
	cr_i=0
	cr_rest=$cr_decs,
	while [ -n "$cr_rest" ]; do
		wr "attach target$cr_i" "$cr_r/target$cr_i" "${cr_rest%%,*}"
		cr_rest=${cr_rest#*,}
		cr_i=$((cr_i + 1))
	done
	wr "commit" "$cr_r/commit" 1
	rd "commit" "$cr_r/commit"
	[ "$VAL" = 1 ] || fail "commit" "$cr_r/commit" "reads $VAL after writing 1"
	set_auto_online "$cr_online"
	wr "bind region" "$SYSFS/bus/cxl/drivers/cxl_region/bind" "$cr_name"
	if [ "$cr_mode" = ram ]; then
		wait_until 20 dax_under "$cr_r" ||
			fail "find dax device" "$cr_r/dax_region*" "no dax device after 20 s (dax_cxl loaded?)"
	else
		pmem_dax "$cr_r"
	fi
	cr_dax=$FOUND
	case $cr_online in
		system-ram)
			bind_dax "$cr_dax" kmem
			online_dax "$cr_dax" online
			;;
		system-ram-movable)
			bind_dax "$cr_dax" kmem
			online_dax "$cr_dax" online_movable
			;;
		*)
			bind_dax "$cr_dax" device_dax
			wait_path "devdax $cr_dax" "$DEV/$cr_dax" 10
			rd "read target node of $cr_dax" "$DAXBUS/devices/$cr_dax/target_node"
			NODE=$VAL
			;;
	esac
	rd "read region size" "$cr_r/size"
	cr_ns=
	if [ "$cr_mode" = pmem ]; then cr_ns=" namespace=$NS labels=$LABELS"; fi
	say "region $cr_name committed size=$((VAL)) node=$NODE mode=$cr_mode online=$cr_online dax=$cr_dax memdevs=$cr_mds decoders=$cr_decs$cr_ns"
	NREGIONS=$((NREGIONS + 1))
}

set_demotion() {
	wr "set demotion" "$DEMOTION" "$1"
	rd "set demotion" "$DEMOTION"
	say "demotion enabled=$VAL"
}

# ---------------------------------------------------------------- the plan

plan_error() {
	say "error step=plan file=$PLAN msg=line $rp_n: $1"
	exit 2
}

# number VALUE WHAT: VALUE is a decimal number, else a plan error.
number() {
	case $1 in
		''|*[!0-9]*) plan_error "$2 '$1' is not a number" ;;
	esac
}

# run_plan check|apply: check every line, or run them.
run_plan() {
	rp_n=0
	rp_ids=' '
	while IFS= read -r rp_line <&4 || [ -n "$rp_line" ]; do
		rp_n=$((rp_n + 1))
		case $rp_line in
			''|'#'*) continue ;;
		esac
		# Blank-separated fields are the plan's syntax; globbing is off while splitting.
		set -f
		# shellcheck disable=SC2086
		set -- $rp_line
		set +f
		rp_step=$1
		shift
		case $rp_step in
			memdevs)
				if [ "$RP_MODE" = check ]; then
					[ $# -eq 2 ] || plan_error "memdevs takes COUNT SECONDS"
					number "$1" COUNT
					number "$2" SECONDS
				else
					wait_until "$2" memdevs_at_least "$1" ||
						fail "find memdevs" "$CXL" "$FOUND CXL memdevs after $2 s, the topology has $1 (cxl_pci/cxl_mem loaded?)"
				fi
				;;
			memdev)
				if [ "$RP_MODE" = check ]; then
					[ $# -eq 3 ] || plan_error "memdev takes ID PCIKEY SERIAL"
					case $1 in
						''|*[!A-Za-z0-9_.-]*) plan_error "bad device id '$1'" ;;
					esac
					case $2 in
						''|*[!0-9a-f./]*) plan_error "bad PCI key '$2'" ;;
					esac
					[ "$3" = - ] || number "$3" SERIAL
					rp_ids="$rp_ids$1 "
				else
					find_memdev "$@"
				fi
				;;
			region)
				if [ "$RP_MODE" = check ]; then
					[ $# -ge 8 ] || plan_error "region takes WINDOW MODE WAYS GRAN SIZE DPA ONLINE ID..."
					number "$1" WINDOW
					case $2 in
						ram|pmem) ;;
						*) plan_error "MODE '$2' is not ram or pmem" ;;
					esac
					number "$3" WAYS
					number "$4" GRAN
					number "$5" SIZE
					number "$6" DPA
					case $7 in
						system-ram|system-ram-movable|devdax) ;;
						*) plan_error "ONLINE '$7' is not system-ram, system-ram-movable or devdax" ;;
					esac
					shift 7
					for rp_id in "$@"; do
						case $rp_ids in
							*" $rp_id "*) ;;
							*) plan_error "device '$rp_id' has no memdev line before this region" ;;
						esac
					done
				else
					create_region "$@"
				fi
				;;
			demotion)
				if [ "$RP_MODE" = check ]; then
					[ $# -eq 1 ] || plan_error "demotion takes true or false"
					case $1 in
						true|false) ;;
						*) plan_error "demotion '$1' is not true or false" ;;
					esac
				else
					set_demotion "$1"
				fi
				;;
			*)
				plan_error "unknown step '$rp_step'"
				;;
		esac
	done 4< "$PLAN"
}

RP_MODE=check
run_plan
RP_MODE=apply
run_plan
say "done regions=$NREGIONS"
