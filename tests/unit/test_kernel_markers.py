"""harness.kernel.markers: requires_kconfig(...) markers read from test files without importing them."""

from harness.kernel.markers import requirements_in_source, scan_requires_kconfig

SOURCE = '''
import pytest
from pytest import mark

pytestmark = [pytest.mark.topology("cxl-single"), pytest.mark.requires_kconfig("CONFIG_CXL_REGION")]


@pytest.mark.requires_kconfig("CONFIG_DEV_DAX_KMEM", "MEMORY_HOTREMOVE")
def test_online(vm):
    pass


@mark.requires_kconfig()
def test_nothing_asked(vm):
    pass


class TestTier:
    @pytest.mark.requires_kconfig("CONFIG_ACPI_HMAT")
    def test_hmat(self, vm):
        pass
'''


def test_markers_with_their_tests_and_lines():
    reqs = requirements_in_source(SOURCE, "t.py")
    assert [(r.where, r.test, r.options) for r in reqs] == [
        ("t.py:5", "module", ("CONFIG_CXL_REGION",)),
        ("t.py:8", "test_online", ("CONFIG_DEV_DAX_KMEM", "CONFIG_MEMORY_HOTREMOVE")),
        ("t.py:19", "test_hmat", ("CONFIG_ACPI_HMAT",)),
    ]


def test_scan_reads_only_test_files_and_skips_broken_ones(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_a.py").write_text(SOURCE)
    (tmp_path / "helpers.py").write_text(SOURCE)
    (tmp_path / "test_broken.py").write_text("def (:\n")
    reqs = scan_requires_kconfig(tmp_path)
    assert {r.where.split(":")[0] for r in reqs} == {str(tmp_path / "sub" / "test_a.py")}
    assert len(reqs) == 3
