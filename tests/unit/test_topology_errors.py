"""Every class of bad topology gets one clear message naming the YAML path and the fix."""

from __future__ import annotations

import copy

import pytest
import yaml

from harness.errors import TopologyError
from harness.topology import parse

BASE = {
    "description": "test",
    "machine": {"smp": 2},
    "nodes": [{"id": 0, "cpus": "0-1", "memory": "1G"}, {"id": 1, "memory": "1G", "initiator": 0}],
    # initiator is HMAT data: QEMU refuses it without hmat=on
    "hmat": {"links": [{"initiator": 0, "target": 0, "latency": 10}, {"initiator": 0, "target": 1, "latency": 20}]},
}

CXL = {
    "description": "test",
    "machine": {"smp": 2},
    "nodes": [{"id": 0, "cpus": "0-1", "memory": "2G"}],
    "cxl": {
        "host_bridges": [
            {"id": "hb0", "bus_nr": 12, "root_ports": [{"id": "rp0"}, {"id": "rp1"}]},
            {"id": "hb1", "bus_nr": 40, "root_ports": [{"id": "rp2"}]},
        ],
        "devices": [{"id": "mem0", "port": "rp0", "volatile": "256M"},
                    {"id": "mem1", "port": "rp2", "volatile": "256M"}],
        "windows": [{"targets": ["hb0"], "size": "4G"}, {"targets": ["hb0", "hb1"], "size": "4G"}],
    },
    "guest": {"regions": [{"window": 0, "devices": ["mem0"]}]},
}


def _set(doc: dict, path: str, value) -> dict:
    """Set doc[a][b][0][c] = value for path 'a.b.0.c'; value DELETE removes the key."""
    doc = copy.deepcopy(doc)
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    cur = doc
    for k in keys[:-1]:
        cur = cur[k]
    if value is DELETE:
        del cur[keys[-1]]
    else:
        cur[keys[-1]] = value
    return doc


DELETE = object()

# (id, base, path to change, new value, expected YAML path in the error, words the message must contain)
CASES = [
    ("unknown-key-typo", BASE, "nodes.0.memroy", "1G", "nodes[0].memroy", ["unknown key 'memroy'", "did you mean 'memory'"]),
    ("unknown-top-key", BASE, "hmta", {}, "hmta", ["unknown key", "did you mean 'hmat'"]),
    ("size-with-space", BASE, "nodes.0.memory", "1 GB", "nodes[0].memory", ["not in QEMU's form", "write 1G"]),
    ("size-GiB", BASE, "nodes.0.memory", "512MiB", "nodes[0].memory", ["not in QEMU's form", "write 512M"]),
    ("size-no-unit", BASE, "nodes.0.memory", 1024, "nodes[0].memory", ["has no unit", "1K"]),
    ("missing-description", BASE, "description", DELETE, "description", ["required key 'description' is missing"]),
    ("bad-enum", BASE, "nodes.0.backend", "memdf", "nodes[0].backend", ["not one of", "did you mean 'memfd'"]),
    ("cpu-beyond-smp", BASE, "nodes.0.cpus", "0-2", "nodes[0].cpus", ["CPU 2 does not exist", "machine.smp is 2"]),
    ("cpu-overlap", BASE, "nodes.1.cpus", "1", "nodes[1].cpus", ["CPU 1 is already in node 0"]),
    ("cpu-unplaced", BASE, "machine.smp", 4, "nodes", ["vCPUs 2-3 are in no node"]),
    ("smp-runaway", BASE, "machine.smp", 100000000, "machine.smp", ["100000000 vCPUs is outside 1..4096"]),
    ("smp-many-unplaced", BASE, "machine.smp", 4000, "nodes", ["vCPUs 2-3999 are in no node"]),
    ("duplicate-node-id", BASE, "nodes.1.id", 0, "nodes[1].id", ["node id 0 is used twice"]),
    ("node-id-gap", BASE, "nodes.1.id", 5, "nodes[1].id", ["out of range", "0..1", "renumber it to 1"]),
    ("memory-not-adding-up", BASE, "machine.memory", "4G", "machine.memory", ["does not equal", "1G + 1G = 2G"]),
    ("maxmem-without-slots", BASE, "machine.maxmem", "8G", "machine.slots", ["maxmem and slots go together"]),
    ("initiator-without-cpus", {**BASE, "nodes": BASE["nodes"] + [{"id": 2, "memory": "1G", "initiator": 1}]},
     "machine.smp", 2, "nodes[2].initiator", ["initiator node 1 has no CPUs"]),
    ("initiator-missing-node", BASE, "nodes.1.initiator", 7, "nodes[1].initiator", ["initiator node 7 does not exist"]),
    ("slit-missing-node", {**BASE, "slit": {"distances": [{"src": 0, "dst": 3, "value": 21}]}},
     "machine.smp", 2, "slit.distances[0].dst", ["node 3 does not exist"]),
    ("slit-pair-missing", {**BASE, "nodes": BASE["nodes"] + [{"id": 2, "memory": "1G", "initiator": 0}],
                           "slit": {"distances": [{"src": 0, "dst": 1, "value": 21}, {"src": 0, "dst": 2, "value": 21}]}},
     "machine.smp", 2, "slit.distances", ["no distance between nodes 1 and 2", "QEMU needs every pair"]),
    ("slit-local-not-10", {**BASE, "slit": {"distances": [{"src": 1, "dst": 1, "value": 12}]}},
     "machine.smp", 2, "slit.distances[0].value", ["local distance of node 1 must be 10"]),
    ("hmat-missing-node", {**BASE, "hmat": {"links": [{"initiator": 0, "target": 4, "latency": 100}]}},
     "machine.smp", 2, "hmat.links[0].target", ["target node 4 does not exist"]),
    ("hmat-initiator-no-cpus", {**BASE, "hmat": {"links": [{"initiator": 1, "target": 1, "latency": 100}]}},
     "machine.smp", 2, "hmat.links[0].initiator", ["node 1 has no CPUs", "cannot be an HMAT initiator"]),
    ("hmat-memory-only-needs-initiator", {**BASE, "hmat": {"links": [{"initiator": 0, "target": 1, "latency": 100}]}},
     "nodes.1.initiator", DELETE, "nodes[1].initiator", ["needs an initiator when hmat is given", "add initiator: 0"]),
    ("device-on-missing-port", CXL, "cxl.devices.0.port", "rp9", "cxl.devices[0].port", ["port 'rp9' does not exist", "did you mean"]),
    ("two-devices-one-port", CXL, "cxl.devices.1.port", "rp0", "cxl.devices[1].port", ["already has device mem0 plugged in"]),
    ("bus-nr-collision", CXL, "cxl.host_bridges.1.bus_nr", 12, "cxl.host_bridges[1].bus_nr", ["bus_nr 12 is already used"]),
    ("bus-nr-too-close", CXL, "cxl.host_bridges.1.bus_nr", 13, "cxl.host_bridges[0].bus_nr", ["needs buses 12..14", "hb1 starts at bus 13"]),
    ("window-too-small", CXL, "guest.regions.0.devices", ["mem0"], None, None),  # placeholder replaced below
    ("window-ways-invalid", CXL, "cxl.windows.1.targets", ["hb0", "hb1", "hb0"], "cxl.windows[1].targets", ["listed twice"]),
    ("granularity-invalid", CXL, "cxl.windows.0.granularity", 300, "cxl.windows[0].granularity", ["300 is not valid", "power of two"]),
    ("window-size-not-multiple", CXL, "cxl.windows.1.size", "768M", "cxl.windows[1].size", ["not a multiple of 256M × 2 ways", "512M"]),
    ("device-size-not-256M", CXL, "cxl.devices.0.volatile", "100M", "cxl.devices[0].volatile", ["not a multiple of 256M"]),
    ("pmem-without-lsa", CXL, "cxl.devices.0.persistent", "256M", "cxl.devices[0].lsa", ["no label storage area", "lsa: 1M"]),
    ("window-unknown-target", CXL, "cxl.windows.0.targets", ["hb7"], "cxl.windows[0].targets[0]", ["host bridge 'hb7' does not exist"]),
    ("region-ways-no-encoding", CXL, "guest.regions.0.ways", 5, "guest.regions[0].ways", ["ways 5 has no CXL encoding", "ways_to_eiw"]),
    ("region-ways-3-two-devices", CXL, "guest.regions", [{"window": 1, "devices": ["mem0", "mem1"], "ways": 3}],
     "guest.regions[0].ways", ["ways is 3 but 2 devices are listed"]),
    ("switch-into-own-port", {**CXL, "cxl": {**CXL["cxl"], "switches": [{"id": "us0", "upstream": "dsp0", "downstream_ports": [{"id": "dsp0"}]}]}},
     "machine.smp", 2, "cxl.switches[0].upstream", ["switch us0 is plugged into its own downstream port 'dsp0'"]),
    ("switch-loop", {**CXL, "cxl": {**CXL["cxl"], "switches": [
        {"id": "us0", "upstream": "dsp1", "downstream_ports": [{"id": "dsp0"}]},
        {"id": "us1", "upstream": "dsp0", "downstream_ports": [{"id": "dsp1"}]}]}},
     "machine.smp", 2, "cxl.switches[0].upstream", ["us0 -> us1 -> us0", "loop"]),
    ("pci-driver-with-comma", {**BASE, "pci_devices": [{"id": "acc0", "driver": "edu,romfile=/x"}]},
     "machine.smp", 2, "pci_devices[0].driver", ["not a QEMU device model name"]),
    ("region-ways-mismatch", CXL, "guest.regions.0.ways", 2, "guest.regions[0].ways", ["ways is 2 but 1 devices are listed"]),
    ("region-device-not-under-window", CXL, "guest.regions.0.devices", ["mem1"], "guest.regions[0].devices[0]", ["under host bridge hb1", "window 0 does not target"]),
    ("region-ways-vs-window-ways", CXL, "guest.regions", [{"window": 1, "devices": ["mem0"]}], "guest.regions[0].ways", ["cannot spread over window 1's 2 host bridges"]),
    ("region-missing-window", CXL, "guest.regions.0.window", 5, "guest.regions[0].window", ["window 5 does not exist"]),
    ("reserved-qemu-id", CXL, "cxl.devices.1.id", "hqmp0", "cxl.devices[1].id", ["id 'hqmp0' is reserved by the harness"]),
    ("duplicate-qemu-id", CXL, "cxl.devices.1.id", "rp1", "cxl.devices[1].id", ["id 'rp1' is already used"]),
    ("private-node-needs-requires", BASE, "guest", {"private_nodes": [{"node": 1}]}, "requires", ["needs a patched kernel", "requires: [private-nodes]"]),
    ("expect-beyond-nodes", BASE, "expect", {"nodes": 2, "node": {3: {"memory": "1G"}}}, "expect.node.3", ["beyond the 2 nodes"]),
]
# A 1G window cannot hold a 2-device 1G region... build the window-too-small case explicitly:
_small = copy.deepcopy(CXL)
_small["cxl"]["devices"][0]["volatile"] = "2G"
_small["cxl"]["windows"][0]["size"] = "1G"
CASES[[c[0] for c in CASES].index("window-too-small")] = (
    "window-too-small", _small, "machine.smp", 2, "cxl.windows[0].size", ["window 0 (1G) is too small for its regions (2G)"])


@pytest.mark.parametrize("case_id,base,path,value,yaml_path,words", CASES, ids=[c[0] for c in CASES])
def test_bad_topology_is_named(case_id, base, path, value, yaml_path, words):
    doc = _set(base, path, value)
    with pytest.raises(TopologyError) as exc:
        parse(yaml.safe_dump(doc), "t.yaml")
    e = exc.value
    assert e.file == "t.yaml"
    assert e.path == yaml_path, str(e)
    for w in words:
        assert w in str(e), f"{w!r} not in {str(e)!r}"
    assert "\n" not in str(e)


def test_distinct_error_classes_are_many():
    assert len({c[0] for c in CASES}) >= 20


def test_bases_are_valid():
    parse(yaml.safe_dump(BASE), "base.yaml")
    parse(yaml.safe_dump(CXL), "cxl.yaml")


def test_yaml_syntax_error_names_line():
    with pytest.raises(TopologyError) as exc:
        parse("description: x\nnodes: [\n", "broken.yaml")
    assert "broken.yaml: line" in str(exc.value)
    assert "not valid YAML" in str(exc.value)


def test_top_level_must_be_mapping():
    with pytest.raises(TopologyError) as exc:
        parse("- a\n- b\n", "list.yaml")
    assert "expected a mapping" in str(exc.value)


# --- input that must be refused quickly, in one line, without a traceback -------------------

GOOD = "description: x\nnodes:\n  - {id: 0, cpus: 0-1, memory: 1G}\n"


def test_duplicate_key_names_both_lines():
    with pytest.raises(TopologyError) as exc:
        parse(GOOD + "nodes: []\n", "dup.yaml")
    assert str(exc.value).startswith("dup.yaml: line 4: key 'nodes' is given twice (lines 2 and 4)")


def test_duplicate_key_in_flow_mapping_names_columns():
    with pytest.raises(TopologyError) as exc:
        parse("description: x\nnodes:\n  - {id: 0, cpus: 0-1, memory: 1G, memory: 3G}\n", "dup.yaml")
    assert "key 'memory' is given twice (line 3, columns 24 and 36)" in str(exc.value)


def test_non_utf8_gives_the_byte_offset():
    with pytest.raises(TopologyError) as exc:
        parse(b"description: caf\xe9\n", "latin1.yaml")
    assert str(exc.value) == "latin1.yaml: line 1: not UTF-8: byte 0xe9 at offset 16 (save the file as UTF-8)"


def test_alias_bomb_is_refused_fast():
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    t0 = time.monotonic()
    with pytest.raises(TopologyError) as exc:
        parse("\n".join(lines) + "\n", "bomb.yaml")
    assert time.monotonic() - t0 < 1.0
    assert "YAML aliases expand to more than" in str(exc.value)


def test_huge_file_is_refused_without_reading_it(tmp_path):
    import time

    from harness.topology import load

    f = tmp_path / "huge.yaml"
    with f.open("wb") as fh:
        fh.truncate(50 << 20)  # a sparse 50 MiB file
    t0 = time.monotonic()
    with pytest.raises(TopologyError) as exc:
        load(f)
    assert time.monotonic() - t0 < 1.0
    assert "is 50.0 MiB; topology files are capped at 1 MiB" in str(exc.value)


def test_deep_nesting_is_refused():
    with pytest.raises(TopologyError) as exc:
        parse("[" * 100_000, "deep.yaml")
    assert "nested more than 64 levels deep" in str(exc.value)


def test_directory_is_called_a_directory(tmp_path):
    from harness.topology import load

    with pytest.raises(TopologyError) as exc:
        load(tmp_path)
    assert "is a directory, not a topology file" in str(exc.value)


def test_ways_and_port_names_with_brackets_survive(tmp_path):
    """Text in square brackets is data: the message keeps it (the CLI prints it without markup)."""
    doc = _set(CXL, "cxl.devices.0.port", "[rp0]")
    with pytest.raises(TopologyError) as exc:
        parse(yaml.safe_dump(doc), "t.yaml")
    assert "port '[rp0]' does not exist" in str(exc.value)
