"""Statistics parsers on snapshots recorded from real guests (stock 6.12, TCG).

The files under data/stats/ are the raw output of harness/guest/files/snapshot.sh, recorded by
scripts/record_stats_fixtures.py on memory-only, tiered-3 and cxl-single after guest set-up,
with a process holding ~4 MB bound to node 1 inside memory cgroup "rec".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.stats import StatsError, from_dump
from harness.stats import parse as P
from harness.stats.collect import snapshot_args, snapshot_command
from harness.stats.cxl import cxl_list
from harness.units import IdList

DATA = Path(__file__).parent / "data" / "stats"


def dump(name: str) -> str:
    return (DATA / f"{name}.txt").read_text()


@pytest.fixture(scope="module")
def t3():
    return from_dump(dump("tiered-3"))


@pytest.fixture(scope="module")
def mo():
    return from_dump(dump("memory-only"))


@pytest.fixture(scope="module")
def cxl():
    return from_dump(dump("cxl-single"))


def test_split_dump_sections():
    d = P.split_dump(dump("tiered-3"))
    assert d.version == 1 and d.refreshed and d.complete
    assert d.pid is not None and d.pid[1]
    assert d.cgroup == ("/sys/fs/cgroup/rec", True)
    assert len(d.links) == 6          # 3 nodes x access0/access1, one initiator each
    assert d.demotion is not None and len(d.demotion) == 3
    assert d.tools["cxl"][0] == 0 and d.tools["daxctl"] == (0, "")


def test_cut_short_dump_is_refused():
    text = dump("memory-only")
    with pytest.raises(StatsError, match="cut short"):
        from_dump(text[: len(text) // 2])


def test_node_meminfo_in_bytes_and_counts():
    lines = P.node_files(P.split_dump(dump("tiered-3")).files, "meminfo")[1]
    mi = P.node_meminfo(lines)
    assert mi["MemTotal"] == 515924 * 1024
    assert mi["MemFree"] == 490024 * 1024
    assert mi["HugePages_Total"] == 0 and "HugePages_Surp" in mi
    assert mi["MemTotal"] == mi["MemFree"] + mi["MemUsed"]


def test_nodes_cpus_memory_distances(t3):
    assert sorted(t3.nodes) == [0, 1, 2]
    assert t3.node(0).cpus == IdList([0, 1]) and t3.node(1).cpus == IdList()
    assert t3.node(0).mem_total == 992232 * 1024
    assert t3.node(0).distance == {0: 10, 1: 20, 2: 40}
    assert t3.distance(1, 2) == 30 and t3.distance(2, 1) == 30
    with pytest.raises(StatsError, match="no node 7"):
        t3.node(7)


def test_distance_row_must_match_online_nodes():
    with pytest.raises(StatsError, match="3 values for 2"):
        P.distances("10 20 30", IdList([0, 1]))


def test_numastat_and_node_vmstat(t3):
    n1 = t3.node(1)
    assert n1.numa_hit == 3744 and n1.numa_miss == 0 and n1.local_node == 0
    assert n1.other_node == n1.numa_hit            # node 1 has no CPUs: every hit is "other"
    assert n1.vmstat["nr_free_pages"] == n1.free_pages > 0
    assert n1.vmstat["pgdemote_direct"] == 0


def test_proc_vmstat(t3):
    assert t3.vm["pgdemote_kswapd"] == 0
    assert "pgmigrate_success" in t3.vm and "nr_free_pages" in t3.vm
    assert t3.vm["nr_free_pages"] == sum(n.free_pages for n in t3.nodes.values())


def test_zoneinfo_per_node_per_zone(t3):
    z = t3.zone(0, "DMA32")
    assert (z.free, z.min, z.low, z.high, z.boost) == (230979, 10930, 13662, 16394, 0)
    assert (z.spanned, z.present, z.managed) == (258048, 258048, 244218)
    assert z.promo == 19126 and z.protection == (0, 0, 0, 0, 0)
    assert z.counters["nr_free_pages"] == z.free
    assert "high" not in z.counters   # the pagesets' "high:" lines are not the watermark
    assert {z.name for z in t3.zones if z.node == 2} == {"DMA", "DMA32", "Normal", "Movable", "Device"}
    # node 1 sits between 1 and 1.5 GiB: all of it in DMA32, its Normal zone empty
    dma32, normal = t3.zone(1, "DMA32"), t3.zone(1, "Normal")
    assert dma32.managed > 0 and dma32.free <= dma32.managed and normal.present == 0
    with pytest.raises(StatsError):
        t3.zone(0, "HighMem")


def test_zone_without_boost_line():
    zones = P.zoneinfo(["Node 0, zone   Normal", "  pages free     10", "        min      1", "        low      2",
                        "        high     3", "        spanned  20", "        present  20", "        managed  19"])
    assert zones[0].boost is None and zones[0].high == 3 and zones[0].managed == 19


def test_masks_every_has_mask(t3):
    assert t3.masks["online"] == IdList([0, 1, 2]) and t3.masks["possible"] == IdList([0, 1, 2])
    assert t3.masks["has_cpu"] == IdList([0])
    assert t3.masks["has_memory"] == IdList([0, 1, 2])
    assert t3.masks["has_generic_initiator"] == IdList()
    assert set(t3.masks) == {"possible", "online", "has_cpu", "has_generic_initiator", "has_memory",
                             "has_normal_memory"}


def test_tiers_numeric_order(t3, mo, cxl):
    # sysfs lists memory_tier35, memory_tier393, memory_tier4: lexical; the parser sorts by number
    files = P.split_dump(dump("tiered-3")).files
    lexical = [p for p in files if "memory_tier" in p]
    assert "memory_tier35" in lexical[0]
    assert list(t3.tiers) == [4, 35, 393]
    assert t3.tier_groups() == [IdList([0]), IdList([1]), IdList([2])]
    assert [n.tier for n in t3.nodes.values()] == [4, 35, 393]
    assert mo.tiers == {4: IdList([0]), 72: IdList([1])}
    assert cxl.tiers == {4: IdList([0]), 22: IdList([1])}     # the default dax/kmem tier


def test_demotion_enabled_and_targets(t3, cxl):
    assert t3.demotion_enabled is False
    assert t3.demotion_targets[0] == P.DemotionTarget(IdList([1]), IdList([1, 2]))
    assert t3.demotion_targets[1] == P.DemotionTarget(IdList([2]), IdList([2]))
    assert t3.demotion_targets[2] == P.DemotionTarget(IdList(), IdList())
    # cxl-single prints targets twice: "null" at boot, then again once the region's node is online
    assert cxl.demotion_targets[0].preferred == IdList([1])


def test_hmat_access(t3, mo, cxl):
    a = t3.hmat[1][0]
    assert a.initiators == IdList([0])
    assert (a.read_latency, a.write_latency) == (250, 250)
    assert (a.read_bandwidth, a.write_bandwidth) == (16384, 16384)     # MB/s; the topology says 16G
    assert t3.hmat[2][1].read_latency == 700
    assert mo.hmat[1][0].read_bandwidth == 5120
    assert cxl.hmat == {}      # no HMAT in cxl-single


def test_numa_maps(t3):
    maps = t3.numa_maps
    assert maps is not None and t3.pid is not None
    big = max(maps, key=lambda m: m.total_pages)
    assert big.policy == "bind:1" and big.pages == {1: 977} and big.anon == 977
    assert big.kernelpagesize_kb == 4 and big.kind is None
    heap = next(m for m in maps if m.kind == "heap")
    assert heap.pages == {1: 32}
    text = next(m for m in maps if m.file == "/bin/busybox" and m.address == 0x401000)
    assert text.pages == {0: 308} and text.fields["mapmax"] == "6"
    assert t3.pages_on(1) >= 977 and t3.pages_on(2) == 0


def test_numa_maps_huge_flag():
    m = P.numa_maps(["7f0000000000 bind:2 file=/dev/hugepages/x huge dirty=4 N2=4 kernelpagesize_kB=2048"])[0]
    assert m.kind == "huge" and m.pages == {2: 4} and m.kernelpagesize_kb == 2048


def test_memory_numa_stat(t3, mo):
    assert t3.numa_stat is not None and t3.cgroup == "/sys/fs/cgroup/rec"
    assert t3.numa_stat["anon"] == {0: 0, 1: 4231168, 2: 0}
    assert t3.numa_stat["pgdemote_direct"] == {0: 0, 1: 0, 2: 0}
    assert mo.numa_stat is not None and mo.numa_stat["anon"][1] >= 4_000_000


def test_cxl_and_daxctl(cxl, mo):
    assert cxl.cxl is not None and list(cxl.cxl.memdevs) == ["mem0"]
    assert cxl.cxl.memdevs["mem0"]["ram_size"] == 256 << 20
    assert "region0" in cxl.cxl.regions
    assert cxl.cxl.decoders["decoder2.0"]["mode"] == "ram"
    assert cxl.dax is not None and len(cxl.dax) == 1
    d = cxl.dax[0]
    assert (d.chardev, d.size, d.target_node, d.mode) == ("dax0.0", 256 << 20, 1, "system-ram")
    assert mo.cxl is not None and mo.cxl.memdevs == {} and mo.dax == []


def test_bad_json_is_a_stats_error():
    with pytest.raises(StatsError, match="not JSON"):
        cxl_list("[{")


def test_settings_read(t3):
    assert t3.thp == "always" and t3.numa_balancing == 1 and t3.refreshed


def test_missing_pid_is_reported():
    text = "@@ snapshot 1\n@@ refresh 0\n@@ pid 999 missing\n@@ files\n@@ end\n"
    with pytest.raises(StatsError, match="999"):
        from_dump(text)


def test_to_json_is_plain_data(t3):
    import json
    data = json.loads(json.dumps(t3.to_json()))
    assert data["tiers"] == {"4": "0", "35": "1", "393": "2"}
    assert data["nodes"]["1"]["classes"] == ["memory", "normal", "memory-only", "public", "user"]


def test_command_runs_the_in_image_program_with_its_arguments():
    args = snapshot_args(pid=12, cgroup="a b", cxl=True, boot_log=False)
    assert args == ["-p", "12", "-g", "a b", "-c", "-B"]
    assert snapshot_command(args) == "/usr/lib/numa-harness/bin/snapshot -p 12 -g 'a b' -c -B"
