"""kernel-configs/numa-harness.config covers everything any preset needs from a kernel."""

from harness.guest_needs import guest_needs
from harness.kernel import parse_config
from harness.paths import KERNEL_CONFIGS_DIR
from harness.topology import load, preset_names


def test_fragment_covers_every_preset():
    fragment = parse_config((KERNEL_CONFIGS_DIR / "numa-harness.config").read_text())
    for preset in preset_names():
        for opt, want in guest_needs(load(preset).topology).config.items():
            have = fragment.get(opt)
            assert have == "y" or (want == "m" and have == "m"), f"{preset} needs {opt}={want}; fragment has {have}"
