"""tests/data holds inputs, not tests: its ktap_*.sh scripts boot guests when run, so a plain
`pytest` (which would collect them once the numa-harness plugin's KTAP collector is on) leaves
them alone. tests/live/test_selftest_live.py runs them on purpose (--ktap-dir, or by path)."""

collect_ignore = ["data"]
