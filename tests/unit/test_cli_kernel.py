"""`harness kernel check` and `harness kernel fragments` (no kernel build, no guest)."""

from pathlib import Path

import pytest
from rich.console import Console

from harness.cli import kernel as cli_kernel
from harness.cli.kernel import fragment_summary
from harness.cli.main import main

BUILT = Path(__file__).parent / "data" / "kbuild" / "config-6.12.117-base-numa-cxl"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli_kernel, "out", Console(width=250, highlight=False))


def test_check_a_built_config_against_presets(capsys):
    assert main(["kernel", "check", "--kernel-config", str(BUILT), "cxl-single", "tiered-3"]) == 0
    out = capsys.readouterr().out
    assert "cxl-single" in out and "recommended" not in out  # it has CXL_REGION_INVALIDATION_TEST


def test_check_names_missing_options_and_marker_requirements(tmp_path, capsys):
    cfg = tmp_path / "config"
    cfg.write_text("\n".join(ln for ln in BUILT.read_text().splitlines()
                             if not ln.startswith(("CONFIG_CXL_REGION=", "CONFIG_CXL_REGION_INVALIDATION_TEST="))))
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_x.py").write_text('import pytest\n\n@pytest.mark.requires_kconfig("CONFIG_KASAN")\n'
                                     'def test_x():\n    pass\n')
    assert main(["kernel", "check", "--kernel-config", str(cfg), "cxl-single", "--tests", str(tests)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "CONFIG_CXL_REGION is not set (need y)" in out
    assert "CONFIG_KASAN is not set (need y or m)" in out and "test_x" in out


def test_fragment_summary():
    text = '# numa-harness fragment "x": what it is,\n# over two lines. More.\n\nCONFIG_A=y\n'
    assert fragment_summary(text) == "what it is, over two lines"
