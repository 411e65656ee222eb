"""The wheel is the product: installed into a fresh virtual environment outside this checkout,
it boots a preset from another directory, and its pytest plugin runs the README's example test.

The environment gets the wheel and its dependencies from the package index (pip's cache
makes a second run quick), and no extra: pytest comes as a dependency of the plugin. The
kernel and image caches are shared with this run, so nothing is fetched twice. Nothing in the environment can see the checkout: the working
directory is elsewhere and PYTHONPATH is cleared.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.live, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]


def example_test() -> str:
    """The example test from the README, exactly as a reader copies it."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- example-test:begin -->", 1)[1].split("<!-- example-test:end -->", 1)[0]
    return block.split("```python", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A virtual environment (outside the checkout) with the wheel built from this checkout."""
    root = tmp_path_factory.mktemp("wheel-user")
    dist = root / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = dist.glob("numa_harness-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    r = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not str(env_dir).startswith(str(REPO))
    return env_dir


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("PYTEST_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO)))
    return env


def test_the_installed_wheel_boots_a_preset_from_another_directory(installed, tmp_path):
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import harness; print(harness.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=user_env(), timeout=60)
    assert str(installed) in where.stdout, where.stdout + where.stderr
    r = subprocess.run([str(installed / "bin" / "harness"), "run", "numa-basic", "--", "numactl -H"],
                       capture_output=True, text=True, cwd=tmp_path, env=user_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "available: 2 nodes (0-1)" in r.stdout


def test_the_installed_plugin_runs_the_readme_example(installed, tmp_path):
    (tmp_path / "test_example.py").write_text(example_test())
    r = subprocess.run([str(installed / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                       capture_output=True, text=True, cwd=tmp_path, env=user_env(), timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert re.search(r"\b1 passed\b", out), out[-3000:]
