"""The README's YAML examples of spec sections (gates, monitoring, split) load through the spec's own loader and validate
merged into the demo spec: an example that stops working (``off: [latency]`` read as a boolean key by YAML 1.1, a
renamed field) fails here. Other YAML blocks (a whole spec, a column fragment) are documents of their own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aiflow.spec import demo_spec_path, parse_spec, read_spec_yaml

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"gates", "monitoring", "split"}


def examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if isinstance(read_spec_yaml(b), dict) and set(read_spec_yaml(b)) <= SECTIONS]


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def test_the_readme_has_section_examples():
    assert len(examples()) >= 4


@pytest.mark.parametrize("block", examples())
def test_each_section_example_validates_in_the_demo_spec(block):
    demo = read_spec_yaml(demo_spec_path().read_text())
    example = read_spec_yaml(block)
    spec = parse_spec(merged(demo, example), "README example")
    if "gates" in example:
        assert spec.gates.off == example["gates"].get("off", [])


def test_yaml_1_1_booleans_stay_words_in_a_spec():
    loaded = read_spec_yaml("gates:\n  off: [latency]\non: yes\nflag: true\nother: False\n")
    assert loaded == {"gates": {"off": ["latency"]}, "on": "yes", "flag": True, "other": False}
