"""kernel-configs/numa-harness.config covers everything any preset needs from a kernel."""

from harness.kernel.config import parse_config
from harness.kernel.needs import guest_needs
from harness.resources import kernel_configs_dir
from harness.topology import load, preset_names


def test_fragment_covers_every_preset():
    fragment = parse_config((kernel_configs_dir() / "numa-harness.config").read_text())
    for preset in preset_names():
        for opt, want in guest_needs(load(preset).topology).config.items():
            have = fragment.get(opt)
            assert have == "y" or (want == "m" and have == "m"), f"{preset} needs {opt}={want}; fragment has {have}"
