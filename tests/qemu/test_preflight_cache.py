"""Preflight against the installed QEMU: its capability cache."""


def test_corrupt_capability_cache_is_reprobed(tmp_path, monkeypatch):
    """A damaged cache file is ignored and rewritten, not a crash."""
    import harness.qemu.preflight as pf

    monkeypatch.setenv("NUMA_HARNESS_CACHE", str(tmp_path))
    binary = pf.find_binary()
    cf = pf._cache_file(binary)
    cf.parent.mkdir(parents=True, exist_ok=True)
    cf.write_text("{not json")
    caps = pf.capabilities(binary, needed_types={("device", "cxl-type3")})
    assert caps.version[:2] >= (8, 0) and "volatile-memdev" in caps.device_props["cxl-type3"]
    assert '"version"' in cf.read_text()
