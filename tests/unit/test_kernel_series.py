"""harness.kernel.series: `harness kernel build --apply` on a small git tree of its own.

The tree is a tiny fake "kernel" made in tmp_path; the series are made from it with
git format-patch: one that applies as it stands, one that needs git am's 3-way fallback
(its context changed underneath it), and one that cannot apply (its lines changed).
"""

import subprocess
from pathlib import Path

import pytest

from harness.errors import KernelError
from harness.kernel import build as kb
from harness.kernel import series as ks

LINES = [f"line {i}\n" for i in range(1, 31)]
ID = ["-c", "user.name=t", "-c", "user.email=t@t"]


def git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *ID, *args], check=True, capture_output=True, text=True).stdout


def write(tree: Path, rel: str, lines: list[str]) -> None:
    (tree / rel).parent.mkdir(parents=True, exist_ok=True)
    (tree / rel).write_text("".join(lines))


def edit(lines: list[str], n: int, text: str) -> list[str]:
    out = list(lines)
    out[n - 1] = text + "\n"
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A git tree on branch `mine` (base: mm/a.c, mm/b.c), with series made from a sibling branch."""
    t = tmp_path / "linux"
    t.mkdir()
    git(t, "init", "-q", "-b", "mine")
    write(t, "mm/a.c", LINES)
    write(t, "mm/b.c", LINES)
    write(t, "Makefile", ["all:\n"])
    git(t, "add", "-A")
    git(t, "commit", "-q", "-m", "base")
    git(t, "tag", "base")
    # the series, written against `base`
    git(t, "checkout", "-q", "-b", "upstream")
    write(t, "mm/a.c", edit(LINES, 10, "line 10 changed by patch 1"))
    git(t, "commit", "-q", "-am", "mm/a: change line 10")
    write(t, "mm/b.c", edit(LINES, 20, "line 20 changed by patch 2"))
    git(t, "commit", "-q", "-am", "mm/b: change line 20")
    write(t, "mm/c.c", ["new file\n"])
    git(t, "add", "mm/c.c")
    git(t, "commit", "-q", "-m", "mm/c: add a file")
    git(t, "format-patch", "-q", "--cover-letter", "-o", str(tmp_path / "series"), "base..upstream")
    (tmp_path / "series.mbox").write_text(git(t, "format-patch", "--stdout", "base..upstream"))
    git(t, "checkout", "-q", "mine")
    return t


def test_a_directory_of_numbered_patches_is_read_in_order_without_the_cover_letter(tree, tmp_path):
    names = [p.name for p in ks.series_files([tmp_path / "series"])]
    assert names[0].startswith("0000-cover-letter")
    patches = ks.read_series([tmp_path / "series"])
    assert [p.subject for p in patches] == ["mm/a: change line 10", "mm/b: change line 20",
                                            "mm/c: add a file"]
    assert ks.series_hash(patches) == ks.series_hash(ks.read_series([tmp_path / "series.mbox"]))


def test_a_series_applies_onto_a_new_branch_and_the_users_branch_stays(tree, tmp_path):
    mine = git(tree, "rev-parse", "mine").strip()
    seen: list[str] = []
    r = ks.apply_series(tree, [tmp_path / "series.mbox"], copy_to=tmp_path / "copy",
                        on_patch=lambda p: seen.append(p.status))
    assert r.ok and seen == ["applied"] * 3
    assert [p.status for p in r.patches] == ["applied"] * 3
    assert r.branch.startswith(ks.BRANCH_PREFIX) and r.previous == "mine" and r.base == mine
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD").strip() == r.branch
    assert git(tree, "rev-parse", "mine").strip() == mine          # the user's branch did not move
    assert (tree / "mm/c.c").read_text() == "new file\n"
    assert len(git(tree, "log", "--oneline", f"{mine}..HEAD").splitlines()) == 3
    # the same series again (from its own branch) reuses the branch, applies nothing twice
    again = ks.apply_series(tree, [tmp_path / "series"], copy_to=tmp_path / "copy")
    assert again.reused and again.branch == r.branch and again.base == mine


def test_a_patch_whose_context_moved_applies_with_a_3way_merge(tree, tmp_path):
    # line 8 is inside patch 1's context (lines 7-9 around line 10): git apply refuses it as it stands
    write(tree, "mm/a.c", edit(LINES, 8, "line 8 changed on my branch"))
    git(tree, "commit", "-q", "-am", "my change near line 10")
    r = ks.apply_series(tree, [tmp_path / "series.mbox"], copy_to=tmp_path / "copy")
    assert [p.status for p in r.patches] == ["3-way", "applied", "applied"]
    assert r.patches[0].files == ["mm/a.c"]
    assert "3-way merge" in r.patches[0].line()
    text = (tree / "mm/a.c").read_text()
    assert "line 8 changed on my branch" in text and "line 10 changed by patch 1" in text


def test_a_failing_patch_stops_with_one_line_and_its_rejected_hunks_kept(tree, tmp_path):
    write(tree, "mm/b.c", edit(LINES, 20, "line 20 changed differently on my branch"))
    git(tree, "commit", "-q", "-am", "my own line 20")
    mine = git(tree, "rev-parse", "mine").strip()
    with pytest.raises(ks.SeriesError) as ei:
        ks.apply_series(tree, [tmp_path / "series"], copy_to=tmp_path / "copy")
    e = ei.value
    assert [p.status for p in e.result.patches] == ["applied", "failed", "not tried"]
    assert e.failed.number == 2 and e.failed.files == ["mm/b.c"]
    assert e.failed.hunks == ["mm/b.c hunk #1"] and e.failed.rejects == ["mm/b.c.rej"]
    assert "\n" not in e.message
    assert e.message.startswith("patch 2/3 does not apply") and "mm/b.c hunk #1" in e.message
    assert (tree / "mm/b.c.rej").is_file() and "line 20 changed by patch 2" in (tree / "mm/b.c.rej").read_text()
    assert str(tree / "mm/b.c.rej") in (e.detail or "")
    saved = Path((e.detail or "").split("failing patch saved as: ")[1].strip())
    assert saved.is_file() and "mm/b: change line 20" in saved.read_text()
    # the branch holds patch 1 only; no am session is left behind; the user's branch did not move
    assert git(tree, "log", "-1", "--format=%s").strip() == "mm/a: change line 10"
    assert not (tree / git(tree, "rev-parse", "--git-path", "rebase-apply").strip()).exists()
    assert git(tree, "rev-parse", "mine").strip() == mine
    # and the tree is now dirty: --apply refuses it until the user decides
    (tree / "mm/b.c.rej").unlink()
    git(tree, "checkout", "-q", "--", ".")
    write(tree, "mm/a.c", ["dirty\n"])
    with pytest.raises(KernelError, match="uncommitted changes"):
        ks.apply_series(tree, [tmp_path / "series"], copy_to=tmp_path / "copy")


def test_a_tree_that_is_not_a_git_tree_is_copied_and_left_as_it_was(tree, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for rel in ("mm/a.c", "mm/b.c", "Makefile"):
        write(plain, rel, (tree / rel).read_text().splitlines(keepends=True))
    r = ks.apply_series(plain, [tmp_path / "series.mbox"], copy_to=tmp_path / "copy")
    assert r.ok and r.tree == tmp_path / "copy" and r.copied_from == plain
    assert "line 10 changed by patch 1" in (r.tree / "mm/a.c").read_text()
    assert "changed" not in (plain / "mm/a.c").read_text() and not (plain / ".git").exists()


def test_missing_and_empty_series_are_errors(tmp_path):
    with pytest.raises(KernelError, match="does not exist"):
        ks.read_series([tmp_path / "nope.mbox"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(KernelError, match="no \\*.patch files"):
        ks.read_series([tmp_path / "empty"])
    (tmp_path / "x.diff").write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(KernelError, match="bare diff"):
        ks.read_series([tmp_path / "x.diff"])


def test_the_build_key_includes_the_series():
    frags = kb.resolve_fragments(["numa"])
    src = Path("/usr/src/linux")
    assert kb.build_key(src, frags) == kb.build_key(src, frags, "")
    assert kb.build_key(src, frags, "aaaa") != kb.build_key(src, frags)
    assert kb.build_key(src, frags, "aaaa") != kb.build_key(src, frags, "bbbb")


def test_am_output_parsing_on_gits_own_words():
    out = """Applying: mm/a: one
Applying: mm/b: two
Using index info to reconstruct a base tree...
M\tmm/b.c
Falling back to patching base and 3-way merge...
Auto-merging mm/b.c
Applying: mm/c: three
error: patch failed: mm/c.c:12
error: mm/c.c: patch does not apply
Using index info to reconstruct a base tree...
Falling back to patching base and 3-way merge...
Auto-merging mm/c.c
CONFLICT (content): Merge conflict in mm/c.c
Patch failed at 0003 mm/c: three
"""
    r = ks.parse_am_output(out, ["one", "two", "three", "four"])
    assert [(p.number, p.status, p.files) for p in r] == [
        (1, "applied", []), (2, "3-way", ["mm/b.c"]), (3, "failed", ["mm/c.c"]), (4, "not tried", [])]
    hunks, rejects = ks.parse_apply_reject("""Checking patch mm/c.c...
error: while searching for:
x
error: patch failed: mm/c.c:12
Applying patch mm/c.c with 2 rejects...
Hunk #1 applied cleanly.
Rejected hunk #2.
Rejected hunk #3.
""")
    assert hunks == ["mm/c.c hunk #2", "mm/c.c hunk #3"] and rejects == ["mm/c.c.rej"]


def _fake_build(d: Path, cram: bool) -> Path:
    (d / "arch/x86/boot").mkdir(parents=True)
    (d / "arch/x86/boot/bzImage").write_bytes(b"x")
    (d / "Module.symvers").write_text("")
    (d / ".config").write_text("CONFIG_NUMA=y\n" + ("CONFIG_CRAM=y\n" if cram else "# CONFIG_CRAM is not set\n"))
    return d


def test_the_series_kernel_is_found_by_its_option_in_the_cache_or_named_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMA_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(kb.SERIES_KERNEL_ENV, raising=False)
    assert kb.find_series_kernel() is None
    _fake_build(tmp_path / "cache/builds/stock", cram=False)
    assert kb.find_series_kernel() is None
    series = _fake_build(tmp_path / "cache/builds/series", cram=True)
    assert kb.find_series_kernel() == series
    monkeypatch.setenv(kb.SERIES_KERNEL_ENV, str(tmp_path / "cache/builds/stock"))
    with pytest.raises(KernelError, match="CONFIG_CRAM=y"):
        kb.find_series_kernel()
    elsewhere = _fake_build(tmp_path / "mine", cram=True)
    monkeypatch.setenv(kb.SERIES_KERNEL_ENV, str(elsewhere))
    assert kb.find_series_kernel() == elsewhere
