"""Fixtures shared by the unit tests."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(params=[["busybox", "sh"], ["dash"]], ids=["busybox", "dash"])
def guest_sh(request: pytest.FixtureRequest) -> list[str]:
    """A shell the guest files must run under: busybox sh (the guest's own) and dash (strict POSIX)."""
    if shutil.which(request.param[0]) is None:
        pytest.skip(f"{request.param[0]} not installed")
    return list(request.param)
