"""The kernel's CXL region rules (drivers/cxl/core/region.c), applied before boot.

Each rule has a refused case whose message is checked, and an accepted case
next to it; tests/live/test_region_forms_live.py proves accepted forms commit.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from harness.errors import TopologyError
from harness.topology import parse

# Three host bridges: hb0 (rp0, rp1), hb1 (rp2, rp3), hb2 (rp4); one device per root port.
# Windows: 0 = 2-way over hb0/hb1, 1 = 3-way over all three, 2 = hb0 alone.
THREE = {
    "description": "three host bridges",
    "machine": {"smp": 2},
    "nodes": [{"id": 0, "cpus": "0-1", "memory": "1G"}],
    "cxl": {
        "host_bridges": [
            {"id": "hb0", "bus_nr": 12, "root_ports": [{"id": "rp0"}, {"id": "rp1"}]},
            {"id": "hb1", "bus_nr": 40, "root_ports": [{"id": "rp2"}, {"id": "rp3"}]},
            {"id": "hb2", "bus_nr": 80, "root_ports": [{"id": "rp4"}]},
        ],
        "devices": [{"id": "m0", "port": "rp0", "volatile": "256M"}, {"id": "m1", "port": "rp2", "volatile": "256M"},
                    {"id": "m2", "port": "rp4", "volatile": "256M"}, {"id": "m3", "port": "rp1", "volatile": "256M"},
                    {"id": "m4", "port": "rp3", "volatile": "256M"}],
        "windows": [{"targets": ["hb0", "hb1"], "size": "4G"}, {"targets": ["hb0", "hb1", "hb2"], "size": "3G"},
                    {"targets": ["hb0"], "size": "4G"}],
    },
}


def topo(regions: list[dict], **window0) -> dict:
    doc = copy.deepcopy(THREE)
    doc["cxl"]["windows"][0].update(window0)
    doc["guest"] = {"regions": regions}
    return doc


def refused(doc: dict) -> TopologyError:
    with pytest.raises(TopologyError) as exc:
        parse(yaml.safe_dump(doc), "t.yaml")
    assert "\n" not in str(exc.value)
    return exc.value


def accepted(doc: dict) -> None:
    parse(yaml.safe_dump(doc), "t.yaml")


def test_positions_follow_the_windows_host_bridge_order():
    # cxl_region_attach_position(): position p must be under window target p % ways.
    e = refused(topo([{"window": 0, "devices": ["m1", "m0"]}]))
    assert e.path == "guest.regions[0].devices[0]"
    assert "position 0 is 'm1' under host bridge hb1, but window 0 sends position 0 to hb0" in str(e)
    assert "list them as [m0, m1]" in str(e)
    accepted(topo([{"window": 0, "devices": ["m0", "m1"]}]))


def test_interleaved_window_fixes_the_region_granularity():
    # interleave_granularity_store(): window ways > 1 -> region granularity == window granularity.
    e = refused(topo([{"window": 0, "devices": ["m0", "m1"]}], granularity="8K"))
    assert e.path == "guest.regions[0].granularity"
    assert "region granularity 256 differs from window 0's 8K" in str(e) and "set granularity: 8K" in str(e)
    accepted(topo([{"window": 0, "devices": ["m0", "m1"], "granularity": "8K"}], granularity="8K"))


def test_single_bridge_window_lets_the_region_choose_its_granularity():
    accepted(topo([{"window": 2, "devices": ["m0", "m3"], "granularity": "4K"}]))


def test_every_window_target_needs_its_share_of_devices():
    e = refused(topo([{"window": 0, "devices": ["m0", "m3"]}]))
    assert e.path == "guest.regions[0].devices"
    assert "needs 1 device under each; hb1 has 0" in str(e)


def test_two_devices_under_one_bridge_of_a_two_bridge_window():
    # Accepted when they sit two positions apart (hb0, hb1, hb0, hb1) ...
    accepted(topo([{"window": 0, "devices": ["m0", "m1", "m3", "m4"]}]))
    # ... refused next to each other, with the order that works.
    e = refused(topo([{"window": 0, "devices": ["m0", "m3", "m1", "m4"]}]))
    assert e.path == "guest.regions[0].devices[1]"
    assert "position 1 is 'm3' under host bridge hb0" in str(e)
    assert "list them as [m0, m1, m3, m4]" in str(e)


def test_three_way_window_and_region_are_accepted():
    accepted(topo([{"window": 1, "devices": ["m0", "m1", "m2"]}]))


def test_three_ways_with_two_devices_blames_the_count():
    e = refused(topo([{"window": 1, "devices": ["m0", "m1"], "ways": 3}]))
    assert e.path == "guest.regions[0].ways"
    assert "ways is 3 but 2 devices are listed" in str(e)
    assert "power of two" not in str(e)


def test_region_ways_must_be_window_ways_times_a_power_of_two():
    # interleave_ways_store(): 2 devices cannot spread over a 3-bridge window.
    e = refused(topo([{"window": 1, "devices": ["m0", "m1"]}]))
    assert e.path == "guest.regions[0].ways"
    assert "2 ways cannot spread over window 1's 3 host bridges" in str(e)
    assert "3, 6, 12" in str(e)


@pytest.mark.parametrize("ways", [1, 2, 3, 4, 6, 8, 12, 16])
def test_every_cxl_ways_encoding_is_accepted_for_windows(ways):
    doc = copy.deepcopy(THREE)
    doc["cxl"]["host_bridges"] = [{"id": f"h{i}", "bus_nr": 10 + 10 * i, "root_ports": [{"id": f"r{i}"}]} for i in range(ways)]
    doc["cxl"]["devices"] = [{"id": f"d{i}", "port": f"r{i}", "volatile": "256M"} for i in range(ways)]
    doc["cxl"]["windows"] = [{"targets": [f"h{i}" for i in range(ways)], "size": f"{ways}G"}]
    doc["guest"] = {"regions": [{"window": 0, "devices": [f"d{i}" for i in range(ways)]}]}
    accepted(doc)


@pytest.mark.parametrize("ways", [5, 7, 9, 10, 11, 13, 14, 15])
def test_ways_without_encoding_are_refused_for_windows(ways):
    doc = copy.deepcopy(THREE)
    doc["cxl"]["host_bridges"] = [{"id": f"h{i}", "bus_nr": 10 + 10 * i, "root_ports": [{"id": f"r{i}"}]} for i in range(ways)]
    doc["cxl"]["devices"] = []
    doc["cxl"]["windows"] = [{"targets": [f"h{i}" for i in range(ways)], "size": f"{ways}G"}]
    e = refused(doc)
    assert e.path == "cxl.windows[0].targets" and f"{ways} targets is not a valid interleave ways count" in str(e)


def _switch_doc(n: int, gran: str, window_gran: int | str = 256) -> dict:
    """One host bridge, one root port, a switch with n downstream ports and a device on each."""
    doc = copy.deepcopy(THREE)
    doc["cxl"]["host_bridges"] = [{"id": "hb0", "bus_nr": 12, "root_ports": [{"id": "rp0"}]}]
    doc["cxl"]["switches"] = [{"id": "us0", "upstream": "rp0", "downstream_ports": [{"id": f"dsp{i}"} for i in range(n)]}]
    doc["cxl"]["devices"] = [{"id": f"d{i}", "port": f"dsp{i}", "volatile": "256M"} for i in range(n)]
    doc["cxl"]["windows"] = [{"targets": ["hb0"], "size": "8G", "granularity": window_gran}]
    doc["guest"] = {"regions": [{"window": 0, "devices": [f"d{i}" for i in range(n)], "granularity": gran}]}
    return doc


def test_decoder_address_bits_are_checked():
    # check_interleave_cap(): an 8-way endpoint decoder at 8K would need address bit 15;
    # QEMU's HDM decoders interleave on bits 8..14.
    e = refused(_switch_doc(8, "8K"))
    assert e.path == "guest.regions[0].granularity"
    assert "needs address bits 13..15" in str(e) and "check_interleave_cap" in str(e)
    accepted(_switch_doc(8, "4K"))


def test_host_bridge_decoder_granularity_cannot_exceed_16k():
    # cxl_port_setup_targets(): a host bridge's granularity is the region's x the window's ways.
    e = refused(topo([{"window": 0, "devices": ["m0", "m1"], "granularity": "16K"}], granularity="16K"))
    assert "hb0's decoder would need granularity 32K" in str(e) and "cxl_port_setup_targets" in str(e)
