"""What a pytest run with KTAP or KUnit items recorded in JUnit XML, read back by the tests that run one.

Each KTAP result is a subtest of its item. pytest folds subtests into the item's testcase: one
``<skipped>``/``<failure>`` per result that did not pass, then the item's own, if it did not
pass. The plugin also records every result as a property ``ktap NAME`` = ``OUTCOME[: reason]``,
which names them and tells the item's own element from theirs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

KIND = {"passed": "passed", "skipped": "skipped", "failed": "failure"}


def junit_results(xml: Path) -> dict[str, tuple[str, str]]:
    """``ITEM`` and ``ITEM::RESULT`` -> (passed | skipped | failure, reason or message)."""
    out = {}
    for tc in ET.parse(xml).getroot().iter("testcase"):
        item = tc.get("name", "")
        not_passed = 0
        for prop in tc.iter("property"):
            name = prop.get("name", "")
            if name.startswith("ktap "):
                outcome, _, reason = prop.get("value", "").partition(": ")
                out[f"{item}::{name.removeprefix('ktap ')}"] = (KIND[outcome], reason)
                not_passed += outcome != "passed"
        elements = [c for c in tc if c.tag in ("failure", "skipped", "error")]
        own = elements[-1] if len(elements) > not_passed else None
        out[item] = ("passed", "") if own is None else (own.tag, own.get("message", ""))
    return out
