"""The committed sample world (data/sample): complete, within budget, readable, all scenarios."""

import json
import os
from collections import Counter
from pathlib import Path

from v2x_vlm_ros.data.dair import DairV2XDataset

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
SCENARIOS = {"straight", "left_turn", "right_turn", "follow_lead", "occluded_crossing"}


def test_sample_is_within_its_size_budget():
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(SAMPLE) for f in files)
    assert total <= 5_000_000, total


def test_sample_reads_cleanly_with_every_scenario_twice():
    ds = DairV2XDataset(SAMPLE)
    assert len(ds.skips) == 0 and ds.layout == "spd"
    scenarios = json.loads((SAMPLE / "scenarios.json").read_text())
    assert Counter(scenarios.values()) == {s: 2 for s in SCENARIOS}
    assert len(ds) == sum(len(s.frames) for s in ds.sequences.values())  # every frame is a sample
    assert len(ds.descriptions) == len(ds)
    val = DairV2XDataset(SAMPLE, split="val")
    assert {s.scenario for s in val} == SCENARIOS and 0 < len(val) < len(ds)
