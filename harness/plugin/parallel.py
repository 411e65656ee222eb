"""pytest-xdist (``pytest -n N``): one topology's tests stay on one worker.

Each worker is its own pytest session with its own :class:`~harness.plugin.pool.VMPool`, so a
topology whose tests were spread over two workers would boot twice. Every item with a
``topology`` marker therefore gets an ``xdist_group`` mark named after its topology (unless it
has one), and when ``-n`` is given without ``--dist``, the distribution is ``loadgroup``
(xdist's ``load`` otherwise): a group runs on one worker, groups spread over the workers.

The rest of running in parallel lives where the concern is: each VM's work directory and SSH
port are its own already (a temporary directory, a free port), the caches are built under a
lock (:mod:`harness.cachefs`), KTAP/KUnit results are subtests (:mod:`harness.plugin.ktap`),
and the TCG threading and memory limits divide the host by the worker count
(:func:`harness.qemu.limits.concurrent_vms`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

#: ``workerinput`` key: the controller chose ``loadgroup`` for the workers' collection.
LOADGROUP_KEY = "numa_harness_loadgroup"


def dist_given(args: Sequence[str]) -> bool:
    """Whether the command line chose a distribution mode itself (``--dist X``, ``--dist=X``, ``-d``)."""
    return any(a == "--dist" or a.startswith("--dist=") or a in ("-d", "--distload") for a in args)


def group_name(topology: str) -> str:
    """The ``xdist_group`` of a topology's tests."""
    return f"numa-harness-{topology}"


def configure(config: pytest.Config) -> None:
    """Choose ``loadgroup`` on the controller; on a worker, apply the controller's choice."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # a worker: it parsed the plain command line, without our default
        if workerinput.get(LOADGROUP_KEY):
            config.option.loadgroup = True
        if getattr(config.option, "loadgroup", False):
            config.pluginmanager.register(_Worker(), "numa-harness-xdist-worker")
        return
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "no") == "load" \
            and not dist_given(config.invocation_params.args):
        config.option.dist = "loadgroup"
    if getattr(config.option, "dist", "no") == "loadgroup":
        config.pluginmanager.register(_Controller(), "numa-harness-xdist")


class _Controller:
    """Tells each worker that the controller schedules by group."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: object) -> None:
        node.workerinput[LOADGROUP_KEY] = True  # type: ignore[attr-defined]


class _Worker:
    """Puts the group into each item's node id, as pytest-xdist's worker means to.

    xdist 3.8 does that by assigning ``item._nodeid``, which pytest 9.2 no longer reads (the id
    is the structured ``item._id``), so every group silently became no group. This runs after
    xdist's own hook and leaves an id that already ends in its group alone.
    """

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})
            if not names:
                continue
            suffix = "@" + "_".join(names)
            if item.nodeid.endswith(suffix) or not hasattr(item, "_id"):
                continue
            from _pytest.nodeid import NodeId  # pytest >= 9.2, where the id is structured

            item._id = NodeId.parse(item.nodeid + suffix)


def mark_groups(items: list[pytest.Item], topology_of: object) -> None:
    """Give every item with a topology an ``xdist_group`` of that topology (one it has wins)."""
    for item in items:
        name = topology_of(item)  # type: ignore[operator]
        if name is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group_name(name)))
