"""Case 5: three `harness run` at once on an empty cache.

Each process finds no kernel, no image and no accelerator verdict; one fetches the
distribution kernel (a real download: this is the case as a new user meets it on
a fresh machine) while the others wait on its lock, and none reads a tree another
is still writing or replacing. All three boot and run their command.
"""

from __future__ import annotations

import pytest
from faultlib import Harness

pytestmark = [pytest.mark.live, pytest.mark.timeout(1200)]


def test_5_three_runs_at_once_on_an_empty_cache_all_succeed(h: Harness, tmp_path):
    cache = tmp_path / "empty-cache"
    procs, errors = [], []
    for _ in range(3):
        procs.append(h.popen("run", "numa-basic", "--accel", "tcg", "--", "true", env={"NUMA_HARNESS_CACHE": str(cache)}))
        errors.append(h.stderr_file)
    for i, p in enumerate(procs):
        status = p.wait(timeout=1100)
        text = errors[i].read_text(errors="replace")
        assert status == 0, f"run {i} exited {status}: {text[-3000:]}"
        assert "Traceback" not in text
    trees = [k for k in (cache / "kernels").iterdir() if k.is_dir()]
    assert len([k for k in trees if not k.name.startswith(".")]) == 1, trees
    assert not [k for k in trees if k.name.startswith(".")], f"leftover temporary trees: {trees}"
    builds = [b for b in (cache / "guest-programs").iterdir() if b.is_dir()]
    assert len(builds) == 1 and not builds[0].name.startswith("."), builds
    assert h.qemus() == []
