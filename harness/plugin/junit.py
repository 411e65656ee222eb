"""What a CI page reads from pytest's JUnit XML: properties on every test case, and a failure's
diagnostics in its failure text.

Properties (``<property>`` of each ``<testcase>``, through ``item.user_properties`` as
``record_property`` adds them): ``topology``, ``kernel_release``, ``accel``, ``qemu_version``,
``boot_seconds`` of the machine the test ran on. The diagnostics (console tail, dmesg since the test
began, statistics delta) are added to the failure's own report (``longrepr``), which both the
terminal and ``<failure>`` print, rather than as separate report sections, which JUnit drops.
KTAP/KUnit results are pytest subtests (:mod:`harness.plugin.ktap`): JUnit writes each as its own
test case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # annotations only: the plugin imports this module at every pytest start
    from harness.boot import Machine



def properties(m: Machine) -> list[tuple[str, str]]:
    """The JUnit properties of a test that ran on ``m``."""
    p = m.prepared
    return [("topology", p.loaded.name), ("kernel_release", p.kernel.release), ("accel", p.accel.accel),
            ("qemu_version", p.qemu_version),
            ("boot_seconds", "" if m.vm.boot_seconds is None else f"{m.vm.boot_seconds:.1f}")]


def record(item: pytest.Item, m: Machine) -> None:
    """Add ``m``'s properties to ``item`` (once each)."""
    have = {k for k, _v in item.user_properties}
    item.user_properties.extend((k, v) for k, v in properties(m) if k not in have)


def attach(report: pytest.TestReport, sections: Sequence[tuple[str, str]]) -> None:
    """Put ``sections`` into the failure text (and so into JUnit), else into the report's sections."""
    longrepr = report.longrepr
    add = getattr(longrepr, "addsection", None)
    for title, body in sections:
        if add is not None:
            add(title, body)
        else:
            report.sections.append((title, body))


#: The property :mod:`harness.plugin.ktap` gives each KTAP/KUnit result: ``ktap NAME`` = ``outcome[: reason]``.
KTAP_PROPERTY = "ktap "


def split_ktap_cases(xml: str) -> str:
    """JUnit XML with each KTAP/KUnit result of a test case (its ``ktap NAME`` properties) added as a
    test case of its own, ``ITEM[NAME]``, passed, skipped or failed with its reason (pure).

    pytest's JUnit writer folds subtests into their item's test case; a CI page lists test cases, so
    each result needs its own to be seen (and counted)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for suite in suites:
        added = {"tests": 0, "failures": 0, "skipped": 0}
        for case in list(suite.findall("testcase")):
            props = case.find("properties")
            if props is None:
                continue
            for prop in props.findall("property"):
                name = prop.get("name", "")
                if not name.startswith(KTAP_PROPERTY):
                    continue
                outcome, _, reason = prop.get("value", "").partition(": ")
                sub = ET.Element("testcase", {"classname": case.get("classname", ""),
                                              "name": f"{case.get('name', '')}[{name[len(KTAP_PROPERTY):]}]",
                                              "time": "0"})
                if outcome == "failed":
                    ET.SubElement(sub, "failure", {"message": reason or "failed"}).text = reason
                    added["failures"] += 1
                elif outcome == "skipped":
                    ET.SubElement(sub, "skipped", {"type": "pytest.skip", "message": reason or "skipped"})
                    added["skipped"] += 1
                added["tests"] += 1
                suite.append(sub)
        for key, n in added.items():
            if n:
                suite.set(key, str(int(suite.get(key, "0")) + n))
    return ET.tostring(root, encoding="unicode")


def split_ktap_file(path: str | None) -> None:
    """Rewrite the JUnit file at ``path`` (pytest's ``--junitxml``) with :func:`split_ktap_cases`."""
    from pathlib import Path

    if not path:
        return
    p = Path(path)
    try:
        text = p.read_text()
    except OSError:
        return
    if KTAP_PROPERTY.strip() not in text:
        return
    p.write_text('<?xml version="1.0" encoding="utf-8"?>' + split_ktap_cases(text))
