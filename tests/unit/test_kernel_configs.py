"""kernel-configs/numa-harness.config covers everything any preset needs from a kernel."""

from harness.kernel.config import parse_config
from harness.kernel.needs import guest_needs
from harness.resources import kernel_configs_dir
from harness.topology import load, preset_names


def test_fragment_covers_every_preset():
    fragment = parse_config((kernel_configs_dir() / "numa-harness.config").read_text())
    series = {**fragment, **parse_config((kernel_configs_dir() / "private-nodes.config").read_text())}
    for preset in preset_names():
        t = load(preset).topology
        for opt, want in guest_needs(t).config.items():
            # a preset needing the private-node series needs the private-nodes fragment as well
            have = (series if "private-nodes" in t.requires else fragment).get(opt)
            assert have == "y" or (want == "m" and have == "m"), f"{preset} needs {opt}={want}; fragment has {have}"
