"""harness.kernel.build: fragment resolution, build plan, what did not survive olddefconfig and why.

The Kconfig files and the final .config under data/kbuild/ are real: copied from
linux-source-6.12 (6.12.117) and from `harness kernel build --fragment numa --fragment cxl`
of it (defconfig + base + numa + cxl, after olddefconfig).
"""

from pathlib import Path

import pytest

from harness.errors import KernelError
from harness.kernel import build as kb
from harness.kernel import kconfig as kc
from harness.kernel.config import parse_config
from harness.kernel.needs import BASE_CONFIG, guest_needs
from harness.resources import kernel_configs_dir
from harness.topology import load, preset_names

DATA = Path(__file__).parent / "data" / "kbuild"
FINAL = parse_config((DATA / "config-6.12.117-base-numa-cxl").read_text())


def kconfig() -> dict[str, kc.KconfigEntry]:
    entries: dict[str, kc.KconfigEntry] = {}
    for name, rel in (("drivers-cxl-Kconfig", "drivers/cxl/Kconfig"), ("drivers-dax-Kconfig", "drivers/dax/Kconfig"),
                      ("mm-Kconfig", "mm/Kconfig")):
        kc.parse_kconfig((DATA / name).read_text(), rel, entries)
    return entries


# --- fragments --------------------------------------------------------------------


def test_base_comes_first_and_duplicates_are_dropped():
    paths = kb.resolve_fragments(["numa", "cxl", "numa", "base"])
    assert [p.stem for p in paths] == ["base", "numa", "cxl"]
    assert kb.resolve_fragments(["cxl"], with_base=False)[0].stem == "cxl"


def test_a_user_fragment_file_is_accepted(tmp_path):
    mine = tmp_path / "mine.config"
    mine.write_text("CONFIG_KSM=y\n")
    assert kb.resolve_fragments([str(mine)])[-1] == mine.resolve()


def test_an_unknown_fragment_names_the_known_ones():
    with pytest.raises(KernelError) as e:
        kb.resolve_fragments(["cxxl"])
    assert "cxxl" in str(e.value) and "cxl" in (e.value.hint or "")


def test_later_fragments_win_and_not_set_means_n():
    req = kb.requested_options(["CONFIG_A=y\nCONFIG_B=m\n", "# CONFIG_A is not set\nCONFIG_S=\"x y\"\n"])
    assert req == {"CONFIG_A": "n", "CONFIG_B": "m", "CONFIG_S": "x y"}


def test_every_shipped_fragment_parses_and_names_only_config_options():
    for name in kb.available_fragments():
        text = (kernel_configs_dir() / f"{name}.config").read_text()
        opts = kb.parse_fragment(text)
        assert opts, name
        stray = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#") and not ln.startswith("CONFIG_")]
        assert not stray, f"{name}: {stray}"


def test_issue_fragments_exist():
    assert {"base", "numa", "cxl", "tiering", "debug", "kasan", "selftests", "private-nodes"} <= set(
        kb.available_fragments())


def test_base_fragment_covers_what_the_harness_needs_from_any_kernel():
    base = kb.parse_fragment((kernel_configs_dir() / "base.config").read_text())
    for opt, (want, _why) in BASE_CONFIG.items():
        assert base.get(opt) == "y" or (want == "m" and base.get(opt) == "m"), opt


def test_base_numa_cxl_build_covers_every_preset():
    """The build the README describes (base + numa + cxl) boots every preset."""
    req = kb.requested_options((kernel_configs_dir() / f"{n}.config").read_text() for n in ("base", "numa", "cxl"))
    series = {**req, **kb.parse_fragment((kernel_configs_dir() / "private-nodes.config").read_text())}
    for preset in preset_names():
        t = load(preset).topology
        if "private-nodes" in t.requires:   # built with --fragment private-nodes too (README)
            req_t = series
        else:
            req_t = req
        for opt, want in guest_needs(t).config.items():
            have = req_t.get(opt)
            assert have == "y" or (want == "m" and have == "m"), f"{preset} needs {opt}={want}"


#: Options a preset needs that were added to the fragments after the recorded build was made.
AFTER_RECORDED_BUILD = {("memmap-kmem", "CONFIG_X86_PMEM_LEGACY")}


def test_the_real_build_kept_every_option_the_presets_need():
    for preset in preset_names():
        if "private-nodes" in load(preset).topology.requires:
            continue   # the recorded build is stock 6.12: the series' presets need a series build
        for opt, want in guest_needs(load(preset).topology).config.items():
            if (preset, opt) in AFTER_RECORDED_BUILD:
                continue
            have = FINAL.get(opt)
            assert have == "y" or (want == "m" and have == "m"), f"{preset} needs {opt}={want}, built {have}"
    assert FINAL["CONFIG_CXL_REGION_INVALIDATION_TEST"] == "y"


# --- plan -------------------------------------------------------------------------


def test_build_key_depends_on_source_and_fragment_order():
    a, b = Path("/src/a"), Path("/src/b")
    f = [Path("/c/base.config"), Path("/c/numa.config")]
    assert kb.build_key(a, f) == kb.build_key(a, list(f))
    assert kb.build_key(a, f) != kb.build_key(b, f)
    assert kb.build_key(a, f) != kb.build_key(a, f[::-1])
    assert len(kb.build_key(a, f)) == 16


def test_plan_is_defconfig_merge_olddefconfig_then_the_compile():
    src, out = Path("/k"), Path("/cache/builds/x")
    frags = [Path("/c/base.config"), Path("/c/cxl.config")]
    steps = kb.plan_build(src, out, frags, jobs=2)
    assert [s.argv for s in steps] == [
        ["make", "-C", "/k", "O=/cache/builds/x", "defconfig"],
        ["/k/scripts/kconfig/merge_config.sh", "-m", "-O", "/cache/builds/x", "/cache/builds/x/.config",
         "/c/base.config", "/c/cxl.config"],
        ["make", "-C", "/k", "O=/cache/builds/x", "olddefconfig"],
        ["make", "-C", "/k", "O=/cache/builds/x", "-j2", "bzImage", "modules"],
    ]
    assert steps[1].env == {"KCONFIG_CONFIG": "/cache/builds/x/.config"}
    assert [s.long for s in steps] == [False, False, False, True]


# --- what did not survive ---------------------------------------------------------


def test_did_not_survive_compares_like_the_boot_check():
    requested = {"CONFIG_A": "m", "CONFIG_B": "y", "CONFIG_C": "n", "CONFIG_D": "y", "CONFIG_E": "64", "CONFIG_F": "n"}
    final = {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "y", "CONFIG_E": "6"}
    lost = kb.did_not_survive(requested, final)
    assert [(x.option, x.requested, x.actual) for x in lost] == [
        ("CONFIG_B", "y", "m"), ("CONFIG_C", "n", "y"), ("CONFIG_D", "y", None), ("CONFIG_E", "64", "6")]
    assert lost[2].line() == "CONFIG_D: requested y, got not set"


def test_selftests_request_on_the_real_build_is_lost_with_its_reason():
    """selftests.config asks for HWPOISON_INJECT=m; without MEMORY_FAILURE it cannot survive."""
    entries = kconfig()
    lost = kb.did_not_survive({"CONFIG_HWPOISON_INJECT": "m", "CONFIG_CXL_REGION": "y"}, FINAL)
    assert [(x.option, x.actual) for x in lost] == [("CONFIG_HWPOISON_INJECT", None)]
    assert kc.explain("CONFIG_HWPOISON_INJECT", entries, FINAL, "m") == "mm/Kconfig: unmet dependency MEMORY_FAILURE"


def test_explain_names_the_unmet_dependency_from_real_kconfig():
    entries = kconfig()
    final = {k: v for k, v in FINAL.items() if k != "CONFIG_CXL_REGION"}
    assert kc.explain("CONFIG_CXL_REGION_INVALIDATION_TEST", entries, final, "y") == \
        "drivers/cxl/Kconfig: unmet dependency CXL_REGION"
    # the enclosing `if CXL_BUS` block counts as a dependency too
    assert "CXL_BUS" in entries["CXL_REGION_INVALIDATION_TEST"].depends


def test_explain_says_when_dependencies_cap_an_option_at_m():
    entries = kconfig()
    # DEV_DAX_CXL depends on CXL_REGION && DEV_DAX; DEV_DAX is m in the real build
    assert FINAL["CONFIG_DEV_DAX"] == "m"
    assert kc.explain("CONFIG_DEV_DAX_CXL", entries, FINAL, "y").startswith("drivers/dax/Kconfig: limited to m by")


def test_explain_an_option_absent_from_the_tree():
    assert kc.explain("CONFIG_CXL_MEMPOLICY", kconfig(), FINAL, "m") == "no such option in this tree's Kconfig"


def test_explain_an_option_asked_off_but_selected():
    entries = kconfig()
    why = kc.explain("CONFIG_MIGRATION", entries, FINAL, "n")
    assert why.startswith("mm/Kconfig: selected by") or why.startswith("mm/Kconfig: set by")


def test_help_text_saying_depends_on_is_not_a_dependency():
    text = "config A\n\tbool \"a\"\n\tdepends on B\n\thelp\n\t  This depends on C in prose.\n\nconfig C\n\tbool\n"
    e = kc.parse_kconfig(text)
    assert e["A"].depends == ["B"]


def test_menu_and_if_blocks_add_dependencies():
    text = ("menu \"x\"\n\tdepends on M\n\nif I\nconfig A\n\ttristate \"a\"\n\tselect S if Q\nendif\n"
            "endmenu\nconfig B\n\tbool\n")
    e = kc.parse_kconfig(text)
    assert e["A"].depends == ["M", "I"]
    assert e["B"].depends == []
    assert e["S"].selected_by == ["A if Q"]


@pytest.mark.parametrize("expr,cfg,want", [
    ("A && B", {"CONFIG_A": "y", "CONFIG_B": "m"}, 1),
    ("A || B", {"CONFIG_A": "y"}, 2),
    ("!A", {"CONFIG_A": "m"}, 1),
    ("!A", {}, 2),
    ("X86_64 && (NUMA || B) && !C", {"CONFIG_X86_64": "y", "CONFIG_NUMA": "y"}, 2),
    ("A=y", {"CONFIG_A": "y"}, 2),
    ("A!=n", {}, 0),
    ("A || m", {}, 1),
])
def test_kconfig_expressions(expr, cfg, want):
    assert kc.eval_kconfig_expr(expr, cfg) == want


def test_a_broken_expression_is_an_error():
    with pytest.raises(ValueError):
        kc.eval_kconfig_expr("(A && B", {})


# --- progress and logs ------------------------------------------------------------


def test_make_action_on_real_make_output():
    lines = (DATA / "make-output.log").read_text().splitlines(keepends=True)
    actions = [a for a in map(kb.make_action, lines) if a]
    assert "SYNC include/config/auto.conf.cmd" in actions
    assert "HOSTCC arch/x86/tools/relocs_32.o" in actions
    assert kb.make_action("make[1]: Entering directory '/x'\n") is None
    assert kb.make_action("  CC [M]  drivers/cxl/core/region.o\n") == "CC [M] drivers/cxl/core/region.o"


def test_error_excerpt_prefers_error_lines():
    log = "  CC a.o\nmm/x.c:3:1: error: expected ';'\nmake[2]: *** [x.o] Error 1\n  CC b.o\n"
    assert kb.error_excerpt(log) == "mm/x.c:3:1: error: expected ';'\nmake[2]: *** [x.o] Error 1"
    assert kb.error_excerpt("a\nb\n", limit=1) == "b"


def test_run_logged_appends_output_and_reports_failure(tmp_path):
    log = tmp_path / "log"
    seen: list[str] = []
    kb.run_logged(["sh", "-c", "echo one; echo two"], log, timeout=30, what="echo", on_line=seen.append)
    assert seen == ["one\n", "two\n"] and "one\ntwo\n" in log.read_text()
    with pytest.raises(KernelError) as e:
        kb.run_logged(["sh", "-c", "echo 'x.c: error: boom'; exit 3"], log, timeout=30, what="boom")
    assert "exit code 3" in str(e.value) and "error: boom" in (e.value.detail or "")


def test_run_logged_kills_a_command_that_overruns(tmp_path):
    with pytest.raises(KernelError, match="did not finish"):
        kb.run_logged(["sleep", "30"], tmp_path / "log", timeout=0.5, what="sleep")


def test_a_directory_that_is_not_a_kernel_tree_is_refused(tmp_path):
    with pytest.raises(KernelError, match="not a kernel source tree"):
        kb.check_build_host(tmp_path)


def test_base_numa_cxl_is_a_superset_of_numa_harness_config():
    req = kb.requested_options((kernel_configs_dir() / f"{n}.config").read_text() for n in ("base", "numa", "cxl"))
    old = kb.parse_fragment((kernel_configs_dir() / "numa-harness.config").read_text())
    assert not kb.did_not_survive(old, req)


def test_explain_soft_dirty_on_defconfig():
    """Seen for real: selftests.config asked for MEM_SOFT_DIRTY without CHECKPOINT_RESTORE."""
    assert "CONFIG_CHECKPOINT_RESTORE" not in FINAL
    assert kc.explain("CONFIG_MEM_SOFT_DIRTY", kconfig(), FINAL, "y") == \
        "mm/Kconfig: unmet dependency CHECKPOINT_RESTORE"
    assert "CONFIG_CHECKPOINT_RESTORE" in kb.parse_fragment((kernel_configs_dir() / "selftests.config").read_text())
