"""How training draws its samples: paired scenes, hidden-hazard frames and scenarios weighted
up, the turn commands balanced, and command twins (a turn frame taught as the other turn),
checked against the sample's own sidecar files."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.training.config import TrainConfig

from training_support import SAMPLE, random_image, tiny_builder


def test_paired_scenes_are_drawn_more_often_with_pair_weight():
    from v2x_vlm_ros.training.data import EpochSampler, pair_weights

    ds = DairV2XDataset(SAMPLE)
    assert pair_weights(ds, 1.0) is None
    weights = pair_weights(ds, 4.0)
    seqs = [ds[i].sequence_id for i in range(len(ds))]
    paired = {"0000", "0001", "0006", "0007"}  # the sample's two pairs (sidecar: variant)
    assert [w == 4.0 for w in weights] == [s in paired for s in seqs]
    plain = EpochSampler(len(ds), 0, 0.25)
    heavy = EpochSampler(len(ds), 0, 0.25, weights=weights)
    share = {name: np.mean([seqs[i] in paired for i in s.indices()]) for name, s in
             (("plain", plain), ("heavy", heavy))}
    assert share["plain"] < 0.6 < share["heavy"]  # 4 of 9 sequences: ~44 % uniformly, ~76 % weighted
    picked = heavy.indices()
    assert len(picked) == len(set(picked)) == plain.count  # without replacement, same count
    heavy.set_epoch(1)
    assert heavy.indices() != picked and EpochSampler(len(ds), 0, 0.25, weights=weights).indices() == picked
    with pytest.raises(ValueError):
        EpochSampler(3, 0, weights=[1.0, 0.0, 1.0])


def test_hidden_hazard_frames_and_their_twins_get_hazard_weight():
    """Read straight from the sample's sidecar: a frame where a conflict agent is in the
    roadside list and not the ego list gets ``hazard_weight``, and so does the frame at the
    same position of its twin; other frames of paired sequences get ``pair_weight``."""
    from v2x_vlm_ros.training.data import pair_weights

    ds = DairV2XDataset(SAMPLE)
    sidecar = json.loads((Path(SAMPLE) / "visibility.json").read_text())["sequences"]
    hidden = {}
    for seq, entry in sidecar.items():
        frames = sorted(entry["frames"])
        for pos, frame in enumerate(frames):
            seen = entry["frames"][frame]
            if set(entry["conflict"]) & (set(seen["roadside"]) - set(seen["ego"])):
                hidden[(seq, frame)] = (entry["pair"], pos)
    assert hidden  # the sample has hidden-hazard frames
    twins = {(twin, sorted(sidecar[twin]["frames"])[pos]) for twin, pos in hidden.values()}
    assert not twins & set(hidden)
    keys = [(ds[i].sequence_id, ds[i].vehicle_frame) for i in range(len(ds))]
    weights = pair_weights(ds, 2.0, hazard_weight=8.0)
    paired = {"0000", "0001", "0006", "0007"}
    for key, w in zip(keys, weights):
        want = 8.0 if key in hidden or key in twins else 2.0 if key[0] in paired else 1.0
        assert w == want, key
    assert sum(w == 8.0 for w in weights) == len(hidden) + len(twins)
    assert pair_weights(ds, 1.0, hazard_weight=1.0) is None
    with pytest.raises(ValueError, match="hazard_weight must be > 0, got 0"):
        TrainConfig(hazard_weight=0)


def test_scenario_weights_multiply_the_frames_of_their_scenarios():
    """Factors read against the sample's scenarios.json (written out here, not looked up
    through the code under test): on top of pair and hazard weights."""
    from v2x_vlm_ros.training.data import EpochSampler, pair_weights

    ds = DairV2XDataset(SAMPLE)
    scenario = {"0000": "occluded_crossing", "0001": "occluded_crossing", "0002": "left_turn",
                "0003": "right_turn", "0004": "follow_lead", "0005": "straight",
                "0006": "hidden_queue", "0007": "hidden_queue", "0008": "stop_sign"}
    base = pair_weights(ds, 2.0, hazard_weight=8.0)
    scaled = pair_weights(ds, 2.0, hazard_weight=8.0,
                          scenario_weights={"follow_lead": 3.0, "occluded_crossing": 0.5})
    seqs = [ds[i].sequence_id for i in range(len(ds))]
    factor = {"follow_lead": 3.0, "occluded_crossing": 0.5}
    assert scaled == [b * factor.get(scenario[s], 1.0) for b, s in zip(base, seqs)]
    assert {w for w, s in zip(scaled, seqs) if s == "0004"} == {3.0}
    assert {w for w, s in zip(scaled, seqs) if s == "0000"} <= {1.0, 4.0}  # 2 x 0.5, 8 x 0.5
    # alone (pair and hazard weights 1), scenario weights still give weights
    only = pair_weights(ds, 1.0, scenario_weights={"straight": 4.0})
    assert only == [4.0 if scenario[s] == "straight" else 1.0 for s in seqs]
    share = np.mean([seqs[i] == "0005" for i in EpochSampler(len(ds), 0, 0.25, weights=only).indices()])
    assert share > 0.2  # one sequence in nine (11 %) uniformly, about a third weighted
    with pytest.raises(ValueError) as err:
        TrainConfig(scenario_weights={"follow_lead": 2, "folow_lead": 2})
    assert str(err.value).startswith("scenario_weights: unknown scenario(s) ['folow_lead']; known: [")
    with pytest.raises(ValueError, match=r"scenario_weights: straight must be a number > 0, got 0"):
        TrainConfig(scenario_weights={"straight": 0})


def test_balance_turn_weights_scales_the_rarer_turn_command_up():
    from v2x_vlm_ros.data.records import Command
    from v2x_vlm_ros.training.data import balance_turn_weights

    F, L, R = Command.FORWARD, Command.LEFT, Command.RIGHT
    # LEFT weighs 1 + 1 = 2, RIGHT 2 + 2 + 1 = 5: LEFT frames x 2.5, the others as they were
    assert balance_turn_weights([F, L, R, R, L, R], [1, 1, 2, 2, 1, 1]) == [1, 2.5, 2, 2, 2.5, 1]
    # RIGHT the rarer: 1 against 3
    assert balance_turn_weights([L, R, F], [3, 1, 7]) == [3, 3, 7]
    assert balance_turn_weights([F, R, R], [1, 1, 1]) is None  # no LEFT frame to balance against
    with pytest.raises(ValueError, match="3 commands for 2 weights"):
        balance_turn_weights([F, L, R], [1, 1])


def test_balance_turns_in_pair_weights(tmp_path):
    """Through ``pair_weights``: alone on a dataset without a sidecar (real data) it weighs
    from the index's commands; on the sample, whose only turns are to the right (its 6 s
    left-turn sequence ends before the turn), it changes nothing."""
    from types import SimpleNamespace

    from v2x_vlm_ros.data.records import Command
    from v2x_vlm_ros.training.data import pair_weights

    F, L, R = Command.FORWARD, Command.LEFT, Command.RIGHT
    real = SimpleNamespace(root=tmp_path, scenarios={},
                           _index=[SimpleNamespace(command=c) for c in (F, R, R, R, L, F)])
    assert pair_weights(real, 1.0) is None
    assert pair_weights(real, 1.0, balance_turns=True) == [1, 1, 1, 1, 3, 1]
    ds = DairV2XDataset(SAMPLE)
    commands = [ds[i].command for i in range(len(ds))]
    assert L not in commands and R in commands
    base = pair_weights(ds, 2.0, hazard_weight=8.0)
    assert pair_weights(ds, 2.0, hazard_weight=8.0, balance_turns=True) == base
    with pytest.raises(ValueError) as err:
        TrainConfig(balance_turns="yes")
    assert str(err.value) == "balance_turns must be true or false, got 'yes'"


def test_command_twin_swaps_the_turn_and_mirrors_the_ground_truth():
    from v2x_vlm_ros.data.records import Command
    from v2x_vlm_ros.training.data import command_twin

    xy = np.array([[4.0, 0.5], [8.0, 2.0], [11.0, 6.0]])
    command, mirrored = command_twin(Command.LEFT, xy)
    assert command == Command.RIGHT
    assert mirrored.tolist() == [[4.0, -0.5], [8.0, -2.0], [11.0, -6.0]]
    assert xy[2, 1] == 6.0  # the input is left alone
    assert command_twin(Command.RIGHT, xy)[0] == Command.LEFT
    with pytest.raises(ValueError) as err:
        command_twin(Command.FORWARD, xy)
    assert str(err.value) == "a command twin needs a LEFT or RIGHT frame, got FORWARD"


def test_command_twins_on_the_sample():
    """Which frames may be twinned, read here from the sample's own files: a turn (last valid
    waypoint 2 m or more to a side), the ego not turning yet, a sequence whose sidecar
    ``conflict`` list is empty (0006's right turn into a hidden queue is left out, its twin
    0007 kept); and what a twinned example holds."""
    from v2x_vlm_ros.data.records import Command
    from v2x_vlm_ros.training.data import COMMAND_TWIN_MAX_YAW_RATE, PlanningExamples, command_twin_frames

    ds = DairV2XDataset(SAMPLE)
    sidecar = json.loads((Path(SAMPLE) / "visibility.json").read_text())["sequences"]
    want = []
    for i in range(len(ds)):
        s = ds[i]
        valid = np.flatnonzero(s.future_mask)
        turn = valid.size > 0 and abs(float(s.future_xy[valid[-1], 1])) >= 2.0
        want.append(turn and abs(s.motion.yaw_rate_rps) <= COMMAND_TWIN_MAX_YAW_RATE
                    and not sidecar[s.sequence_id]["conflict"])
    ok = command_twin_frames(ds)
    assert ok == want
    seqs = {ds[i].sequence_id for i in range(len(ds)) if ok[i]}
    assert seqs and "0006" not in seqs and seqs <= {"0003", "0007"}
    every = PlanningExamples(ds, command_twins=1.0, command_twin_ok=ok)
    for i in range(len(ds)):
        e, s = every[i], ds[i]
        if ok[i]:
            assert e["command"] == Command.LEFT and s.command == Command.RIGHT and e["command_twin"]
            assert np.array_equal(e["future_xy"], s.future_xy * [1.0, -1.0])
        else:
            assert e["command"] == s.command and np.array_equal(e["future_xy"], s.future_xy)
            assert not e["command_twin"]
    assert every.twinned == sum(ok)
    half = [PlanningExamples(ds, command_twins=0.5, command_twin_ok=ok, seed=3) for _ in range(2)]
    drawn = [[half[k][i]["command"] != ds[i].command for i in range(len(ds))] for k in range(2)]
    assert drawn[0] == drawn[1]  # a pure function of (seed, epoch, index)
    assert 0.25 < sum(drawn[0]) / sum(ok) < 0.75
    with pytest.raises(ValueError, match="command_twins needs command_twin_ok, one flag per sample"):
        PlanningExamples(ds, command_twins=0.5)
    with pytest.raises(ValueError) as err:
        TrainConfig(command_twins=1.5)
    assert str(err.value) == "command_twins must be in [0, 1], got 1.5"


def test_scenario_weights_need_a_worlds_scenarios(tmp_path):
    import shutil

    from v2x_vlm_ros.training.data import pair_weights

    root = tmp_path / "sample"
    shutil.copytree(SAMPLE, root)
    (root / "scenarios.json").unlink()
    ds = DairV2XDataset(root)
    with pytest.raises(ValueError) as err:
        pair_weights(ds, 1.0, scenario_weights={"straight": 2.0})
    assert str(err.value) == (f"scenario_weights need {root}/scenarios.json (a synthetic world's sidecar); "
                              "this dataset has none")
    assert pair_weights(ds, 1.0) is None


def test_scenario_weights_reach_a_run_from_a_yaml_override_and_its_card(tmp_path, tiny_model_dir, capsys):
    from v2x_vlm_ros.cli import main

    config = tmp_path / "train.yaml"
    config.write_text(f"train:\n  data_root: {SAMPLE}\n  student: tiny\n  teacher: null\n"
                      f"  tokenizer_from: {tiny_model_dir}\n  val_split: null\n  epochs: 1\n"
                      f"  max_steps: 1\n  batch_size: 4\n  output_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(config), "--override", "scenario_weights={follow_lead: 3, straight: 0.5}",
                 "--quiet"]) == 0
    capsys.readouterr()
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "scenario weights {'follow_lead': 3.0, 'straight': 0.5}" in card
    assert main(["train", str(config), "--override", "scenario_weights={stop: 3}", "--check"]) == 2
    assert "scenario_weights: unknown scenario(s) ['stop']" in capsys.readouterr().err


def test_a_command_twin_is_not_distilled(tiny_model_dir):
    """Its labels are kept (the mirrored turn) and its distillation positions dropped; the
    other example of the batch keeps both."""
    from v2x_vlm_ros.data.records import Command, EgoMotion
    from v2x_vlm_ros.training.losses import IGNORE_INDEX

    _, builder = tiny_builder(tiny_model_dir)
    t = 0.5 * np.arange(1, 11)
    turn = np.column_stack([6.0 * t, -0.4 * t ** 2])
    examples = [{"ego": random_image(), "roadside": random_image(), "description": "a car",
                 "command": Command.LEFT, "motion": EgoMotion(6.0, 0.0, 0.0, 0.5),
                 "future_xy": turn * [1.0, sign], "future_mask": np.ones(10, bool), "command_twin": twin}
                for sign, twin in ((-1.0, True), (1.0, False))]
    batch = builder(examples)
    assert not batch["traj_mask"][0].any()
    assert int(batch["traj_mask"][1].sum()) == 20  # 10 waypoints, x and y
    assert bool((batch["labels"][0, 1:-1] != IGNORE_INDEX).all())
    assert not torch.equal(batch["labels"][0], batch["labels"][1])  # the turn the other way


def test_harmless_hidden_agent_frames_get_harmless_weight(tmp_path):
    """The hazards' negatives: the sample with its crossing agent (sequence 0000) turned into
    one the ego does not yield to (its sidecar's conflict list emptied, as a waiting or early
    crosser's is written): the frames where the roadside camera sees that agent get
    ``harmless_weight``, whether the ego camera sees it or not; the other frames keep their
    weights, and with ``harmless_weight`` 1 nothing changes."""
    import shutil

    from v2x_vlm_ros.training.data import pair_weights

    root = tmp_path / "sample"
    shutil.copytree(SAMPLE, root)
    path = root / "visibility.json"
    sidecar = json.loads(path.read_text())
    entry = sidecar["sequences"]["0000"]
    (agent,) = entry["conflict"]
    assert entry["hidden"] == [agent]
    entry["conflict"] = []
    path.write_text(json.dumps(sidecar))
    roadside = {frame for frame, seen in entry["frames"].items() if agent in seen["roadside"]}
    both = {frame for frame in roadside if agent in entry["frames"][frame]["ego"]}
    assert roadside and both and roadside - both  # seen by both and by the roadside alone
    ds = DairV2XDataset(root)
    keys = [(ds[i].sequence_id, ds[i].vehicle_frame) for i in range(len(ds))]
    base = pair_weights(ds, 2.0, hazard_weight=8.0)
    weights = pair_weights(ds, 2.0, hazard_weight=8.0, harmless_weight=5.0)
    for key, b, w in zip(keys, base, weights):
        assert w == (5.0 if key[0] == "0000" and key[1] in roadside else b), key
    assert sum(w == 5.0 for w in weights) == len(roadside)
    # the twin of 0000 lost its hazard frames with the conflict: pair weight there
    assert {w for (seq, _), w in zip(keys, weights) if seq == "0001"} == {2.0}
    # the untouched hidden queue pair keeps its hazard frames
    assert {w for (seq, _), w in zip(keys, weights) if seq == "0006"} == {2.0, 8.0}
    assert pair_weights(ds, 2.0, hazard_weight=8.0, harmless_weight=1.0) == base
    with pytest.raises(ValueError, match="harmless_weight must be > 0, got -1"):
        TrainConfig(harmless_weight=-1)
