"""The hypervisor CPUID bit is hidden under TCG only for kernels that need it (no
CONFIG_CXL_REGION_INVALIDATION_TEST): their CXL region commit fails with it visible."""

from pathlib import Path

from harness.boot.prepare import cxl_commits_under_hypervisor
from harness.kernel.model import Kernel
from harness.qemu.argv import machine_argv
from harness.topology import load

BUILT = Path(__file__).parent / "data" / "kbuild" / "config-6.12.117-base-numa-cxl"


def cpu(argv: list[str]) -> str:
    return argv[argv.index("-cpu") + 1]


def kernel(config: Path | None) -> Kernel:
    return Kernel(image=Path("/nonexistent/bzImage"), config=config, modules_root=None, release="6.12", origin="t")


def test_tcg_keeps_the_bit_when_asked():
    t = load("cxl-single").topology
    assert cpu(machine_argv(t, accel="tcg")) == "max,-hypervisor"
    assert cpu(machine_argv(t, accel="tcg", hide_hypervisor=False)) == "max"
    assert cpu(machine_argv(t, accel="kvm", hide_hypervisor=True)) == "max"


def test_only_a_kernel_built_with_the_invalidation_test_option_keeps_it(tmp_path):
    assert cxl_commits_under_hypervisor(kernel(BUILT))          # harness kernel build --fragment cxl
    stock = tmp_path / "config"
    stock.write_text("CONFIG_CXL_REGION=y\n# CONFIG_CXL_REGION_INVALIDATION_TEST is not set\n")
    assert not cxl_commits_under_hypervisor(kernel(stock))
    assert not cxl_commits_under_hypervisor(kernel(None))      # unknown config: keep the trick
    assert not cxl_commits_under_hypervisor(kernel(tmp_path / "missing"))
