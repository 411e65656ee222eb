import pytest

from harness.units import Granularity, IdList, SchemaError, Size, format_size


@pytest.mark.parametrize("text,n", [("1G", 1 << 30), ("512M", 512 << 20), ("16K", 16 << 10), ("2T", 2 << 40), ("0", 0), (0, 0)])
def test_sizes_qemu_accepts(text, n):
    assert Size.parse(text, "x") == n


@pytest.mark.parametrize("text,hint", [("1 GB", "write 1G"), ("1GB", "write 1G"), ("512MiB", "write 512M"),
                                       ("1.5G", "1536M"), ("lots", "K, M, G or T"), (2048, "2K")])
def test_sizes_qemu_rejects_have_hints(text, hint):
    with pytest.raises(SchemaError) as e:
        Size.parse(text, "nodes[0].memory")
    assert e.value.path == "nodes[0].memory"
    assert hint in (e.value.hint or "")


def test_granularity_takes_bare_bytes():
    assert Granularity.parse(256, "g") == 256
    assert Granularity.parse("4K", "g") == 4096


def test_format_size_round_trips():
    for s in ["1G", "512M", "1536M", "4K", "0"]:
        assert format_size(Size.parse(s, "x")) == s


@pytest.mark.parametrize("value,ids", [("0-3,6", (0, 1, 2, 3, 6)), (5, (5,)), ([2, 0], (0, 2)), ("1", (1,))])
def test_id_lists(value, ids):
    assert tuple(IdList.parse(value, "c")) == ids


def test_id_list_ranges_for_qemu():
    assert IdList.parse("0-2,5,7-8", "c").ranges() == ["0-2", "5", "7-8"]


@pytest.mark.parametrize("value,words", [("3-1", "runs backwards"), ("a-b", "cannot read"), ("0,0", "more than once"), (True, "expected")])
def test_bad_id_lists(value, words):
    with pytest.raises(SchemaError) as e:
        IdList.parse(value, "nodes[0].cpus")
    assert words in str(e.value)
