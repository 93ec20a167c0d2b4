"""Scenario mix, split pattern and config validation of the synthetic world."""

from collections import Counter

import pytest

from v2x_vlm_ros.data.synth import SCENARIOS, SPLIT_PATTERN, SynthConfig, split_of


def test_scenario_names_are_the_contract():
    assert set(SCENARIOS) == {"straight", "left_turn", "right_turn", "follow_lead", "occluded_crossing"}
    assert SCENARIOS[0] == "occluded_crossing"


@pytest.mark.parametrize("n", range(2, 24))
def test_round_robin_mix_has_enough_occlusions_and_turns(n):
    cfg = SynthConfig(num_sequences=n)
    names = [cfg.scenario_of(i) for i in range(n)]
    assert names[:5] == list(SCENARIOS)[:n]
    counts = Counter(names)
    assert counts["occluded_crossing"] / n >= 0.2
    assert (counts["left_turn"] + counts["right_turn"]) / n >= 0.3
    if n >= 5:
        assert max(counts.values()) - min(counts[s] for s in SCENARIOS) <= 1


def test_split_is_stratified_per_scenario_with_the_pattern():
    cfg = SynthConfig(num_sequences=37)
    split = split_of(cfg)
    owner = {i: name for name, idx in split.items() for i in idx}
    assert sorted(owner) == list(range(37))  # each sequence in exactly one split
    assert sum(len(v) for v in split.values()) == 37
    for scenario in SCENARIOS:
        members = [i for i in range(37) if cfg.scenario_of(i) == scenario]
        got = [owner[i] for i in members]
        want = [SPLIT_PATTERN[k % 5] for k in range(len(members))]
        assert got == want
    assert SPLIT_PATTERN == ("train", "val", "train", "test", "train")


def test_scenario_subset_restricts_the_mix():
    cfg = SynthConfig(num_sequences=4, scenarios=("left_turn", "straight"))
    assert [cfg.scenario_of(i) for i in range(4)] == ["left_turn", "straight"] * 2


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        SynthConfig(layout="kitti")
    with pytest.raises(ValueError):
        SynthConfig(scenarios=("drifting",))
    with pytest.raises(ValueError):
        SynthConfig(jpeg_quality=0)
    with pytest.raises(ValueError):
        SynthConfig.from_dict({"num_sequences": 2, "colour": "red"})
    assert SynthConfig.from_dict({"image_size": [64, 36]}).image_size == (64, 36)
