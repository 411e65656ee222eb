"""``@pytest.mark.fresh_vm``: a test that dirties its guest (a cgroup, a hog process, a changed
sysctl, a file) cannot affect the next ``fresh_vm`` test, whose guest is restored from the
snapshot taken after boot and set-up.

How we know the checks can fail: the same pair runs on the shared VM of the topology (no
``fresh_vm``), where the second test must find every piece of the first one's dirt with the
same probe (:func:`dirt`) — so a probe that could not see the dirt, or a "fresh" VM that was
really the shared one, fails. The tests run in file order (one topology: one xdist worker).
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.live, pytest.mark.timeout(900), pytest.mark.topology("numa-basic")]

SWAPPINESS = "/proc/sys/vm/swappiness"
DIRTY_SWAPPINESS = "7"


def dirty(vm) -> None:
    """Leave a cgroup, a hog holding memory, a changed sysctl and a file behind."""
    vm.run("mkdir -p /sys/fs/cgroup/nh-dirty")
    vm.run(f"echo {DIRTY_SWAPPINESS} > {SWAPPINESS}")
    vm.run("echo dirty > /tmp/nh-dirty")
    # a hog outside the harness's programs (guest-state ends those): 16 MiB held in a shell variable
    vm.run("setsid sh -c 'x=$(head -c 16777216 /dev/zero | tr \"\\\\0\" x); echo $$ > /tmp/nh-hog.pid; "
           "sleep 100000' </dev/null >/dev/null 2>&1 &")
    vm.run("for i in $(seq 100); do [ -s /tmp/nh-hog.pid ] && break; sleep 0.2; done; test -s /tmp/nh-hog.pid",
           timeout=120)
    assert len(dirt(vm)) == 4, dirt(vm)


def dirt(vm) -> list[str]:
    """What of :func:`dirty`'s leftovers the guest has."""
    found = []
    if vm.run("test -d /sys/fs/cgroup/nh-dirty", check=False).exit_status == 0:
        found.append("cgroup nh-dirty")
    if vm.run(f"cat {SWAPPINESS}").stdout.strip() == DIRTY_SWAPPINESS:
        found.append(f"vm.swappiness={DIRTY_SWAPPINESS}")
    if vm.run("test -e /tmp/nh-dirty", check=False).exit_status == 0:
        found.append("/tmp/nh-dirty")
    if vm.run("ps -o args | grep -q '^sleep 100000'", check=False).exit_status == 0:
        found.append("hog process")
    return found


@pytest.mark.fresh_vm
def test_fresh_vm_1_dirties_its_guest(vm):
    dirty(vm)


@pytest.mark.fresh_vm
def test_fresh_vm_2_sees_none_of_it(vm):
    assert dirt(vm) == []
    assert vm.run("cat /proc/uptime").ok  # a working guest, not just an empty answer


def test_shared_vm_1_dirties_its_guest(vm):
    dirty(vm)


def test_shared_vm_2_sees_all_of_it(vm):
    """The control: without fresh_vm the next test meets the first one's dirt, every piece of it."""
    assert sorted(dirt(vm)) == sorted(["cgroup nh-dirty", f"vm.swappiness={DIRTY_SWAPPINESS}", "/tmp/nh-dirty",
                                       "hog process"])
