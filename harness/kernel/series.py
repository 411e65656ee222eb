"""Apply a posted patch series to a kernel source tree before building it.

``harness kernel build --src TREE --apply SERIES...`` takes each SERIES as an mbox (as
``b4 am`` or ``git format-patch --stdout`` writes it) or a directory of numbered ``.patch``
files (``git format-patch -o DIR``), in the order given, and applies them with ``git am -3``
onto a new branch of TREE (``numa-harness/series-<hash>``, made from TREE's HEAD; TREE's own
branch is never moved). A TREE that is not a git tree is copied first into the harness cache
and made one (one commit of the copy), so the original stays as it was.

Each patch is reported as applied, applied with a 3-way merge (the patch did not apply as it
stands: ``git am -3`` fell back to the blobs its ``index`` lines name, the way ``git am`` does
fuzz), or failed. The first failure stops: the branch keeps the patches before it, the failing
patch is saved next to the tree's git directory, and ``git apply --reject`` of it leaves the
hunks that do not apply as ``FILE.rej`` beside their files (the hunks that did apply are in the
working tree, uncommitted), so the user can fix them and ``git am --continue``-style commit.

The parsing (mbox messages, ``git am`` output, ``git apply --reject`` output, the content hash
that keys the build directory) is pure and unit-tested; :func:`apply_series` runs git.
"""

from __future__ import annotations

import hashlib
import mailbox
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import KernelError

BRANCH_PREFIX = "numa-harness/series-"
#: Where a failing patch is saved, under the tree's git directory.
FAILED_DIR = "numa-harness-failed"
GIT_TIMEOUT = 1800


# --------------------------------------------------------------------------- the series (pure)


@dataclass(frozen=True)
class Patch:
    """One message of a series: its subject and its text (a single-message mbox)."""

    subject: str
    text: str
    origin: str   # file it came from


def _has_diff(text: str) -> bool:
    return bool(re.search(r"^(diff --git |--- \S)", text, re.M))


def _subject(msg: mailbox.mboxMessage) -> str:
    """The subject as ``git am`` commits it: one line, without the ``[PATCH ...]`` tags."""
    raw = " ".join(str(msg.get("Subject", "")).split())
    return re.sub(r"^(?:\[[^]]*\]\s*)+", "", raw)


def read_mbox(path: Path) -> list[Patch]:
    """The patches of an mbox, in order; messages with no diff (a cover letter) are left out."""
    box = mailbox.mbox(str(path), create=False)
    try:
        out = []
        for key in box.keys():
            raw = box.get_bytes(key).decode("utf-8", errors="replace")
            if _has_diff(raw):
                out.append(Patch(_subject(box[key]), f"From numa-harness Mon Sep 17 00:00:00 2001\n{raw}", str(path)))
        return out
    finally:
        box.close()


def _number(name: str) -> tuple[int, str]:
    m = re.match(r"(\d+)", name)
    return (int(m.group(1)) if m else 1 << 30, name)


def series_files(paths: Sequence[Path]) -> list[Path]:
    """Each SERIES argument as files: an mbox as itself, a directory as its ``*.patch`` files in number order."""
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            files = sorted((f for f in p.glob("*.patch") if f.is_file()), key=lambda f: _number(f.name))
            if not files:
                raise KernelError(f"{p} has no *.patch files", hint="pass an mbox or a directory of numbered .patch files")
            out.extend(files)
        elif p.is_file():
            out.append(p)
        else:
            raise KernelError(f"patch series {p} does not exist", hint="pass an mbox file or a directory of .patch files")
    return out


def read_series(paths: Sequence[Path]) -> list[Patch]:
    """Every patch of every SERIES argument, in order; an error when there is none."""
    patches: list[Patch] = []
    for f in series_files(paths):
        found = read_mbox(f)
        if not found and not f.name.startswith("0000-"):
            text = f.read_text(errors="replace")
            if not text.startswith("From ") and _has_diff(text):
                raise KernelError(f"{f} is a bare diff, not a mail", hint="make it with git format-patch (or b4 am)")
        patches.extend(found)
    if not patches:
        raise KernelError(f"no patches in {', '.join(map(str, paths))}",
                          hint="an mbox as b4 am writes it, or a directory of git format-patch files")
    return patches


def series_hash(patches: Sequence[Patch]) -> str:
    """Content hash of a series (each patch's subject and body, in order; not its transport
    headers, which differ between an mbox and the same series as files): part of the build key."""
    h = hashlib.sha256()
    for p in patches:
        body = (p.text.split("\n\n", 1)[1] if "\n\n" in p.text else p.text).rstrip()
        h.update(p.subject.encode() + b"\0" + body.encode() + b"\0")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- git's output (pure)


@dataclass
class PatchResult:
    number: int                 # 1-based position in the series
    subject: str
    status: str                 # applied | 3-way | failed | not tried
    files: list[str] = field(default_factory=list)     # 3-way: files merged; failed: files that did not apply
    hunks: list[str] = field(default_factory=list)     # failed: "FILE hunk #N" not applied
    rejects: list[str] = field(default_factory=list)   # failed: .rej files written

    def line(self) -> str:
        what = {"applied": "applied", "3-way": "applied with a 3-way merge (did not apply as it stands)",
                "failed": "FAILED", "not tried": "not tried"}[self.status]
        text = f"{self.number:>3} {what}: {self.subject}"
        if self.status == "3-way" and self.files:
            text += f" [merged: {', '.join(self.files)}]"
        if self.status == "failed":
            text += f" [{', '.join(self.hunks or self.files) or 'see git am output'}]"
        return text


def parse_am_output(text: str, subjects: Sequence[str]) -> list[PatchResult]:
    """Per-patch results from ``git am -3`` output over ``subjects`` (the series in order).

    ``Applying: S`` starts a patch; ``Falling back to patching base and 3-way merge`` marks it
    merged (with ``Auto-merging F`` naming files); ``Patch failed at NNNN`` marks the failure,
    with ``error: patch failed: F:L`` / ``CONFLICT (...): Merge conflict in F`` naming its files.
    """
    results: list[PatchResult] = []
    cur: PatchResult | None = None
    failed_at: int | None = None
    for line in text.splitlines():
        if line.startswith("Applying: "):
            cur = PatchResult(len(results) + 1, " ".join(line[len("Applying: "):].split()), "applied")
            results.append(cur)
        elif cur is None:
            continue
        elif "3-way merge" in line and line.startswith("Falling back"):
            cur.status = "3-way"
        elif (m := re.match(r"Auto-merging (\S+)", line)) and m.group(1) not in cur.files:
            cur.files.append(m.group(1))
        elif m := re.match(r"error: patch failed: (\S+?):\d+", line):
            if m.group(1) not in cur.files:
                cur.files.append(m.group(1))
        elif m := re.match(r"CONFLICT \([^)]*\): .*(?:in|of) (\S+)", line):
            if m.group(1) not in cur.files:
                cur.files.append(m.group(1))
        elif m := re.match(r"Patch failed at (\d+)", line):
            failed_at = int(m.group(1))
            cur.status = "failed"
    if failed_at is not None and results and results[-1].number != failed_at:
        results[-1].number = failed_at
    for i in range(len(results), len(subjects)):
        results.append(PatchResult(i + 1, subjects[i], "not tried"))
    return results


def parse_apply_reject(text: str) -> tuple[list[str], list[str]]:
    """(``FILE hunk #N`` rejected, ``FILE.rej`` written) from ``git apply --reject --verbose``."""
    hunks: list[str] = []
    rejects: list[str] = []
    current = ""
    for line in text.splitlines():
        if m := re.match(r"Applying patch (\S+) with \d+ reject", line):
            current = m.group(1)
            rejects.append(f"{current}.rej")
        elif m := re.match(r"Rejected hunk #(\d+)\.", line):
            hunks.append(f"{current} hunk #{m.group(1)}")
        elif m := re.match(r"error: (\S+): (does not exist in index|No such file or directory|already exists)", line):
            hunks.append(f"{m.group(1)} (whole file: {m.group(2)})")
    return hunks, rejects


# --------------------------------------------------------------------------- I/O


@dataclass
class SeriesResult:
    tree: Path                  # the tree now holding the series (TREE itself, or its copy)
    branch: str
    base: str                   # commit the branch starts from
    hash: str                   # series_hash
    patches: list[PatchResult]
    reused: bool = False        # the branch existed: nothing re-applied
    copied_from: Path | None = None
    previous: str = ""          # TREE's branch (or commit) before

    @property
    def ok(self) -> bool:
        return all(p.status in ("applied", "3-way") for p in self.patches)


def _git(tree: Path, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, errors="replace",
                              input=stdin, timeout=GIT_TIMEOUT)
    except FileNotFoundError as e:
        raise KernelError("--apply needs git", hint="install git") from e
    except subprocess.TimeoutExpired as e:
        raise KernelError(f"git {' '.join(args[:2])} in {tree} did not finish in {GIT_TIMEOUT} s") from e
    if check and proc.returncode != 0:
        raise KernelError(f"git {' '.join(args)} failed in {tree}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return proc


def _identity(tree: Path) -> list[str]:
    """``-c user.*`` for a tree whose git has no identity (git am records a committer)."""
    have = _git(tree, "config", "user.email", check=False).stdout.strip()
    return [] if have else ["-c", "user.name=numa-harness", "-c", "user.email=numa-harness@localhost"]


def is_git_tree(src: Path) -> bool:
    return (src / ".git").exists()


def copy_as_git_tree(src: Path, dest: Path) -> None:
    """A copy of a plain source tree at ``dest``, made a git tree with one commit (``.gitignore``d paths kept out)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, symlinks=True)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A", "-f", ".")
    _git(dest, *_identity(dest), "commit", "-q", "-m", f"numa-harness: copy of {src}")


def apply_series(src: Path, series: Sequence[Path], *, copy_to: Path,
                 on_patch: Callable[[PatchResult], None] | None = None) -> SeriesResult:
    """Apply ``series`` onto a new branch of ``src`` (or of a git copy at ``copy_to``).

    Raises KernelError (one line, the rejected hunks and where they are kept in ``detail``) at
    the first patch that does not apply; the result up to it is in the error's ``results``.
    """
    src = Path(src).expanduser().resolve()
    patches = read_series(series)
    digest = series_hash(patches)
    copied_from = None
    if not is_git_tree(src):
        copied_from, src = src, Path(copy_to)
        if not (src / ".git").exists() or not _git(src, "rev-parse", "--verify", "-q", "HEAD", check=False).stdout:
            copy_as_git_tree(copied_from, src)
    dirty = _git(src, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if dirty:
        raise KernelError(f"{src} has uncommitted changes; --apply needs a clean tree",
                          hint="commit or stash them (git -C TREE stash), or fix and commit a failed patch's hunks",
                          detail=dirty[:2000])
    if (src / _git(src, "rev-parse", "--git-path", "rebase-apply").stdout.strip()).exists():
        raise KernelError(f"{src} is in the middle of a git am or rebase", hint=f"git -C {src} am --abort (or finish it)")
    previous = _git(src, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    if previous == "HEAD":
        previous = _git(src, "rev-parse", "--short", "HEAD").stdout.strip()
    base = _git(src, "rev-parse", "HEAD").stdout.strip()
    if m := re.match(re.escape(BRANCH_PREFIX) + r"[0-9a-f]+-([0-9a-f]+)$", previous):
        # re-run on a branch an earlier --apply made: apply onto the commit that branch started from
        base = _git(src, "rev-parse", f"{m.group(1)}^{{commit}}").stdout.strip()
    branch = f"{BRANCH_PREFIX}{digest[:8]}-{base[:8]}"
    subjects = [p.subject for p in patches]
    if _git(src, "rev-parse", "--verify", "-q", f"refs/heads/{branch}", check=False).returncode == 0:
        _git(src, "checkout", "-q", branch)
        results = [PatchResult(i + 1, s, "applied") for i, s in enumerate(subjects)]
        return SeriesResult(src, branch, base, digest, results, reused=True, copied_from=copied_from, previous=previous)
    _git(src, "checkout", "-q", "-b", branch, base)
    mbox = "".join(p.text if p.text.endswith("\n") else p.text + "\n" for p in patches)
    am = _git(src, *_identity(src), "am", "-3", "--no-gpg-sign", check=False, stdin=mbox)
    results = parse_am_output(am.stdout + "\n" + am.stderr, subjects)
    for r in results:
        if on_patch and r.status in ("applied", "3-way"):
            on_patch(r)
    out = SeriesResult(src, branch, base, digest, results, copied_from=copied_from, previous=previous)
    if am.returncode == 0:
        return out
    failed = next((r for r in results if r.status == "failed"), None)
    if failed is None:
        _git(src, "am", "--abort", check=False)
        last = (am.stderr or am.stdout).strip().splitlines()[-1:]
        raise KernelError(f"git am failed in {src}: {' '.join(last)}", detail=(am.stdout + am.stderr)[-3000:])
    saved = _save_failed(src, failed, patches[failed.number - 1])
    if on_patch:
        on_patch(failed)
    raise SeriesError(out, failed, saved)


def _save_failed(src: Path, failed: PatchResult, patch: Patch) -> Path:
    """Leave the failing patch's rejected hunks as FILE.rej in the tree; returns where the patch is saved."""
    git_dir = Path(_git(src, "rev-parse", "--absolute-git-dir").stdout.strip())
    where = git_dir / FAILED_DIR
    where.mkdir(exist_ok=True)
    saved = where / f"{failed.number:04d}.patch"
    saved.write_text(patch.text)
    # keep the branch at the last patch that applied; drop the am session and any 3-way leftovers
    _git(src, "am", "--quit", check=False)
    _git(src, "reset", "-q", "--hard", "HEAD")
    rej = _git(src, "apply", "--reject", "--verbose", str(saved), check=False)
    failed.hunks, failed.rejects = parse_apply_reject(rej.stdout + "\n" + rej.stderr)
    return saved


class SeriesError(KernelError):
    """A patch of the series did not apply; the branch holds the patches before it."""

    def __init__(self, result: SeriesResult, failed: PatchResult, saved: Path):
        self.result = result
        self.failed = failed
        where = ", ".join(f"{result.tree / r}" for r in failed.rejects) or "none written"
        total = len(result.patches)
        super().__init__(
            f"patch {failed.number}/{total} does not apply to {result.tree}: {failed.subject}"
            f" ({', '.join(failed.hunks or failed.files) or 'see the saved patch'})",
            hint=(f"branch {result.branch} holds "
                  + (f"patches 1-{failed.number - 1}" if failed.number > 1 else "none of them")
                  + "; the hunks that applied are in "
                  f"the working tree, uncommitted; fix the rejects, commit, and build without --apply "
                  f"(or rebase the series); `git -C {result.tree} checkout -f {result.previous}` goes back"),
            detail=f"rejected hunks kept in: {where}\nfailing patch saved as: {saved}")
