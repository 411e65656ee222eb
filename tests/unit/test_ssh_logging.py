"""paramiko's transport errors from the harness's retried connection attempts stay out of the
logs (pytest's captured log among them) unless the harness's SSH module logs at DEBUG."""

from __future__ import annotations

import logging

import pytest

import harness.vm.ssh  # noqa: F401  (installs the filter)


@pytest.fixture
def records():
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    h = Keep(level=logging.NOTSET)
    transport = logging.getLogger("paramiko.transport")
    transport.addHandler(h)
    ssh_log = logging.getLogger("harness.vm.ssh")
    old = ssh_log.level
    yield got
    transport.removeHandler(h)
    ssh_log.setLevel(old)


def test_a_failed_banner_read_is_not_logged_at_the_default_level(records):
    logging.getLogger("harness.vm.ssh").setLevel(logging.INFO)
    t = logging.getLogger("paramiko.transport")
    t.error("Exception (client): Error reading SSH protocol banner[Errno 9] Bad file descriptor")
    t.error("Traceback (most recent call last):")
    t.warning("a warning still gets through")
    assert [r.getMessage() for r in records] == ["a warning still gets through"]


def test_at_debug_paramiko_errors_are_shown(records):
    logging.getLogger("harness.vm.ssh").setLevel(logging.DEBUG)
    logging.getLogger("paramiko.transport").error("Exception (client): Error reading SSH protocol banner")
    assert [r.levelno for r in records] == [logging.ERROR]
