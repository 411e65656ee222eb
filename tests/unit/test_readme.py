"""The README stays true: its topology reference is the model's, its presets are the presets."""

from pathlib import Path

from harness.topology import preset_names
from harness.topology.reference import BEGIN, END, reference_markdown

PROJECT_ROOT = Path(__file__).resolve().parents[2]

README = (PROJECT_ROOT / "README.md").read_text()


def test_readme_reference_is_generated_from_the_model():
    start, end = README.index(BEGIN), README.index(END) + len(END)
    assert README[start:end] == reference_markdown(), \
        "README topology reference is stale: regenerate with python -m harness.topology.reference"


def test_readme_lists_every_preset():
    for name in preset_names():
        assert f"| `{name}` |" in README, f"preset {name} missing from the README"


def test_readme_names_the_two_commands():
    assert "make boot" in README and "make test" in README
