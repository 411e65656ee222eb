from harness.guest.expect import mismatches
from harness.stats import from_dump
from harness.topology.model import Expect, NodeExpect
from harness.units import IdList, Size

N = "/sys/devices/system/node"
T = "/sys/devices/virtual/memory_tiering"
GUEST = from_dump(f"""@@ snapshot 1
@@ refresh 0
@@ files
{N}/has_memory:0-1
{N}/has_cpu:0
{N}/node0/cpulist:0-1
{N}/node0/meminfo:Node 0 MemTotal:        2018976 kB
{N}/node1/cpulist:
{N}/node1/meminfo:Node 1 MemTotal:         262144 kB
{T}/memory_tier4/nodelist:0
{T}/memory_tier22/nodelist:1
@@ end
""")


def ids(s):
    return IdList.parse(s, "x")


def test_matching_guest_has_no_mismatches():
    e = Expect(nodes=2, node={0: NodeExpect(cpus=ids("0-1"), memory=Size(2 << 30)), 1: NodeExpect(memory=Size(256 << 20))},
               tiers=[ids("0"), ids("1")])
    assert mismatches(e, GUEST) == []


def test_each_mismatch_is_named():
    e = Expect(nodes=3, node={1: NodeExpect(cpus=ids("1"), memory=Size(512 << 20)), 5: NodeExpect()},
               tiers=[ids("0-1")])
    got = mismatches(e, GUEST)
    assert "expected 3 nodes with memory, guest has 2 (0,1)" in got
    assert "node 1: expected CPUs 1, guest has none" in got
    assert "node 1: expected MemTotal 512M (-10%), guest has 256M" in got
    assert "node 5: expected, but the guest has no such node" in got
    assert "expected memory tiers {0,1} (fastest first), guest has {0} > {1}" in got


def test_tolerance_is_a_shortfall_only():
    e = Expect(node={1: NodeExpect(memory=Size(128 << 20))})
    assert mismatches(e, GUEST) == ["node 1: expected MemTotal 128M (-10%), guest has 256M"]
