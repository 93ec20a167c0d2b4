"""The committed sample world (data/sample): complete, within budget, readable, every
scenario, the hidden-hazard pairs with their visibility sidecar."""

import json
import os
from collections import Counter
from pathlib import Path

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.synth import SCENARIOS
from v2x_vlm_ros.data.synth.visibility import hidden_hazard_frames, read_visibility

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def test_sample_is_within_its_size_budget():
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(SAMPLE) for f in files)
    assert total <= 5_000_000, total


def test_sample_reads_cleanly_with_every_scenario_and_both_pairs():
    ds = DairV2XDataset(SAMPLE)
    assert len(ds.skips) == 0 and ds.layout == "spd"
    scenarios = json.loads((SAMPLE / "scenarios.json").read_text())
    paired = ("occluded_crossing", "hidden_queue")
    assert Counter(scenarios.values()) == {s: (2 if s in paired else 1) for s in SCENARIOS}
    assert len(ds) == sum(len(s.frames) for s in ds.sequences.values()) == 9 * 60  # every frame a sample
    assert len(ds.descriptions) == len(ds)
    train = DairV2XDataset(SAMPLE, split="train")
    assert {s.scenario for s in train} == set(SCENARIOS) and len(train) == len(ds)


def test_sample_has_hidden_hazard_frames_in_both_agent_sequences():
    visibility = read_visibility(SAMPLE)
    entries = visibility["sequences"]
    assert entries["0000"]["variant"] == "agent" and entries["0001"]["variant"] == "twin"
    assert entries["0000"]["agents"][entries["0000"]["conflict"][0]]["category"] == "Car"
    hidden = hidden_hazard_frames(visibility)
    per_sequence = Counter(seq for seq, _ in hidden)
    assert set(per_sequence) == {"0000", "0006"} and min(per_sequence.values()) >= 20
