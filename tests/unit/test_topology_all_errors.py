"""Every mistake in a file at once, each at its line and column (editors' quickfix form)."""

from __future__ import annotations

import pytest

from harness.cli.main import main
from harness.errors import TopologyError
from harness.topology import parse

# Line numbers below are 1-based, as editors count them.
SEVERAL = """\
description: several mistakes
machine:
  smp: 2
nodes:
  - id: 0
    cpus: 0-3
    memory: 1G
  - id: 1
    memory: 1G
    initiator: 0
slit:
  distances:
    - {src: 1, dst: 1, value: 12}
hmat:
  links:
    - {initiator: 0, target: 1, latency: -5}
    - {initiator: 0, target: 7, latency: 10}
"""


def test_every_cross_field_mistake_is_listed_with_line_and_column():
    with pytest.raises(TopologyError) as exc:
        parse(SEVERAL, "several.yaml")
    found = [(i.line, i.column, i.path) for i in exc.value.issues]
    assert found == [
        (6, 11, "nodes[0].cpus"),
        (13, 31, "slit.distances[0].value"),
        (16, 42, "hmat.links[0].latency"),
        (17, 30, "hmat.links[1].target"),
    ]
    assert "raise machine.smp to 4" in exc.value.issues[0].quickfix()  # 0-3 needs 4 vCPUs, not 3
    assert str(exc.value).startswith("several.yaml:6:11: nodes[0].cpus: CPUs 2-3 do not exist")
    assert "3 more errors: harness validate several.yaml lists them all" in str(exc.value)


STRUCTURAL = """\
description: typos
nodes:
  - id: 0
    cpus: 0-1
    memory: 1 GB
  - id: 1
    memroy: 1G
    backend: memdf
hmta: {}
"""


def test_every_key_and_value_mistake_is_listed_keys_at_the_key():
    with pytest.raises(TopologyError) as exc:
        parse(STRUCTURAL, "typos.yaml")
    got = [(i.line, i.column, i.path) for i in exc.value.issues]
    assert got == [(9, 1, "hmta"), (5, 13, "nodes[0].memory"), (7, 5, "nodes[1].memroy"), (8, 14, "nodes[1].backend")]


def test_validate_prints_each_in_quickfix_form(tmp_path, capsys):
    f = tmp_path / "several.yaml"
    f.write_text(SEVERAL)
    assert main(["validate", str(f)]) == 125
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"{f}:6:11: error: nodes[0].cpus: CPUs 2-3 do not exist")
    assert lines[3].startswith(f"{f}:17:30: error: hmat.links[1].target: target node 7 does not exist")


def test_yaml_syntax_error_is_one_quickfix_line(tmp_path, capsys):
    f = tmp_path / "broken.yaml"
    f.write_text("description: x\nnodes: [\n")
    assert main(["validate", str(f)]) == 125
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{f}:3:1: error: not valid YAML")


MERGED = """\
description: merge keys
nodes:
  - &cpu_node {id: 0, cpus: 0-1, memory: 1G}
  - <<: *cpu_node
    id: 1
    cpus: null
    initiator: 0
    memory: 512M
hmat: {links: [{initiator: 0, target: 1, latency: 20}]}
"""


def test_merge_keys_work_and_a_bad_merge_is_our_one_line():
    """Merge keys are read as PyYAML merges them; the mapping's own keys win and are located
    where they are written. Merging a non-mapping is our one line, not PyYAML's."""
    topo = parse(MERGED, "m.yaml")
    assert [(n.id, n.memory) for n in topo.nodes] == [(0, 1 << 30), (1, 512 << 20)]
    with pytest.raises(TopologyError) as exc:
        parse(MERGED.replace("memory: 512M", "memory: 512 M"), "m.yaml")
    assert [(i.line, i.column, i.path) for i in exc.value.issues] == [(8, 13, "nodes[1].memory")]
    with pytest.raises(TopologyError) as exc:
        parse("description: m\nnodes:\n  - {<<: 5, id: 0, cpus: 0-1, memory: 1G}\n", "m.yaml")
    e = exc.value
    assert "'<<:' merges a mapping into this one, and this is not a mapping" in str(e)
    assert "constructor" not in str(e) and "\n" not in str(e)
    assert (e.issues[0].line, e.issues[0].column) == (3, 10)  # the 5
