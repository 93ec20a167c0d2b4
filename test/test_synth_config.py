"""Scenario mix, pairs, split pattern and config validation of the synthetic world."""

from collections import Counter

import pytest

from v2x_vlm_ros.data.synth import SCENARIOS, SPLIT_PATTERN, SynthConfig, split_of
from v2x_vlm_ros.data.synth.config import PAIRED_SCENARIOS


def test_scenario_names_are_the_contract():
    # the five original names stay (outside tools read them); new ones are only added
    assert {"straight", "left_turn", "right_turn", "follow_lead", "occluded_crossing"} <= set(SCENARIOS)
    assert set(SCENARIOS) == {"straight", "left_turn", "right_turn", "follow_lead", "occluded_crossing",
                              "hidden_queue", "stop_sign"}
    assert SCENARIOS[0] == "occluded_crossing"
    assert set(PAIRED_SCENARIOS) == {"occluded_crossing", "hidden_queue"}


def test_cycle_writes_paired_scenarios_as_consecutive_twins():
    cfg = SynthConfig(num_sequences=20)
    names = [(cfg.scenario_of(i), cfg.variant_of(i)) for i in range(9)]
    assert names == [("occluded_crossing", "agent"), ("occluded_crossing", "twin"), ("left_turn", None),
                     ("right_turn", None), ("follow_lead", None), ("straight", None),
                     ("hidden_queue", "agent"), ("hidden_queue", "twin"), ("stop_sign", None)]
    # a twin draws from its partner's generator; partners point at each other
    assert [cfg.draw_index(i) for i in range(9)] == [0, 0, 2, 3, 4, 5, 6, 6, 8]
    assert cfg.partner_of(0) == 1 and cfg.partner_of(1) == 0 and cfg.partner_of(2) is None
    assert cfg.partner_of(18) == 19 and SynthConfig(num_sequences=19).partner_of(18) is None
    unpaired = SynthConfig(paired=False)
    assert [unpaired.scenario_of(i) for i in range(7)] == list(SCENARIOS)
    assert all(unpaired.variant_of(i) is None for i in range(14))


@pytest.mark.parametrize("n", range(9, 40))
def test_round_robin_mix_has_hidden_hazards_turns_and_braking_without_hazard(n):
    cfg = SynthConfig(num_sequences=n)
    counts = Counter(cfg.scenario_of(i) for i in range(n))
    assert counts["occluded_crossing"] / n >= 0.2
    assert (counts["left_turn"] + counts["right_turn"] + counts["hidden_queue"]) / n >= 0.3
    assert counts["stop_sign"] >= 1 and counts["follow_lead"] >= 1 and counts["straight"] >= 1
    assert set(counts) == set(SCENARIOS)


def test_split_is_stratified_per_scenario_and_keeps_pairs_together():
    cfg = SynthConfig(num_sequences=61)
    split = split_of(cfg)
    owner = {i: name for name, idx in split.items() for i in idx}
    assert sorted(owner) == list(range(61))  # each sequence in exactly one split
    for i in range(61):
        partner = cfg.partner_of(i)
        if partner is not None:
            assert owner[i] == owner[partner]
    for scenario in SCENARIOS:
        scenes = [i for i in range(61) if cfg.scenario_of(i) == scenario and cfg.variant_of(i) != "twin"]
        want = [SPLIT_PATTERN[k % 5] for k in range(len(scenes))]
        assert [owner[i] for i in scenes] == want
    assert SPLIT_PATTERN == ("train", "val", "train", "test", "train")


def test_scenario_subset_restricts_the_mix():
    cfg = SynthConfig(num_sequences=4, scenarios=("left_turn", "straight"))
    assert [cfg.scenario_of(i) for i in range(4)] == ["left_turn", "straight"] * 2


def test_supersampling_factor_reaches_the_width():
    assert SynthConfig(image_size=(144, 81)).render_scale() == 7  # drawn at 1008 x 567
    assert SynthConfig(image_size=(1920, 1080)).render_scale() == 1
    assert SynthConfig(image_size=(144, 81), supersample_width=1).render_scale() == 1


def test_defaults_give_sequences_long_enough_for_approach_yield_and_restart():
    assert SynthConfig().duration_s >= 10.0 and SynthConfig().image_size == (1920, 1080)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        SynthConfig(layout="kitti")
    with pytest.raises(ValueError):
        SynthConfig(scenarios=("drifting",))
    with pytest.raises(ValueError):
        SynthConfig(jpeg_quality=0)
    with pytest.raises(ValueError):
        SynthConfig(conflict_share=1.5)
    with pytest.raises(ValueError):
        SynthConfig(supersample_width=0)
    with pytest.raises(ValueError):
        SynthConfig.from_dict({"num_sequences": 2, "colour": "red"})
    assert SynthConfig.from_dict({"image_size": [64, 36]}).image_size == (64, 36)


def test_shipped_world_configs_load_and_training_worlds_are_long_enough():
    from pathlib import Path

    from v2x_vlm_ros.config import load_section

    config_dir = Path(__file__).resolve().parents[1] / "config"
    worlds = {p.stem: load_section(SynthConfig, p, "synth") for p in config_dir.glob("synth_*.yaml")}
    assert set(worlds) == {"synth_sample", "synth_train", "synth_train_hazard", "synth_train_hazard_early",
                           "synth_test"}
    for name in ("synth_train", "synth_train_hazard", "synth_train_hazard_early", "synth_test"):
        assert worlds[name].duration_s >= 10.0, name
    assert worlds["synth_test"].image_size == (1920, 1080)  # the defaults: what a user generates
    assert worlds["synth_test"].seed not in {w.seed for k, w in worlds.items() if k != "synth_test"}
    # the hazard-rich world: the paired scenarios 3x and 2x per cycle, every scenario present
    hazard = worlds["synth_train_hazard"]
    cycle = [name for name, _ in hazard.cycle]
    assert len(cycle) == 15 and cycle.count("occluded_crossing") == 6 and cycle.count("hidden_queue") == 4
    assert set(cycle) == set(SCENARIOS) and hazard.num_sequences % len(cycle) == 0
    # its early-crosser variant: the same world and draws, the harmless agents crossing early
    early = worlds["synth_train_hazard_early"]
    assert early.cycle == hazard.cycle and early.seed == hazard.seed and early.image_size == hazard.image_size
    assert hazard.early_cross_share == 0.0 < early.early_cross_share
    assert worlds["synth_test"].early_cross_share == 0.0  # the acceptance world: as before
