from harness.guest.nodes import parse_nodes

SAMPLE = """mask possible 0-2
mask online 0-2
mask has_cpu 0
mask has_memory 0-2
mask has_normal_memory 0-1
mask has_generic_initiator
cpus 0 0-1
meminfo 0 MemTotal 1015808
meminfo 0 MemFree 900000
cpus 1
meminfo 1 MemTotal 524288
meminfo 1 MemFree 524000
cpus 2
meminfo 2 MemTotal 262144
meminfo 2 MemFree 262144
tier 4 0-1
tier 22 2
"""


def test_parse_nodes_types_everything():
    g = parse_nodes(SAMPLE)
    assert sorted(g.nodes) == [0, 1, 2]
    assert tuple(g.nodes[0].cpus) == (0, 1) and tuple(g.nodes[1].cpus) == ()
    assert g.nodes[2].mem_total == 256 << 20
    assert tuple(g.with_memory) == (0, 1, 2)
    assert tuple(g.masks["has_generic_initiator"]) == ()
    assert [tuple(x) for x in g.tier_groups()] == [(0, 1), (2,)]
    assert g.nodes[2].tier == 22 and g.nodes[0].tier == 4


def test_parse_nodes_ignores_noise():
    g = parse_nodes("motd line\n" + SAMPLE + "garbage\n")
    assert len(g.nodes) == 3
